"""Fault scenarios against the containerised system (scripts/cluster-up
--overlay chaos: gateway 2, auth 2, converter 3, notification 2), each ended
by the audit and one summary line:

  scenario=<name> jobs=N done=N failed=F lost=0 dup=0 mails=M orphans=0

usage: chaos.py MEDIA_DIR [--long] [--soak N] [SCENARIO[=RUNS] ...]
scenarios: converter-kills broker-restart database-restart mail-outage
           partition gateway-loss load hostile notification-kill smtp-drop
           claim-database-restart converter-pause (default: all)
--long: ten times the jobs and longer outages.
--soak N: runs each chosen scenario N times (SCENARIO=RUNS sets its own
count; when every argument is of that form, all the scenarios run, N times
unless named: `--soak 5 broker-restart=20` is one soak of everything),
going on after a failure, and ends with a table per scenario:
runs, failures, the worst lost/dup/orphans, and the first failure's reason.
Without --soak it exits non-zero on the first scenario that loses,
duplicates or orphans anything, or leaves a container restarted that
should not be.
"""
import concurrent.futures
import itertools
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import audit
import client as c
import hostile_accounts
from client import GW, podman, pod_ip, pods, step

c.PREFIX = "chaos"
LONG = "--long" in sys.argv
SCALE = 10 if LONG else 1
USERS = [f"chaos{n}@example.com" for n in range(5)]
PASSWORD = "chaos-password"


# --- The world between scenarios -------------------------------------------------


def rabbitmqctl(*args: str) -> str:
    return podman("exec", "rabbitmq-0", "rabbitmqctl", "-q", *args)


def reset() -> None:
    """No jobs, files, messages or mails: each scenario is audited alone."""
    mongo = c.mongo()
    for db in ("videos", "mp3s"):
        mongo.drop_database(db)
    mongo.close()
    for line in rabbitmqctl("list_queues", "name").splitlines():
        name = line.strip()
        if name and name != "name" and not name.startswith("amq.gen-"):
            rabbitmqctl("purge_queue", name)
    request = urllib.request.Request(f"http://{pod_ip('mailpit-0')}:8025/api/v1/messages", method="DELETE")
    urllib.request.urlopen(request, timeout=10).read()


def ensure_users() -> dict[str, str]:
    tokens = {}
    for email in USERS:
        subprocess.run(
            ["podman", "exec", "-i", "auth-0", "auth-service", "user", "add", email],
            input=f"{PASSWORD}\n", capture_output=True, text=True,
        )
        tokens[email] = c.curl("-X", "POST", "-u", f"{email}:{PASSWORD}", f"{GW}/login")
    return tokens


def restarts() -> dict[str, int]:
    names = podman("ps", "-a", "--filter", "label=io.mp3converter.cluster", "--format", "{{.Names}}").split()
    return {n: int(podman("inspect", "--format", "{{.RestartCount}}", n)) for n in names}


def kill(pod: str) -> None:
    """SIGKILL to the container's process, as the kernel's OOM killer or a
    crash would: the runtime restarts it."""
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", pod))
    if pid:
        os.kill(pid, signal.SIGKILL)


def wait_ready(pod: str, port: int, path: str = "/readyz", seconds: float = 120) -> None:
    def ready():
        try:
            with urllib.request.urlopen(f"http://{pod_ip(pod)}:{port}{path}", timeout=3) as response:
                return response.status == 200
        except OSError:
            return False

    c.wait_for(f"{pod} ready", ready, seconds)


# --- Uploads -----------------------------------------------------------------------


class Uploads:
    """Uploads and what came back: accepted jobs (success! and a job id)
    and refusals by status."""

    def __init__(self, media: pathlib.Path, tokens: dict[str, str]):
        self.sample = (media / "puremagic__test.mp4").read_bytes()
        self.tokens = tokens
        self.accepted: list[str] = []
        self.refused: dict[int, int] = {}
        self.lock = threading.Lock()
        self.count = 0

    def one(self, bytes_: bytes | None = None, name: str | None = None, source: pathlib.Path | None = None,
            user: str | None = None) -> None:
        """One upload by `user` (else the next of USERS): `bytes_`, or the
        file `source` streamed from disk (with the name appended, so each is
        new to deduplication), or the small sample."""
        with self.lock:
            self.count += 1
            n = self.count
        user = user or USERS[n % len(USERS)]
        name = name or f"chaos-{c.RUN}-{n}.mp4"
        body = bytes_ if bytes_ is not None else self.sample + f"{name}".encode()
        boundary = f"b{n}x{c.RUN}"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        if source:
            suffix = name.encode()
            length = len(head) + source.stat().st_size + len(suffix) + len(tail)
            payload = itertools.chain([head], streamed(source), [suffix, tail])
        else:
            payload = head + body + tail
            length = len(payload)
        request = urllib.request.Request(f"{GW}/upload", data=payload, method="POST")
        request.add_header("Content-Length", str(length))
        request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        request.add_header("Authorization", f"Bearer {self.tokens[user]}")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                text = response.read().decode()
                job = response.headers.get("x-job-id")
                if text == "success!" and job:
                    with self.lock:
                        self.accepted.append(job)
                else:
                    c.fail(f"an upload answered {response.status} {text!r} without being refused")
        except urllib.error.HTTPError as err:
            with self.lock:
                self.refused[err.code] = self.refused.get(err.code, 0) + 1
        except OSError:
            with self.lock:
                self.refused[0] = self.refused.get(0, 0) + 1

    def many(self, count: int, pause: float = 0.0, workers: int = 6) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = []
            for _ in range(count):
                futures.append(pool.submit(self.one))
                if pause:
                    time.sleep(pause)
            for future in futures:
                future.result()


