"""End-to-end test of the system as scripts/cluster-up runs it in containers.

usage: test_cluster.py MEDIA_DIR DESKTOP_BINARY OBSERVABILITY.yaml
(OBSERVABILITY.yaml: a render holding k8s/components/observability)
Needs the running cluster (scripts/cluster-up), curl and ffprobe/ffmpeg.
Against http://127.0.0.1:$CLUSTER_PORT, as a user would:
  1. the classic curl flow: login, upload a real sample video, the mail,
     download a playable MP3 of the video's length;
  2. the JSON API: login, a job with options, its view, list, the MP3, delete;
  3. the desktop app's headless mode converting a watched folder;
  4. jobs spread over both converter containers (each one's /metrics);
  5. a converter killed with SIGKILL mid-conversion loses nothing: the job
     ends done once, with one MP3 and one mail, and the container is back;
  6. nothing private through the Ingress: /metrics, /healthz and /readyz
     answer 404 there, and each pod's ops port serves them;
  7. the observability component's alert rules and dashboard name only
     metrics (and labels) the running pods really serve
     (check_observability.py --scrape on every ops port).
Prints one line per step; exits non-zero on the first failure.
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

from bson import ObjectId

from client import (
    EMAIL, GW, PASSWORD, RUN, api, check, conversions, curl, duration, fail, mail_text, mails_about,
    mongo, pod_ip, podman, pods, step, unique_copy, wait_for, wait_job,
)

def classic_flow(media: pathlib.Path, work: pathlib.Path) -> str:
    token = curl("-X", "POST", "-u", f"{EMAIL}:{PASSWORD}", f"{GW}/login")
    check(token.count(".") == 2, f"login gave no JWT: {token[:80]}")
    video = unique_copy(media / "filetype__sample.mp4", work / f"classic-{RUN}.mp4")
    headers = work / "headers.txt"
    body = curl("-D", str(headers), "-X", "POST", "-F", f"file=@{video}", "-H", f"Authorization: Bearer {token}", f"{GW}/upload")
    check(body == "success!", f"upload answered {body!r}")
    check("x-job-id:" in headers.read_text().lower(), "no X-Job-Id header")
    mail = wait_for("the ready mail", lambda: mails_about(video.name), 120)[0]
    text = mail_text(mail)
    found = re.search(r"fid=3D([0-9a-f]{24})|fid=([0-9a-f]{24})", text)
    check(found is not None, f"no download link in the mail: {text[:400]}")
    fid = found.group(1) or found.group(2)
    mp3 = work / "classic.mp3"
    curl("-o", str(mp3), "-H", f"Authorization: Bearer {token}", f"{GW}/download?fid={fid}")
    length = duration(mp3)
    check(abs(length - 4.97) < 0.15, f"the MP3 lasts {length:.2f}s, the video 4.97s")
    step(f"classic flow: login, upload, mail to {mail['To'][0]['Address']}, a {length:.2f}s MP3 downloaded")
    return token


def json_api(media: pathlib.Path) -> str:
    status, body = api("POST", "/api/v1/login", body={"email": EMAIL, "password": PASSWORD})
    check(status == 200, f"/api/v1/login: {status} {body[:200]!r}")
    token = json.loads(body)["token"]
    name = f"api-{RUN}.mp4"
    boundary = uuid.uuid4().hex
    payload = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="options"\r\n\r\n'.encode(),
        b'{"quality":"V0","channels":"mono"}\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: video/mp4\r\n\r\n'.encode(),
        (media / "puremagic__test.mp4").read_bytes() + RUN.encode(),
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    request = urllib.request.Request(f"{GW}/api/v1/jobs", data=payload, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        check(response.status == 202, f"POST /api/v1/jobs: {response.status}")
        job = json.load(response)["job"]
    check(job["options"].get("channels") == "mono", f"options not kept: {job['options']}")
    done = wait_job(token, job["id"])
    check(done["state"] == "done" and done["mp3_fid"], f"job ended {done}")
    status, body = api("GET", "/api/v1/jobs?limit=50", token)
    check(status == 200 and any(j["id"] == job["id"] for j in json.loads(body)["jobs"]), "the job is not listed")
    status, mp3 = api("GET", f"/api/v1/jobs/{job['id']}/mp3", token)
    check(status == 200 and mp3[:3] in (b"ID3", b"\xff\xfb"), f"GET mp3: {status}")
    status, _ = api("DELETE", f"/api/v1/jobs/{job['id']}", token)
    check(status == 204, f"DELETE: {status}")
    status, _ = api("GET", f"/api/v1/jobs/{job['id']}", token)
    check(status == 404, f"a deleted job answers {status}")
    step("JSON API: login, job with options, view, list, MP3, delete")
    return token


def desktop_headless(media: pathlib.Path, work: pathlib.Path, binary: str) -> None:
    inbox, out, state = work / "inbox", work / "out", work / "state"
    for folder in (inbox, out, state):
        folder.mkdir()
    log = open(work / "desktop.log", "w")
    app = subprocess.Popen(
        [binary, "--headless", "--server", GW, "--watch", str(inbox), "--out", str(out),
         "--email", EMAIL, "--password", PASSWORD, "--state-dir", str(state), "--settle-ms", "500"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        unique_copy(media / "filetype__sample.mp4", inbox / f"desktop-{RUN}.mp4")
        mp3 = wait_for("the desktop app's MP3", lambda: next(iter(out.glob("*.mp3")), None), 120)
        wait_for("a complete MP3", lambda: not list(out.glob("*.part")), 30)
        length = duration(mp3)
        check(abs(length - 4.97) < 0.15, f"the desktop's MP3 lasts {length:.2f}s")
    finally:
        app.send_signal(signal.SIGTERM)
        code = app.wait(timeout=30)
    check(code == 0, f"the headless app exited {code} on SIGTERM; see {work / 'desktop.log'}")
    step(f"desktop headless: a watched folder gave {mp3.name} ({length:.2f}s); clean exit on SIGTERM")


def spread(media: pathlib.Path, work: pathlib.Path, token: str) -> None:
    converters = pods("converter")
    check(len(converters) >= 2, f"converter pods: {converters}")
    before = {p: conversions(p) for p in converters}
    names = []
    for i in range(8):
        video = unique_copy(media / "puremagic__test.mp4", work / f"spread-{RUN}-{i}.mp4")
        curl("-X", "POST", "-F", f"file=@{video}", "-H", f"Authorization: Bearer {token}", f"{GW}/upload")
        names.append(video.name)
    wait_for("8 mails", lambda: all(mails_about(n) for n in names), 180)
    gained = {p: conversions(p) - before[p] for p in converters}
    check(sum(1 for g in gained.values() if g > 0) >= 2, f"conversions per converter: {gained}")
    step(f"spread: 8 jobs over the converters {gained}")


def long_job(work: pathlib.Path, token: str, attempt: int) -> tuple[str, pathlib.Path, str | None]:
    """Uploads an hour of audio (new bytes each time: no deduplication) and
    returns its job, its file and the converter that logged "conversion
    started" for it while it converts (None if it ended first)."""
    video = work / f"long-{RUN}-{attempt}.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:r=1", "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=48000", "-t", "3600", "-c:v", "libx264", "-c:a", "flac",
         "-metadata", f"comment={video.name}", "-shortest", str(video)],
        check=True,
    )
    headers = work / "long-headers.txt"
    curl("-D", str(headers), "-X", "POST", "-F", f"file=@{video}", "-H", f"Authorization: Bearer {token}", f"{GW}/upload")
    job_id = next(line.split(":", 1)[1].strip() for line in headers.read_text().splitlines() if line.lower().startswith("x-job-id:"))

    def converting_on():
        status, body = api("GET", f"/api/v1/jobs/{job_id}", token)
        job = json.loads(body)["job"] if status == 200 else {}
        if job.get("state") in ("done", "failed"):
            return "ended"
        if job.get("state") != "converting":
            return None
        return next((p for p in pods("converter") if any(
            "conversion started" in line and job_id in line
            for line in subprocess.run(["podman", "logs", "--since", "2m", p], capture_output=True, text=True).stdout.splitlines()
        )), None)

    victim = wait_for("the long job converting", converting_on, 60)
    return job_id, video, None if victim == "ended" else victim


