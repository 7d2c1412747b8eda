"""The live-events benchmark behind scripts/bench-events (see there).

usage: bench_events.py STREAMS JOBS
env:   BENCH_BIN (release binaries), BENCH_MONGO_PID, AMQP_URL, MONGODB_URI

Starts auth (SQLite, Ed25519), the gateway and one converter on free ports
with queues and databases of their own, registers two users, then runs JOBS
1-second conversions with no event stream open and again with STREAMS of
the first user's streams open, reading the CPU time (user + system) the
gateway and MongoDB used from /proc around each run.
"""
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pymongo

STREAMS, JOBS = int(sys.argv[1]), int(sys.argv[2])
BIN = Path(os.environ["BENCH_BIN"])
MONGO_PID = os.environ.get("BENCH_MONGO_PID") or None
WORK = Path(tempfile.mkdtemp(prefix="mp3c-bench-events-"))
PREFIX = "be" + uuid.uuid4().hex[:10]
PROCS = []
TICK = os.sysconf("SC_CLK_TCK")


def log(text):
    print(f"[bench-events] {text}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"port {port} never opened (logs in {WORK})")


def spawn(name, args, env):
    out = open(WORK / f"{name}.log", "wb")
    proc = subprocess.Popen([str(a) for a in args], env={**os.environ, **env}, stdout=out,
                            stderr=subprocess.STDOUT)
    PROCS.append(proc)
    return proc


def cpu_seconds(pid):
    """User + system CPU time of a process, in seconds."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def call(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def start():
    auth_port, gateway_port = free_port(), free_port()
    key = WORK / "jwt.pem"
    with open(key, "wb") as pem:
        subprocess.run([BIN / "auth-service", "key", "generate"], check=True, stdout=pem,
                       env={**os.environ, "DATABASE_URL": f"sqlite://{WORK}/auth.db?mode=rwc"})
    spawn("auth", [BIN / "auth-service"], {
        "LISTEN_ADDR": f"127.0.0.1:{auth_port}",
        "DATABASE_URL": f"sqlite://{WORK}/auth.db?mode=rwc",
        "JWT_PRIVATE_KEY_FILE": str(key),
        "RUST_LOG": "warn",
    })
    wait_port(auth_port)
    shared = {
        "VIDEO_QUEUE": f"{PREFIX}.video", "MP3_QUEUE": f"{PREFIX}.mp3",
        "EVENTS_EXCHANGE": f"{PREFIX}.events",
        "VIDEOS_DB": f"{PREFIX}_videos", "MP3S_DB": f"{PREFIX}_mp3s",
        "RUST_LOG": "warn",
    }
    gateway = spawn("gateway", [BIN / "gateway"], {
        **shared, "LISTEN_ADDR": f"127.0.0.1:{gateway_port}",
        "OPS_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
        "AUTH_URL": f"http://127.0.0.1:{auth_port}",
        # One account's thousand streams, as the finding opened them.
        "MAX_STREAMS_PER_USER": str(STREAMS),
        "QUOTA_JOBS_PER_HOUR": str(10 * JOBS + 10),
    })
    spawn("converter", [BIN / "converter"], {**shared, "LISTEN_ADDR": f"127.0.0.1:{free_port()}",
                                             "CONVERTER_CONCURRENCY": "1"})
    wait_port(gateway_port)
    return f"http://127.0.0.1:{gateway_port}", gateway.pid


def user(server, name):
    email, password = f"{PREFIX}-{name}@example.com", "bench-events-password"
    status, body = call("POST", f"{server}/api/v1/register", {"email": email, "password": password})
    assert status == 201, (status, body)
    status, body = call("POST", f"{server}/api/v1/login", {"email": email, "password": password})
    assert status == 200, (status, body)
    return body["token"]


def upload(server, token, video):
    out = subprocess.run(
        ["curl", "-sS", "-H", f"Authorization: Bearer {token}", "-F", f"file=@{video};filename=clip.mp4",
         "-w", "\n%{http_code}", f"{server}/api/v1/jobs"], capture_output=True, text=True, check=True)
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "202", (status, body)
    return json.loads(body)["job"]["id"]


def wait_done(server, token, job):
    deadline = time.time() + 120
    while time.time() < deadline:
        status, body = call("GET", f"{server}/api/v1/jobs/{job}", token=token)
        if status == 200 and body["job"]["state"] in ("done", "failed"):
            assert body["job"]["state"] == "done", body
            return
        time.sleep(0.1)
    raise SystemExit(f"job {job} did not finish (logs in {WORK})")


class Streams:
    """STREAMS event streams of one token, read on an asyncio loop of their
    own; each remembers which jobs it saw done."""

    def __init__(self, server, token, count):
        self.host, self.port = server.removeprefix("http://").split(":")
        self.token, self.count = token, count
        self.done = [set() for _ in range(count)]
        self.opened = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),),
                                       daemon=True)
        self.thread.start()
        if not self.ready.wait(120):
            raise SystemExit(f"only {self.opened} of {count} streams opened")

    async def main(self):
        self.stop = asyncio.Event()
        tasks = [asyncio.create_task(self.one(i)) for i in range(self.count)]
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def one(self, index):
        reader, writer = await asyncio.open_connection(self.host, int(self.port), limit=1 << 20)
        # HTTP/1.0: the body is the rest of the connection, no chunk framing.
        writer.write((f"GET /api/v1/events HTTP/1.0\r\nHost: {self.host}\r\n"
                      f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise SystemExit(f"stream {index}: {status!r}")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        self.opened += 1
        if self.opened == self.count:
            self.ready.set()
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                job = json.loads(line[6:])["job"]
                if job["state"] == "done":
                    self.done[index].add(job["id"])

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


def run_jobs(server, token, video, gateway_pid, other):
    """JOBS conversions one after another; CPU seconds of the gateway and
    MongoDB per job, another user's list latencies, and the job ids."""
    before = cpu_seconds(gateway_pid), cpu_seconds(MONGO_PID)
    jobs, latencies = [], []
    for _ in range(JOBS):
        job = upload(server, token, video())
        started = time.perf_counter()
        assert call("GET", f"{server}/api/v1/jobs", token=other)[0] == 200
        latencies.append(time.perf_counter() - started)
        wait_done(server, token, job)
        jobs.append(job)
    time.sleep(1)  # the last events reach every stream
    after = cpu_seconds(gateway_pid), cpu_seconds(MONGO_PID)
    return (after[0] - before[0]) / JOBS, (after[1] - before[1]) / JOBS, latencies, jobs


def main():
    server, gateway_pid = start()
    log(f"gateway on {server}; MongoDB pid {MONGO_PID or 'unknown (not counted)'}")
    # One video per job: the same content again is answered with its
    # earlier job (deduplication), which would convert nothing.
    tones = iter(range(300, 300 + 20 * (2 * JOBS + 1), 20))

    def video():
        tone = next(tones)
        path = WORK / f"clip-{tone}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1",
                        "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=44100:duration=1", "-c:v", "mpeg4",
                        "-c:a", "aac", "-shortest", str(path)], check=True)
        return path
    token, other = user(server, "streams"), user(server, "other")
    # Warm: the first job pays for connections and caches in both runs' place.
    wait_done(server, token, upload(server, token, video()))

    log(f"{JOBS} jobs with no stream open")
    gw0, db0, lat0, _ = run_jobs(server, token, video, gateway_pid, other)
    log(f"opening {STREAMS} streams")
    streams = Streams(server, token, STREAMS)
    time.sleep(3)
    idle_from = cpu_seconds(gateway_pid) + cpu_seconds(MONGO_PID)
    time.sleep(16)  # one keep-alive round at the default 15 s
    idle = cpu_seconds(gateway_pid) + cpu_seconds(MONGO_PID) - idle_from
    log(f"{JOBS} jobs with {STREAMS} streams open")
    gw1, db1, lat1, jobs = run_jobs(server, token, video, gateway_pid, other)
    missed = sum(1 for seen in streams.done if not set(jobs) <= seen)
    streams.close()
    if missed:
        raise SystemExit(f"{missed} of {STREAMS} streams missed a finished job")

    base, loaded = gw0 + db0, gw1 + db1
    print(f"jobs: {JOBS} per run, 1-second videos, one converter")
    print(f"no streams:        gateway {gw0 * 1000:7.1f} ms  MongoDB {db0 * 1000:7.1f} ms  "
          f"= {base * 1000:7.1f} ms CPU per job")
    print(f"{STREAMS:>5} streams:     gateway {gw1 * 1000:7.1f} ms  MongoDB {db1 * 1000:7.1f} ms  "
          f"= {loaded * 1000:7.1f} ms CPU per job")
    print(f"ratio: {loaded / base:.2f}x (goal: at most 2x); every stream saw all {JOBS} jobs finish")
    print(f"idle, {STREAMS} streams open: {idle * 1000:.0f} ms CPU over 16 s (keep-alives)")
    print(f"another user's GET /api/v1/jobs: median {statistics.median(lat0) * 1000:.1f} ms without, "
          f"{statistics.median(lat1) * 1000:.1f} ms with the streams")


def cleanup():
    for proc in reversed(PROCS):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in PROCS:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    try:
        client = pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000)
        for name in (f"{PREFIX}_videos", f"{PREFIX}_mp3s"):
            client.drop_database(name)
    except Exception as err:  # noqa: BLE001 (best effort, said)
        log(f"could not drop the databases: {err}")
    for queue in ("video", "video.dlq", "mp3", "mp3.dlq"):
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", f"{PREFIX}.{queue}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