def streamed(path: pathlib.Path):
    with path.open("rb") as source:
        while chunk := source.read(2**20):
            yield chunk


def wait_finished(job_ids: list[str], seconds: float) -> None:
    mongo = c.mongo()
    from bson import ObjectId

    ids = [ObjectId(j) for j in job_ids]

    def finished():
        open_jobs = mongo["videos"]["jobs"].count_documents({"_id": {"$in": ids}, "state": {"$nin": ["done", "failed"]}})
        return open_jobs == 0

    c.wait_for(f"{len(ids)} jobs finishing", finished, seconds)
    mongo.close()


def wait_mails(count: int, seconds: float) -> None:
    seen = {"total": 0}

    def arrived():
        seen["total"] = audit.job_mail_count(f"http://{pod_ip('mailpit-0')}:8025")
        return seen["total"] >= count

    try:
        c.wait_for(f"{count} mails", arrived, seconds)
    except SystemExit:
        # How far it got, and where the jobs stand, for whoever reads the failure.
        print(f"chaos: {seen['total']} of {count} mails arrived; queues: {in_flight()}", file=sys.stderr)
        name_unmailed_jobs()
        raise


def name_unmailed_jobs() -> None:
    """Names the jobs no mail was sent about, with what their records say
    and what every service logged about them: a soak failure's lead."""
    mailed = {job for _, job, _ in audit.mails(c.audit_args())}
    mongo = c.mongo()
    fields = {"state": 1, "published_at": 1, "mp3_fid": 1, "error": 1, "retries": 1}
    for job in mongo["videos"]["jobs"].find({"notify_email": {"$ne": False}}, fields):
        if str(job["_id"]) in mailed:
            continue
        record = {k: str(v) for k, v in job.items() if k != "_id"}
        print(f"chaos: no mail about job {job['_id']}: {record}", file=sys.stderr)
        for workload in ("gateway", "converter", "notification"):
            for pod in pods(workload):
                for line in logs_since(pod, "30m", str(job["_id"])).splitlines():
                    print(f"  {pod}: {line[:400]}", file=sys.stderr)
    mongo.close()


def in_flight() -> dict[str, int]:
    """Messages delivered and not yet acked, per queue: work still going
    on (or held by a connection the broker has not yet seen die)."""
    counts = {}
    for line in rabbitmqctl("list_queues", "name", "messages_unacknowledged").splitlines():
        name, _, unacked = line.rpartition("\t")
        if unacked.strip().isdigit() and int(unacked):
            counts[name] = int(unacked)
    return counts


# The last scenario's audit counts, for the soak's table (set before a
# failing scenario fails).
LAST: dict = {}


def conclude(name: str, uploads: Uploads, expect_dead: int = 0, mails: int | None = None,
             resent: int | None = 0) -> dict:
    """Waits for the work to settle, audits, and prints the summary line.
    `resent`: how many mails may arrive twice with one Message-ID (sent
    again after a lost SMTP confirmation; `None`: any number)."""
    wait_finished(uploads.accepted, 300 * SCALE)
    wait_mails(len(uploads.accepted) if mails is None else mails, 300)
    c.wait_for("no message in flight", lambda: not in_flight(), 120)
    time.sleep(3)  # a duplicate mail would arrive now
    problems, counts = audit.audit(c.audit_args() + ["--expect-dead-letters", str(expect_dead)])
    mongo = c.mongo()
    from bson import ObjectId

    recorded = {str(j["_id"]): j for j in mongo["videos"]["jobs"].find({"_id": {"$in": [ObjectId(j) for j in uploads.accepted]}})}
    mongo.close()
    lost = sum(1 for job in uploads.accepted if recorded.get(job, {}).get("state") != "done")
    LAST.update(lost=lost, dup=counts["dup"], orphans=counts["orphans"], resent=counts["resent"])
    print(
        f"scenario={name} jobs={counts['jobs']} done={counts['done']} failed={counts['failed']} "
        f"lost={lost} dup={counts['dup']} mails={counts['mails']} orphans={counts['orphans']}"
        + (f" resent={counts['resent']}" if counts["resent"] else "")
        + (f" refused={uploads.refused}" if uploads.refused else ""),
        flush=True,
    )
    for problem in problems:
        print(f"chaos: {problem}", file=sys.stderr)
    if resent is not None and counts["resent"] != resent:
        problems.append(f"{counts['resent']} mails arrived twice, {resent} expected")
    if problems or lost:
        c.diagnose()
        c.fail(f"{name}: {len(problems)} audit problems ({'; '.join(problems[:3])}), {lost} accepted jobs not done")
    return counts