def sigkill_mid_conversion(work: pathlib.Path, token: str) -> None:
    for attempt in range(3):
        job_id, video, victim = long_job(work, token, attempt)
        if victim:
            break
        step(f"SIGKILL: job {job_id} ended before it could be killed; another one")
    else:
        fail("three long jobs ended before a converter could be killed")
    restarts = int(podman("inspect", "--format", "{{.RestartCount}}", victim))
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", victim))
    os.kill(pid, signal.SIGKILL)
    step(f"SIGKILL: {victim} (pid {pid}) killed while converting job {job_id}")
    done = wait_job(token, job_id, 300)
    check(done["state"] == "done", f"after the kill the job ended {done['state']}: {done.get('error')}")
    client = mongo()
    mp3s = client["mp3s"]["fs.files"].count_documents({"metadata.job_id": {"$in": [job_id, ObjectId(job_id)]}})
    client.close()
    check(mp3s == 1, f"{mp3s} MP3s stored for the job")
    mails = wait_for("the long job's mail", lambda: mails_about(video.name), 60)
    time.sleep(3)  # a duplicate would arrive now
    mails = mails_about(video.name)
    check(len(mails) == 1, f"{len(mails)} mails for the job")
    wait_for(f"{victim} running again", lambda: podman("inspect", "--format", "{{.State.Status}}", victim) == "running", 60)
    check(int(podman("inspect", "--format", "{{.RestartCount}}", victim)) == restarts + 1, "the killed container did not restart")
    finished_on = [p for p in pods("converter") if f'"job_id":"{job_id}"' in subprocess.run(
        ["podman", "logs", p], capture_output=True, text=True).stdout and p != victim]
    step(f"SIGKILL: the job ended done once (1 MP3, 1 mail), finished on {finished_on or [victim]}; {victim} is back")


