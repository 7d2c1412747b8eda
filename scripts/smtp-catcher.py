"""Local SMTP catcher: accepts every message and keeps it as an .eml file.

usage: smtp-catcher.py HOST PORT MAILDIR [--api API_PORT]
Open the files with any mail client, or read them as text. With --api it
also serves, on HOST:API_PORT, the part of Mailpit's HTTP API that scripts
and tests read, so they work the same against Mailpit on a cluster:
  GET /livez, GET /readyz                 200 while running
  GET /api/v1/messages?start=S&limit=L   {"total", "count", "start", "messages":
                                           [{"ID", "From", "To", "Subject",
                                           "Created", "Size"}]}, newest first,
                                           L (default 50, as Mailpit's) from S
  GET /api/v1/message/<ID>/raw            the message as sent
  DELETE /api/v1/messages                 removes every message
and, for scripts/chaos (no Mailpit has it):
  POST /api/v1/faults {"drop_after_data": N}
                                          keeps each of the next N messages,
                                          then hangs up instead of its "250":
                                          the sender cannot know it went
"""
import asyncio
import datetime
import email
import email.policy
import json
import urllib.parse
import pathlib
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


class KeepAsEml:
    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.count = 0
        # Faults asked for through the API (scripts/chaos).
        self.drop_after_data = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self.folder / f"{stamp}-{self.count:04d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        print(f"{path.name}: {envelope.mail_from} -> {', '.join(envelope.rcpt_tos)}", flush=True)
        with self.lock:
            drop = self.drop_after_data > 0
            self.drop_after_data -= drop
        if drop:
            print(f"{path.name}: kept, and hanging up before confirming it (fault)", flush=True)
            server.transport.abort()
            await asyncio.sleep(3600)  # cancelled with the lost connection
        return "250 Message accepted"


def addresses(header) -> list:
    return [{"Name": a.display_name, "Address": a.addr_spec} for a in getattr(header, "addresses", ())]


def summary(path: pathlib.Path) -> dict:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    sender = addresses(message["From"])
    return {
        "ID": path.stem,
        "From": sender[0] if sender else {"Name": "", "Address": ""},
        "To": addresses(message["To"]),
        "Subject": str(message["Subject"] or ""),
        "Created": datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).isoformat(),
        "Size": path.stat().st_size,
    }


def api_handler(folder: pathlib.Path, handler: KeepAsEml):
    class Api(BaseHTTPRequestHandler):
        def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (the http.server name)
            path, _, query = self.path.partition("?")
            if path in ("/livez", "/readyz"):
                return self.send(200, b"ok", "text/plain")
            if path == "/api/v1/messages":
                files = sorted(folder.glob("*.eml"), reverse=True)
                params = urllib.parse.parse_qs(query)
                try:
                    start = max(0, int(params.get("start", ["0"])[0]))
                    limit = max(1, int(params.get("limit", ["50"])[0]))
                except ValueError:
                    return self.send(400, b'{"error": "start and limit are numbers"}')
                page = [summary(f) for f in files[start:start + limit]]
                body = {"total": len(files), "count": len(page), "start": start, "messages": page}
                return self.send(200, json.dumps(body).encode())
            parts = path.strip("/").split("/")
            if len(parts) == 5 and parts[:3] == ["api", "v1", "message"] and parts[4] == "raw":
                file = folder / f"{parts[3]}.eml"
                if "/" not in parts[3] and file.is_file():
                    return self.send(200, file.read_bytes(), "message/rfc822")
            return self.send(404, b'{"error": "not found"}')

        def do_POST(self):  # noqa: N802
            if self.path.split("?", 1)[0] != "/api/v1/faults":
                return self.send(404, b'{"error": "not found"}')
            length = int(self.headers.get("Content-Length") or 0)
            try:
                faults = json.loads(self.rfile.read(length) or b"{}")
                drop = int(faults.get("drop_after_data", 0))
            except (ValueError, TypeError, AttributeError):
                return self.send(400, b'{"error": "expected {\\"drop_after_data\\": N}"}')
            with handler.lock:
                handler.drop_after_data = max(0, drop)
            return self.send(200, json.dumps({"drop_after_data": drop}).encode())

        def do_DELETE(self):  # noqa: N802
            if self.path.split("?", 1)[0] != "/api/v1/messages":
                return self.send(404, b'{"error": "not found"}')
            for file in folder.glob("*.eml"):
                file.unlink(missing_ok=True)
            return self.send(200, b"ok", "text/plain")

        def log_message(self, *args):
            pass

    return Api


def main() -> None:
    args = sys.argv[1:]
    api_port = None
    if len(args) == 5 and args[3] == "--api":
        api_port = int(args[4])
        args = args[:3]
    if len(args) != 3:
        sys.exit(__doc__)
    host, port, folder = args[0], int(args[1]), pathlib.Path(args[2])
    folder.mkdir(parents=True, exist_ok=True)
    handler = KeepAsEml(folder)
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    print(f"SMTP catcher on {host}:{port}, mail in {folder}", flush=True)
    if api_port is not None:
        server = ThreadingHTTPServer((host, api_port), api_handler(folder, handler))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"Mailpit-style API on {host}:{api_port}", flush=True)
    # SIGTERM (a container's stop, scripts/down) ends it cleanly; as a
    # container's PID 1 it would otherwise be ignored.
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