# --- Scenarios -----------------------------------------------------------------------


def converter_kills(media, tokens):
    uploads = Uploads(media, tokens)
    stop = threading.Event()
    killed = []

    def killer():
        while not stop.wait(2):
            victim = random.choice(pods("converter"))
            kill(victim)
            killed.append(victim)

    thread = threading.Thread(target=killer)
    thread.start()
    uploads.many(200 * SCALE)
    time.sleep(5)
    stop.set()
    thread.join()
    step(f"converter-kills: {len(killed)} SIGKILLs over {len(uploads.accepted)} jobs")
    conclude("converter-kills", uploads)


def outage(media, tokens, name: str, pod: str, port: int | None, seconds: float):
    """Jobs before, during and after `pod` is restarted (or stopped for a
    while when `seconds`): what was accepted completes; what could not be
    taken was refused, never a false success!."""
    uploads = Uploads(media, tokens)
    before = threading.Thread(target=uploads.many, args=(40 * SCALE, 0.5))
    before.start()
    time.sleep(3)
    if seconds:
        podman("stop", "-t", "5", pod)
        time.sleep(seconds)
        podman("start", pod)
    else:
        podman("restart", "-t", "5", pod)
    before.join()
    if port:
        wait_ready(pod, port)
    uploads.many(10)
    step(f"{name}: {len(uploads.accepted)} accepted, refused meanwhile: {uploads.refused or 'none'}")
    conclude(name, uploads)


def broker_restart(media, tokens):
    outage(media, tokens, "broker-restart", "rabbitmq-0", None, 0)


def database_restart(media, tokens):
    outage(media, tokens, "database-restart", "mongodb-0", None, 0)


def mail_outage(media, tokens):
    uploads = Uploads(media, tokens)
    podman("stop", "-t", "5", "mailpit-0")
    uploads.many(20 * SCALE)
    wait_finished(uploads.accepted, 300)
    time.sleep(15 * SCALE)
    podman("start", "mailpit-0")
    wait_ready("mailpit-0", 8025)
    step(f"mail-outage: {len(uploads.accepted)} jobs done while no mail could go")
    conclude("mail-outage", uploads)


def partition(media, tokens):
    uploads = Uploads(media, tokens)
    job, victim = long_job_converting(uploads, "partition.mkv")
    aliases = ["converter", "converter.mp3converter", "converter.mp3converter.svc"]
    restarts_before = restarts()[victim]
    podman("network", "disconnect", "mp3c-cluster", victim)
    step(f"partition: {victim} cut off while converting {job}")
    time.sleep(30 * SCALE)
    podman("network", "connect", *[f"--alias={a}" for a in aliases], "mp3c-cluster", victim)
    wait_ready(victim, 8090, seconds=120)
    if restarts()[victim] != restarts_before:
        c.fail(f"{victim} was restarted; it should have recovered by itself")
    # Recovered means working: it takes jobs again.
    handled = c.conversions(victim)

    def victim_converts():
        uploads.many(3)
        return c.conversions(victim) > handled

    c.wait_for(f"{victim} converting again", victim_converts, 90)
    step(f"partition: {victim} back on the network, ready and converting again without a restart")
    conclude("partition", uploads)


