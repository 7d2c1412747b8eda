"""What the cluster tests and scripts/chaos share: the cluster's pods and
addresses, the gateway's API through the Ingress, the mail caught by
Mailpit, MongoDB, and waiting for things to happen."""
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pymongo

PREFIX = "cluster test"


ROOT = pathlib.Path(__file__).resolve().parents[2]
GW = f"http://127.0.0.1:{os.environ.get('CLUSTER_PORT', '8180')}"
EMAIL, PASSWORD = os.environ.get("DEMO_EMAIL", "demo@example.com"), os.environ.get("DEMO_PASSWORD", "demo-password")
# Where scripts/k8s-secrets keeps the minikube overlay's Secret files.
SECRETS = ROOT / "var" / "k8s-secrets" / "minikube"
RUN = uuid.uuid4().hex[:8]


def step(message: str) -> None:
    print(f"{PREFIX}: {message}", flush=True)


def fail(message: str) -> None:
    sys.exit(f"{PREFIX} FAILED: {message}")


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout.strip()


def pod_ip(name: str) -> str:
    return podman("inspect", "--format", '{{(index .NetworkSettings.Networks "mp3c-cluster").IPAddress}}', name)


def pods(workload: str) -> list[str]:
    names = podman("ps", "--filter", f"label=io.mp3converter.cluster.workload={workload}", "--format", "{{.Names}}")
    return sorted(names.split())


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, check=True).stdout


def api(method: str, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(GW + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def upload_request(path: str, token: str, name: str, body: bytes) -> urllib.request.Request:
    """A POST of `body` as the multipart part `file` named `name`, signed in
    with `token`, to the gateway's `path` (through the Ingress)."""
    boundary = f"b{time.monotonic_ns()}"
    payload = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode() + body + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{GW}{path}", data=payload, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    request.add_header("Authorization", f"Bearer {token}")
    return request


def wait_for(what: str, probe, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    diagnose()
    fail(f"{what} did not happen within {seconds:.0f}s")


def diagnose() -> None:
    """What an operator would look at first: the pods and the last log lines."""
    print(subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}} {{.Status}}"], capture_output=True, text=True).stdout, file=sys.stderr)
    for pod in pods("converter") + pods("gateway") + pods("notification"):
        logs = subprocess.run(["podman", "logs", "--tail", "8", pod], capture_output=True, text=True)
        print(f"--- {pod}\n{logs.stdout}{logs.stderr}", file=sys.stderr)


def mails_about(filename: str) -> list[dict]:
    """The mails naming `filename`: in the Subject, or (as a Subject shows
    only the first 40 characters of a name) in the text."""
    import audit  # noqa: PLC0415 (audit is the tool; this module is its helper's)

    messages = audit.mail_listing(f"http://{pod_ip('mailpit-0')}:8025")
    return [m for m in messages if filename in m["Subject"] or (filename[:30] in m["Subject"] and filename in mail_body(m))]


def mail_body(message: dict) -> str:
    """A mail's plain text, decoded (quoted-printable wraps long lines)."""
    import email  # noqa: PLC0415
    import email.policy  # noqa: PLC0415

    parsed = email.message_from_string(mail_text(message), policy=email.policy.default)
    body = parsed.get_body(preferencelist=("plain",))
    return body.get_content() if body else ""


def mail_text(message: dict) -> str:
    with urllib.request.urlopen(f"http://{pod_ip('mailpit-0')}:8025/api/v1/message/{message['ID']}/raw", timeout=10) as response:
        return response.read().decode(errors="replace")


def unique_copy(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """The sample with this run's id appended (players ignore trailing bytes),
    so the server's deduplication does not answer with an earlier job."""
    target.write_bytes(source.read_bytes() + f"{target.name}-{RUN}".encode())
    return target


def duration(path: pathlib.Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    info = json.loads(out)
    check([s["codec_name"] for s in info["streams"]] == ["mp3"], f"{path.name} is not one MP3 stream: {info}")
    return float(info["format"]["duration"])


def wait_job(token: str, job_id: str, seconds: float = 120) -> dict:
    def done():
        status, body = api("GET", f"/api/v1/jobs/{job_id}", token)
        job = json.loads(body)["job"] if status == 200 else None
        return job if job and job["state"] in ("done", "failed") else None

    return wait_for(f"job {job_id} ending", done, seconds)


def mongo() -> pymongo.MongoClient:
    env = dict(line.split("=", 1) for line in (SECRETS / "mongodb.env").read_text().splitlines() if "=" in line and not line.startswith("#"))
    return pymongo.MongoClient(
        pod_ip("mongodb-0"), 27017, username=env["MONGO_INITDB_ROOT_USERNAME"],
        password=env["MONGO_INITDB_ROOT_PASSWORD"], authSource="admin", directConnection=True,
    )


def conversions(pod: str) -> float:
    with urllib.request.urlopen(f"http://{pod_ip(pod)}:8090/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith('converter_conversions_total{outcome="ok"}'))




def generated(name: str) -> str:
    """A value scripts/k8s-secrets generated for the minikube overlay."""
    for line in (SECRETS / ".generated").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == name:
            return value
    raise KeyError(name)


def audit_args() -> list[str]:
    """scripts/cluster/audit.py's flags for the running cluster."""
    return [
        "--mongodb-uri",
        f"mongodb://mp3converter:{generated('MONGODB_PASSWORD')}@{pod_ip('mongodb-0')}:27017/?authSource=admin&directConnection=true",
        "--amqp-url",
        f"amqp://admin:{generated('RABBITMQ_ADMIN_PASSWORD')}@{pod_ip('rabbitmq-0')}:5672/%2f",
        "--mail-api",
        f"http://{pod_ip('mailpit-0')}:8025",
    ]
