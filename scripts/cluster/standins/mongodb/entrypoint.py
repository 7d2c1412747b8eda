"""The mongo image's first-start contract on SecantusDB.

With MONGO_INITDB_ROOT_USERNAME and MONGO_INITDB_ROOT_PASSWORD set, the first
start creates that user (role root in `admin`) on a loopback-only server,
then every start serves with authentication required, as mongod does.
Data lives in /data/db.
"""
import os
import pathlib
import socket
import subprocess
import sys
import time

import pymongo

DATA = pathlib.Path("/data/db")
SERVER = "/opt/secantus/bin/secantusd-py"
MARKER = DATA / ".root-user-created"


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the setup server did not open port {port} within {seconds:.0f}s")


def create_root_user(user: str, password: str) -> None:
    port = 27018
    setup = subprocess.Popen(
        [SERVER, "--standalone", "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(DATA)]
    )
    try:
        wait_for_port(port, 60)
        client = pymongo.MongoClient("127.0.0.1", port, directConnection=True)
        client.admin.command("createUser", user, pwd=password, roles=[{"role": "root", "db": "admin"}])
        client.close()
        MARKER.touch()
        print(f"created the root user {user}", flush=True)
    finally:
        setup.terminate()
        setup.wait(timeout=30)


def memory_limit() -> int | None:
    """The container's memory limit in bytes (cgroup v2 or v1), if any."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = pathlib.Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**50:
            return int(text)
    return None


def cache_size() -> str:
    """WiredTiger's cache sized as mongod sizes it: half of (memory - 1 GiB),
    at least 256 MiB, from the container's limit (SecantusDB's own default
    of 1 GiB fills a 1 GiB pod and gets it OOM-killed)."""
    limit = memory_limit()
    if limit is None:
        return "1G"
    return f"{max(256, (limit - 2**30) // 2 // 2**20)}M"


def main() -> None:
    user = os.environ.get("MONGO_INITDB_ROOT_USERNAME")
    password = os.environ.get("MONGO_INITDB_ROOT_PASSWORD")
    if bool(user) != bool(password):
        sys.exit("set both MONGO_INITDB_ROOT_USERNAME and MONGO_INITDB_ROOT_PASSWORD, or neither")
    if user and not MARKER.exists():
        create_root_user(user, password)
    # A plain mongod (no replica set), as the official image starts it, and
    # as durable: a commit is on disk before it is acknowledged, so a killed
    # pod loses nothing it confirmed (mongod's journal does the same within
    # 100 ms; SecantusDB without the flag lost seconds of writes).
    args = [
        SERVER, "--standalone", "--host", "0.0.0.0", "--port", "27017", "--storage-path", str(DATA),
        "--cache-size", cache_size(), "--sync-on-commit",
    ]
    if user:
        args.append("--auth")
    os.execv(SERVER, args + sys.argv[1:])


if __name__ == "__main__":
    main()