def gateway_loss(media, tokens):
    uploads = Uploads(media, tokens)
    big = (media / "filetype__sample.mp4").read_bytes() * 80  # ~20 MB
    # Two live streams: the ingress sends them to different replicas, so
    # one of them is on the replica that dies.
    streams = [SseWatcher(tokens[USERS[0]]) for _ in range(2)]
    for stream in streams:
        stream.start()
        time.sleep(0.3)
    threads = [threading.Thread(target=uploads.one, args=(big + bytes([n]), f"big-{n}.mp4")) for n in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    kill("gateway-0")
    for thread in threads:
        thread.join()
    wait_ready("gateway-0", 8081)
    # Clients retry what failed, on whichever replica answers now.
    failed = sum(uploads.refused.values())
    uploads.refused = {}
    for n in range(failed):
        uploads.one(big + bytes([100 + n]), f"big-retry-{n}.mp4")
    uploads.many(10)
    wait_finished(uploads.accepted, 300)
    reconnects = sum(stream.reconnects for stream in streams)
    step(f"gateway-loss: {failed} uploads cut by the kill and retried; the SSE streams reconnected {reconnects} times")
    for stream in streams:
        stream.check(uploads.accepted, USERS[0])
        stream.stop()
    if not reconnects:
        c.fail("no live event stream was cut by the kill: nothing shows that Last-Event-ID resumes")
    # Chunks of the killed uploads are swept once their lease expires.
    c.wait_for("the killed uploads' chunks swept", no_orphan_chunks, 120)
    conclude("gateway-loss", uploads)


def no_orphan_chunks() -> bool:
    mongo = c.mongo()
    files = {f["_id"] for f in mongo["videos"]["fs.files"].find({}, {"_id": 1})}
    chunked = set(mongo["videos"]["fs.chunks"].distinct("files_id"))
    mongo.close()
    return not (chunked - files)


class SseWatcher(threading.Thread):
    """Follows GET /api/v1/events, reconnecting with Last-Event-ID whenever
    the stream breaks, and remembers the last state seen per job."""

    def __init__(self, token: str):
        super().__init__(daemon=True)
        self.token = token
        self.states: dict[str, str] = {}
        self.last_id = None
        self.reconnects = 0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            request = urllib.request.Request(f"{GW}/api/v1/events")
            request.add_header("Authorization", f"Bearer {self.token}")
            if self.last_id:
                request.add_header("Last-Event-ID", self.last_id)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    data = None
                    for raw in response:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id:"):
                            self.last_id = line[3:].strip()
                        elif line.startswith("data:"):
                            data = json.loads(line[5:])
                        elif not line and data:
                            job = data["job"]
                            self.states[job["id"]] = job["state"]
                            data = None
                        if self.stopped.is_set():
                            return
            except OSError:
                pass
            self.reconnects += 1
            time.sleep(0.5)

    def stop(self):
        self.stopped.set()

    def check(self, accepted: list[str], user: str):
        mongo = c.mongo()
        from bson import ObjectId

        mine = [str(j["_id"]) for j in mongo["videos"]["jobs"].find({"_id": {"$in": [ObjectId(a) for a in accepted]}, "owner": user})]
        mongo.close()

        def seen_all():
            return all(self.states.get(job) == "done" for job in mine)

        c.wait_for(f"the SSE stream seeing all {len(mine)} of {user}'s jobs done", seen_all, 120)


def load(media, tokens):
    uploads = Uploads(media, tokens)
    size, count, small = 200 * 2**20, 20, 50
    # A real video's start, then noise: the converter reads the start.
    big = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"chaos-{c.RUN}-big.mp4"
    with big.open("wb") as out:
        out.write((media / "filetype__sample.mp4").read_bytes())
        noise = random.randbytes(2**20)
        while out.tell() < size:
            out.write(noise)
    # Resident memory per gateway: whole (VmRSS) and without the binary's
    # own mapped pages (RssAnon: heap and stacks). The goal is on what the
    # load adds to the heap over the gateway's own idle baseline, the same
    # for every build: a debug build's code alone keeps about 30 MiB
    # resident (a release build's 16 MiB), which the load does not change.
    def memory(pod: str) -> dict[str, int]:
        pid = podman("inspect", "--format", "{{.State.Pid}}", pod)
        seen = {"VmRSS": 0, "RssAnon": 0}
        try:
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return seen
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in seen:
                seen[key] = int(value.split()[0])
        return seen

    idle = {pod: memory(pod) for pod in ("gateway-0", "gateway-1")}
    peak = {pod: dict(seen) for pod, seen in idle.items()}
    done = threading.Event()

    def watch_memory():
        while not done.wait(0.5):
            for pod, seen in peak.items():
                for key, value in memory(pod).items():
                    seen[key] = max(seen[key], value)

    watcher = threading.Thread(target=watch_memory)
    watcher.start()
    started = time.monotonic()
    threads = [threading.Thread(target=uploads.one, kwargs={"name": f"load-{c.RUN}-{n}.mp4", "source": big}) for n in range(count)]
    for thread in threads:
        thread.start()
    uploads.many(small, pause=0.2)
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    done.set()
    watcher.join()
    big.unlink()
    growth = {pod: (peak[pod]["RssAnon"] - idle[pod]["RssAnon"]) / 1024 for pod in peak}
    shown = ", ".join(
        f"{pod} {seen['VmRSS'] / 1024:.1f} (heap {idle[pod]['RssAnon'] / 1024:.1f} idle, "
        f"{seen['RssAnon'] / 1024:.1f} peak, +{growth[pod]:.1f})"
        for pod, seen in peak.items()
    )
    step(f"load: {count} uploads of {size >> 20} MiB at once ({count * size / 2**20 / took:.0f} MiB/s) "
         f"with {small} small jobs; gateway RSS in MiB: {shown}")
    if uploads.refused:
        c.fail(f"uploads were refused under load: {uploads.refused}")
    # 48 MiB of heap over idle: the 64 MiB whole-process goal of a release
    # gateway, less its 16 MiB of code.
    worst = max(growth.values())
    if worst >= 48:
        c.fail(f"a gateway's heap grew by {worst:.1f} MiB under load (goal: under 48)")
    conclude("load", uploads)


def hostile(media, tokens):
    uploads = Uploads(media, tokens)
    token = tokens[USERS[0]]
    host, port = "127.0.0.1", int(os.environ.get("CLUSTER_PORT", "8180"))
    before = restarts()

    def raw(data: bytes, wait: float = 10) -> str:
        """The answer to `data`; when there is none, what happened instead
        (no answer in time, closed, reset) and after how long."""
        started = time.monotonic()
        chunks, ended = [], "closed"
        with socket.create_connection((host, port), timeout=wait) as sock:
            try:
                sock.sendall(data)
                sock.settimeout(wait)
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except TimeoutError:
                ended = f"no answer within {wait:.0f}s"
            except OSError as err:
                ended = f"{type(err).__name__}: {err}"
        answer = b"".join(chunks).decode(errors="replace")
        return answer or f"({ended} after {time.monotonic() - started:.1f}s, with nothing sent back)"

    def multipart_request(body: bytes, boundary: str = "B0") -> bytes:
        head = (
            f"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    sample = (media / "puremagic__test.mp4").read_bytes()
    part = lambda headers, data: f"--B0\r\n{headers}\r\n\r\n".encode() + data + b"\r\n"  # noqa: E731
    file_header = 'Content-Disposition: form-data; name="file"; filename="x.mp4"'
    cases = {
        "a bad boundary": (multipart_request(part(file_header, sample) + b"--B0--\r\n", "OTHER"), "400"),
        "truncated": (multipart_request(part(file_header, sample)[:300]), "400"),
        "10,000 parts": (multipart_request(b"".join(part(f'Content-Disposition: form-data; name="p{i}"', b"x") for i in range(10_000)) + b"--B0--\r\n"), "400"),
        "a 1 MiB header": (multipart_request(part(file_header + "\r\nX: " + "a" * 2**20, sample) + b"--B0--\r\n"), "400"),
        "CR/LF, ../, NUL and 10 KB of Unicode in the name": (
            multipart_request(part('Content-Disposition: form-data; name="file"; filename="../\r\n\x00' + "ü" * 5000 + '.mp4"', sample) + b"--B0--\r\n"),
            "",
        ),
        "a forged JWT": (b"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer eyJhbGciOiJub25lIn0.eyJ1c2VybmFtZSI6ImEifQ.\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "403"),
        "a broken JWT": (b"GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x.y\r\nConnection: close\r\n\r\n", "403"),
    }
    for what, (request, status) in cases.items():
        answer = raw(request)
        first = answer.split("\r\n", 1)[0]
        if not first.startswith("HTTP/1.1") or (status and f" {status} " not in f"{first} "):
            c.fail(f"hostile {what}: {first!r}")
        if first.split()[1].startswith("5"):
            c.fail(f"hostile {what}: a server error {first!r}")
    # Slow headers: the server closes, within its header timeout.
    with socket.create_connection((host, port), timeout=60) as slow:
        slow.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        slow.settimeout(60)
        try:
            while slow.recv(1024):
                pass
        except OSError:
            pass
        if time.monotonic() - started > 55:
            c.fail("a slow-header client was held open")
    # Poison messages straight into the queues.
    publisher = f"amqp://admin:{c.generated('RABBITMQ_ADMIN_PASSWORD')}@{pod_ip('rabbitmq-0')}:5672/%2f"
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(publisher))
    channel = connection.channel()
    channel.confirm_delivery()
    poisons = [b"not json", b'{"video_fid": 1}', json.dumps({"video_fid": "6" * 24, "mp3_fid": None, "username": "x@example.com", "job_id": "7" * 24, "filename": "x"}).encode(), b"{" + b" " * (10 * 2**20) + b"}"]
    for queue in ("video", "mp3"):
        for body in poisons:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    connection.close()
    uploads.many(5)
    step(f"hostile: {len(cases)} malformed requests and {2 * len(poisons)} poison messages")
    # Accounts and abuse: a phishing name, a burst past the quota, a
    # stream flood (scripts/cluster/hostile_accounts.py).
    mailed = hostile_accounts.phishing_name(sample, wait_finished)
    hostile_accounts.quota_burst(uploads, USERS[1], tokens[USERS[1]], c.pods("converter"))
    hostile_accounts.stream_flood(uploads, USERS[2], tokens[USERS[2]], tokens[USERS[3]])
    conclude("hostile", uploads, expect_dead=2 * len(poisons), mails=len(uploads.accepted) + mailed)
    after = restarts()
    changed = {pod: after[pod] - before.get(pod, 0) for pod in after if after[pod] != before.get(pod, 0)}
    if changed:
        c.fail(f"containers restarted during hostile input: {changed}")


# --- Claims and pauses ---------------------------------------------------------------


def signal_pod(pod: str, sig: signal.Signals) -> None:
    """`sig` to every process of the container (SIGSTOP freezes it whole,
    as a stalled node or a debugger would; SIGCONT lets it go on)."""
    podman("kill", "-s", sig.name.removeprefix("SIG"), pod)


def claims_held() -> int:
    """Jobs whose ready or failure mail is claimed by a delivery right now."""
    mongo = c.mongo()
    held = mongo["videos"]["jobs"].count_documents(
        {"$or": [{"notify_claim": {"$ne": None}}, {"failure_notify_claim": {"$ne": None}}]})
    mongo.close()
    return held


def mail_stalled(uploads: Uploads, count: int) -> None:
    """`count` jobs converted while the mail server is frozen (its port
    still takes connections: the kernel answers, nobody greets), until a
    notification pod holds a claim and waits on it."""
    uploads.many(count)
    wait_finished(uploads.accepted, 300)
    c.wait_for("a notification claim held while the mail server hangs", claims_held, 60)


def notification_kill(media, tokens):
    """Both notification pods SIGKILLed between claim and send: nothing can
    give those claims back. The mails go once the claims' lease lapses,
    without a retry counted or a message dead-lettered for waiting."""
    uploads = Uploads(media, tokens)
    signal_pod("mailpit-0", signal.SIGSTOP)
    try:
        mail_stalled(uploads, 10)
        held = claims_held()
        for pod in pods("notification"):
            kill(pod)
    finally:
        signal_pod("mailpit-0", signal.SIGCONT)
    step(f"notification-kill: both notification pods killed holding {held} claims")
    conclude("notification-kill", uploads)


def smtp_drop(media, tokens):
    """The mail server takes a message and hangs up before confirming it:
    the sender cannot know it went and sends it again, with the same
    Message-ID (at least once; the receiving side can drop the copy)."""
    uploads = Uploads(media, tokens)
    dropped = 4
    faults(drop_after_data=dropped)
    try:
        uploads.many(10)
        wait_finished(uploads.accepted, 300)
        wait_mails(len(uploads.accepted) + dropped, 300)
    finally:
        faults(drop_after_data=0)
    step(f"smtp-drop: {dropped} mails taken and left unconfirmed by the server")
    conclude("smtp-drop", uploads, mails=len(uploads.accepted) + dropped, resent=dropped)


def faults(**asked) -> None:
    request = urllib.request.Request(
        f"http://{pod_ip('mailpit-0')}:8025/api/v1/faults", data=json.dumps(asked).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    urllib.request.urlopen(request, timeout=10).read()


def claim_database_restart(media, tokens):
    """MongoDB restarted while deliveries hold claims and wait on a frozen
    mail server: renewals and releases fail meanwhile; every mail still goes
    once."""
    uploads = Uploads(media, tokens)
    signal_pod("mailpit-0", signal.SIGSTOP)
    try:
        mail_stalled(uploads, 10)
        podman("restart", "-t", "5", "mongodb-0")
        time.sleep(5)
    finally:
        signal_pod("mailpit-0", signal.SIGCONT)
    step("claim-database-restart: MongoDB restarted under held claims")
    conclude("claim-database-restart", uploads)


def converter_pause(media, tokens):
    """A converter frozen (SIGSTOP) mid-conversion past the broker's
    heartbeat: the broker gives its job to another converter; resumed, the
    frozen one finds its connection gone and its job taken, and the job
    ends done once, with one MP3 and one mail."""
    uploads = Uploads(media, tokens)
    job, victim = long_job_converting(uploads, "paused.mkv")
    restarts_before = restarts()[victim]
    signal_pod(victim, signal.SIGSTOP)
    try:
        # The heartbeat is 10 s: the broker gives up on it after two missed.
        def taken_over():
            for pod in pods("converter"):
                if pod != victim and job in logs_since(pod, "2m", "conversion started"):
                    return pod
            return None

        heir = c.wait_for("another converter taking the frozen one's job", taken_over, 90)
    finally:
        signal_pod(victim, signal.SIGCONT)
    wait_ready(victim, 8090, seconds=120)
    if restarts()[victim] != restarts_before:
        c.fail(f"{victim} was restarted; it should have carried on by itself")
    step(f"converter-pause: {victim} frozen mid-job, {heir} took the job over, {victim} resumed")
    conclude("converter-pause", uploads)


def logs_since(pod: str, since: str, needle: str) -> str:
    logs = subprocess.run(["podman", "logs", "--since", since, pod], capture_output=True, text=True).stdout
    return "\n".join(line for line in logs.splitlines() if needle in line)


def long_job_converting(uploads: Uploads, name: str) -> tuple[str, str]:
    """An hour of sound (a minute or so to convert) uploaded, and the
    converter working on it."""
    work = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"chaos-{c.RUN}-{name}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x64:r=1", "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=48000", "-t", "3600", "-c:v", "libx264", "-c:a", "flac",
         "-metadata", f"comment={c.RUN}-{name}", "-shortest", str(work)],
        check=True,
    )
    uploads.one(work.read_bytes(), name)
    work.unlink()
    job = uploads.accepted[-1]

    def converting_on():
        for pod in pods("converter"):
            if job in logs_since(pod, "2m", "conversion started"):
                return pod
        return None

    return job, c.wait_for("the long job converting", converting_on, 60)


def audit_finds_what_is_wrong() -> None:
    """The audit is only worth its "all well" if it sees trouble: one of
    each kind, planted by hand, must each be named."""
    from bson import Binary, ObjectId
    import datetime

    mongo = c.mongo()
    videos, mp3s = mongo["videos"], mongo["mp3s"]
    now = datetime.datetime.now(datetime.timezone.utc)

    def job(state: str, **fields) -> ObjectId:
        video = ObjectId()
        videos["fs.files"].insert_one({"_id": video, "length": 0, "chunkSize": 261120, "uploadDate": now, "filename": "x.mp4"})
        record = {"_id": ObjectId(), "owner": USERS[0], "filename": "x.mp4", "state": state, "progress": 0.0,
                  "video_fid": video, "mp3_fid": None, "notify_email": False, "created_at": now, "updated_at": now}
        record.update(fields)
        videos["jobs"].insert_one(record)
        return record["_id"]

    def mp3(job_id: ObjectId) -> ObjectId:
        fid = ObjectId()
        mp3s["fs.files"].insert_one({"_id": fid, "length": 0, "chunkSize": 261120, "uploadDate": now, "filename": "x.mp3",
                                     "metadata": {"job_id": job_id}})
        return fid

    stuck = job("converting")
    hollow = job("done", mp3_fid=ObjectId())
    doubled = job("done")
    videos["jobs"].update_one({"_id": doubled}, {"$set": {"mp3_fid": mp3(doubled)}})
    extra = mp3(doubled)
    unmailed = job("failed", notify_email=True)
    # Its failure event, dead-lettered: the audit names the way to replay it.
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(
        f"amqp://admin:{c.generated('RABBITMQ_ADMIN_PASSWORD')}@{pod_ip('rabbitmq-0')}:5672/%2f"))
    channel = connection.channel()
    channel.queue_declare("notification.job-failed.dlq", durable=True, arguments={"x-queue-type": "quorum"})
    channel.basic_publish("", "notification.job-failed.dlq", json.dumps({"job_id": str(unmailed)}).encode(),
                          pika.BasicProperties(delivery_mode=2, headers={"x-failure-reason": "SMTP: refused"}))
    connection.close()
    orphan = ObjectId()
    videos["fs.files"].insert_one({"_id": orphan, "length": 0, "chunkSize": 261120, "uploadDate": now, "filename": "o.mp4"})
    loose = ObjectId()
    mp3s["fs.chunks"].insert_one({"files_id": loose, "n": 0, "data": Binary(b"x")})
    mongo.close()
    problems, counts = audit.audit(c.audit_args())
    expected = {
        f"job {stuck} is converting, not finished",
        f"job {hollow} is done without its MP3",
        f"job {doubled} has 2 MP3s",
        f"MP3 {extra} belongs to no job",
        f"job {unmailed} is failed, and its user was never mailed; its message is dead-lettered in "
        "notification.job-failed.dlq (SMTP: refused): once the cause is fixed, `notification replay-dead-letters` sends it",
        f"video {orphan} belongs to no job",
        f"chunks of mp3s file {loose} have no file (an upload cut off, never cleaned up)",
    }
    missed = expected - set(problems)
    if missed:
        c.fail(f"the audit missed {sorted(missed)}; it said {problems}")
    step(f"the audit names each of {len(expected)} planted problems (orphans={counts['orphans']})")
    reset()