def ops_private(rendered: pathlib.Path) -> None:
    for path in ("/metrics", "/healthz", "/readyz"):
        status, _ = api("GET", path)
        check(status == 404, f"{path} through the Ingress answered {status}, not 404")
    targets = [f"http://{pod_ip(pod)}:{port}/metrics" for workload, port in
               (("gateway", 8081), ("auth", 5000), ("converter", 8090), ("notification", 8091))
               for pod in pods(workload)]
    targets.append(f"http://{pod_ip('rabbitmq-0')}:15692/metrics")
    for target in targets:
        with urllib.request.urlopen(target, timeout=10) as response:
            check(response.status == 200, f"{target}: {response.status}")
    step(f"the Ingress serves no /metrics, /healthz or /readyz; {len(targets)} ops ports do")
    # The rules and dashboard against what these pods serve now (after the
    # flows above, every counter they name has been incremented).
    checker = pathlib.Path(__file__).resolve().parent / "check_observability.py"
    # The checker needs promql-parser: scripts/check-manifests' venv has it.
    python = os.environ.get("CHECKS_PYTHON", sys.executable)
    result = subprocess.run([python, str(checker), str(rendered), "--scrape", *targets],
                            capture_output=True, text=True)
    print(result.stdout + result.stderr, end="", flush=True)
    check(result.returncode == 0, "the alert rules or the dashboard name metrics the pods do not serve")
    step("every metric the alert rules and the dashboard name is served by the running pods")


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    media, desktop, observed = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        token = classic_flow(media, work)
        json_api(media)
        desktop_headless(media, work, desktop)
        spread(media, work, token)
        sigkill_mid_conversion(work, token)
        ops_private(observed)
    step("all passed")


if __name__ == "__main__":
    main()
