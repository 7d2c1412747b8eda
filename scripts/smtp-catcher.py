"""Local SMTP catcher: accepts every message and keeps it as an .eml file.

usage: smtp-catcher.py HOST PORT MAILDIR
Open the files with any mail client, or read them as text.
"""
import asyncio
import datetime
import pathlib
import sys

from aiosmtpd.controller import Controller


class KeepAsEml:
    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self.folder / f"{stamp}-{self.count:04d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        print(f"{path.name}: {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)}", flush=True)
        return "250 Message accepted"


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    host, port, folder = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(KeepAsEml(folder), hostname=host, port=port)
    controller.start()
    print(f"SMTP catcher on {host}:{port}, mail in {folder}", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