SCENARIOS = {
    "converter-kills": converter_kills,
    "broker-restart": broker_restart,
    "database-restart": database_restart,
    "mail-outage": mail_outage,
    "partition": partition,
    "gateway-loss": gateway_loss,
    "load": load,
    "hostile": hostile,
    "notification-kill": notification_kill,
    "smtp-drop": smtp_drop,
    "claim-database-restart": claim_database_restart,
    "converter-pause": converter_pause,
}


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--long"]
    if not args or args[0] in ("-h", "--help"):
        sys.exit(__doc__)
    soak = None
    if "--soak" in args:
        at = args.index("--soak")
        try:
            soak = int(args[at + 1])
        except (IndexError, ValueError):
            sys.exit(f"--soak needs a number of runs; {__doc__}")
        del args[at:at + 2]
    media = pathlib.Path(args[0])
    runs: dict[str, int] = {}
    chosen_args = args[1:]
    # Only counts given (NAME=RUNS): every scenario runs, those as said.
    if not chosen_args or all("=" in chosen for chosen in chosen_args):
        chosen_args = [*SCENARIOS, *chosen_args]
    for chosen in chosen_args:
        name, _, count = chosen.partition("=")
        if name not in SCENARIOS or (count and not count.isdigit()):
            sys.exit(f"unknown scenario {chosen!r}; {__doc__}")
        runs[name] = int(count) if count else (soak or 1)
    tokens = ensure_users()
    reset()
    audit_finds_what_is_wrong()
    table = {}
    for name, count in runs.items():
        row = table[name] = {"runs": 0, "failures": 0, "lost": 0, "dup": 0, "orphans": 0, "seconds": 0.0, "first": ""}
        for run in range(count):
            reset()
            LAST.clear()
            started = time.monotonic()
            try:
                SCENARIOS[name](media, tokens)
            # In a soak, a run that breaks (the harness's own MongoDB
            # connection given up on, say) is a failed run in the table,
            # not the end of the soak.
            except (SystemExit, Exception) as failure:
                if soak is None:
                    raise
                if not isinstance(failure, SystemExit):
                    failure = f"{type(failure).__name__}: {failure}"
                row["failures"] += 1
                row["first"] = row["first"] or f"run {run + 1}: {failure}"
                print(f"chaos: {name} run {run + 1} of {count} FAILED: {failure}", flush=True)
                recover()
            took = time.monotonic() - started
            row["runs"] += 1
            row["seconds"] += took
            for key in ("lost", "dup", "orphans"):
                row[key] = max(row[key], LAST.get(key, 0))
            step(f"{name} took {took:.0f}s" + (f" (run {run + 1} of {count})" if count > 1 else ""))
    if soak is not None:
        print_soak(table)
        if any(row["failures"] for row in table.values()):
            sys.exit(1)


def recover() -> None:
    """After a failed soak run: whatever a scenario froze or cut off goes
    back, so the next run starts from a working system."""
    for pod in pods("converter") + ["mailpit-0"]:
        subprocess.run(["podman", "kill", "-s", "CONT", pod], capture_output=True)
    faults(drop_after_data=0)
    for pod in pods("converter"):
        aliases = ["converter", "converter.mp3converter", "converter.mp3converter.svc"]
        subprocess.run(["podman", "network", "connect", *[f"--alias={a}" for a in aliases], "mp3c-cluster", pod],
                       capture_output=True)
    for pod, port in [("rabbitmq-0", None), ("mongodb-0", None), ("gateway-0", 8081), ("gateway-1", 8081)]:
        subprocess.run(["podman", "start", pod], capture_output=True)
        if port:
            wait_ready(pod, port)


def print_soak(table: dict) -> None:
    print("\nchaos soak:", flush=True)
    print(f"{'scenario':<24} {'runs':>4} {'failures':>8} {'lost':>4} {'dup':>3} {'orphans':>7} {'mean s':>6}  first failure")
    for name, row in table.items():
        mean = row["seconds"] / max(row["runs"], 1)
        print(f"{name:<24} {row['runs']:>4} {row['failures']:>8} {row['lost']:>4} {row['dup']:>3} "
              f"{row['orphans']:>7} {mean:>6.0f}  {row['first'][:100]}", flush=True)


if __name__ == "__main__":
    main()
