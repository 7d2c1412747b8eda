"""The system's own cost, measured on the container deployment (scripts/
cluster-up --overlay chaos --component scripts/cluster/bench-scaling:
gateway 2, converter 3, each converter half a core and one conversion at a
time): what a job spends outside FFmpeg, how throughput grows with
converters, and how long a killed converter's job waits before it runs
elsewhere. Prints numbers and ratios; asserts nothing about them.

usage: bench_system.py [--jobs N] [--throughput-jobs N] [--kills N]

  overhead    one 1-minute video (H.264 + AAC) at a time, N times: from the
              upload's answer to the SSE event saying `done`, minus the
              conversion itself (the converter's own conversion_ms for that
              job): p50 and p99
  scaling     M such jobs queued while no converter runs, then drained by
              1, 2 and 3 converters: jobs per minute (first converting to
              last done), the ratio to one converter, and the CPU seconds
              each part of the system spent per job meanwhile (converters,
              gateways, RabbitMQ, MongoDB): where a limit would come from.
              Ends with the line
                scaling: converters=1,2,3 jobs_per_min=A,B,C
              and, on paper, the drain time of a 1,000-job burst at N
              replicas of one core each from the per-job figures measured
  failover    a converter SIGKILLed as it starts a long job: seconds until
              another converter says "conversion started" for it
"""
import concurrent.futures
import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import client as c
from client import GW, podman, pods, step

c.PREFIX = "bench-system"
EMAIL, PASSWORD = "bench@example.com", "bench-password"


def option(name: str, default: int) -> int:
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def make_video(path: pathlib.Path, seconds: int, rate: int = 25) -> bytes:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=s=320x240:r={rate}:d={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:d={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)],
        check=True,
    )
    return path.read_bytes()


class Events(threading.Thread):
    """The user's live event stream: when each job was first seen `done`."""

    def __init__(self, token: str):
        super().__init__(daemon=True)
        self.token = token
        self.done: dict[str, float] = {}
        self.converting: dict[str, float] = {}
        self.connected = threading.Event()

    def run(self):
        request = urllib.request.Request(f"{GW}/api/v1/events")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=600) as response:
            self.connected.set()
            data = None
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                elif not line and data:
                    job = data.get("job", {})
                    if job.get("state") == "done":
                        self.done.setdefault(job["id"], time.monotonic())
                    elif job.get("state") == "converting":
                        self.converting.setdefault(job["id"], time.monotonic())
                    data = None

    def wait(self, job: str, seconds: float = 300) -> float:
        return c.wait_for(f"job {job} done", lambda: self.done.get(job), seconds)


def upload(token: str, body: bytes, name: str) -> tuple[str, float]:
    request = c.upload_request("/upload", token, name, body)
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
        return response.headers["x-job-id"], time.monotonic()


JOB_ID = re.compile(r"[0-9a-f]{24}")


def conversion_ms() -> dict[str, int]:
    """Each job's conversion time, from the converters' `timings` lines
    (JSON, as the services log when not on a terminal)."""
    found = {}
    for pod in pods("converter"):
        logs = subprocess.run(["podman", "logs", pod], capture_output=True, text=True)
        for line in (logs.stdout + logs.stderr).splitlines():
            if '"timings"' not in line:
                continue
            record = json.loads(line)
            job = JOB_ID.search(record.get("span", {}).get("job_id", ""))
            if record.get("message") == "timings" and job:
                found[job.group(0)] = int(record["conversion_ms"])
    return found


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def overhead(token: str, video: bytes, jobs: int) -> None:
    events = Events(token)
    events.start()
    events.connected.wait(30)
    e2e = {}
    for n in range(jobs):
        job, answered = upload(token, video + f"overhead-{c.RUN}-{n}".encode(), f"overhead-{n}.mp4")
        e2e[job] = events.wait(job) - answered
    timings = conversion_ms()
    extra = [1000 * seconds - timings[job] for job, seconds in e2e.items() if job in timings]
    conv = [timings[job] for job in e2e if job in timings]
    step(
        f"overhead over {len(extra)} jobs of a 1-minute video: p50 {percentile(extra, 50):.0f} ms, "
        f"p99 {percentile(extra, 99):.0f} ms (upload answered -> SSE done, minus conversion_ms: "
        f"p50 {statistics.median(conv):.0f} ms; end to end p50 {1000 * statistics.median(e2e.values()):.0f} ms)"
    )


def set_converters(count: int) -> None:
    names = sorted(podman("ps", "-a", "--filter", "label=io.mp3converter.cluster.workload=converter",
                          "--format", "{{.Names}}").split())
    for n, name in enumerate(names):
        running = podman("inspect", "--format", "{{.State.Running}}", name) == "true"
        if n < count and not running:
            podman("start", name)
        elif n >= count and running:
            podman("stop", "-t", "20", name)
    for name in names[:count]:
        c.wait_for(f"{name} ready", lambda name=name: ready(name), 120)
    if count == 0:
        c.wait_for("no converter running", lambda: not pods("converter"), 60)


def ready(pod: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{c.pod_ip(pod)}:8090/readyz", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def cpu_seconds() -> dict[str, float]:
    """CPU seconds each part of the deployment has used so far (its
    containers' cgroups, summed by workload)."""
    used: dict[str, float] = {}
    names = podman("ps", "--filter", "label=io.mp3converter.cluster", "--format", "{{.Names}}").split()
    for name in names:
        path = podman("inspect", "--format", "{{.State.CgroupPath}}", name)
        try:
            ns = int(pathlib.Path(f"/sys/fs/cgroup/cpuacct{path}/cpuacct.usage").read_text())
        except (OSError, ValueError):
            continue
        workload = name.rsplit("-", 1)[0]
        used[workload] = used.get(workload, 0.0) + ns / 1e9
    return used


def scaling(token: str, video: bytes, jobs: int) -> None:
    """The queue drained by 1, 2 and 3 converters: the jobs are uploaded
    while no converter runs, so the figure is the converters' pace, not
    the uploads'; from the first job converting to the last one done."""
    events = Events(token)
    events.start()
    events.connected.wait(30)
    rates, per_job = {}, {}
    for converters in (1, 2, 3):
        set_converters(0)
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            ids = list(pool.map(lambda n: upload(token, video + f"tp-{c.RUN}-{converters}-{n}".encode(),
                                                 f"tp-{converters}-{n}.mp4")[0], range(jobs)))
        before = cpu_seconds()
        set_converters(converters)
        finished = max(events.wait(job) for job in ids)
        started = min(events.converting[job] for job in ids if job in events.converting)
        after = cpu_seconds()
        rates[converters] = 60 * jobs / (finished - started)
        per_job[converters] = {part: (after[part] - before.get(part, 0.0)) / jobs for part in after}
        wall = finished - started
        step(
            f"scaling: {converters} converter{'s' if converters > 1 else ''}: {jobs} jobs in {wall:.1f} s; "
            "CPU s per job: " + ", ".join(f"{part} {seconds:.3f}" for part, seconds in sorted(per_job[converters].items()))
            + "; busiest besides the converters: "
            + max((p for p in per_job[converters] if p != "converter"), key=lambda p: per_job[converters][p])
            + f" at {max(v for p, v in per_job[converters].items() if p != 'converter') * jobs / wall:.2f} cores"
        )
    set_converters(3)
    step(
        f"throughput ({jobs} queued 1-minute jobs, converters of half a core and one job each): "
        + ", ".join(f"{n} converter{'s' if n > 1 else ''} {rate:.0f} jobs/min ({rate / rates[1]:.2f}x)"
                    for n, rate in rates.items())
    )
    print(f"scaling: converters=1,2,3 jobs_per_min={','.join(f'{rates[n]:.0f}' for n in (1, 2, 3))}", flush=True)
    # On paper: a burst of 1,000 jobs on N replicas of one core each. A job
    # costs its converter CPU (measured at one replica, half a core: the
    # same CPU at any share) plus the shared parts' CPU, which one core of
    # each would serve at most 60 / that many jobs per minute.
    one = per_job[1]
    converter_cpu = one.get("converter", 0.0)
    shared = {part: seconds for part, seconds in one.items() if part not in ("converter",) and seconds > 0}
    ceiling = min((60 / seconds for seconds in shared.values()), default=float("inf"))
    lines = []
    for replicas in (1, 8, 32, 100):
        pace = min(60 * replicas / converter_cpu, ceiling) if converter_cpu else ceiling
        lines.append(f"{replicas} replicas {1000 / pace:.1f} min")
    busiest = max(shared, key=shared.get) if shared else "none"
    step(
        f"on paper, 1,000 queued 1-minute jobs: {converter_cpu:.3f} converter CPU s each; "
        + "; ".join(lines)
        + f" (from about {ceiling:.0f} jobs/min one core of {busiest}, the busiest shared part per job, caps it)"
    )


def failover(token: str, long_video: bytes, kills: int) -> None:
    waits = []
    for n in range(kills):
        job, _ = upload(token, long_video + f"failover-{c.RUN}-{n}".encode(), f"failover-{n}.mp4")

        def converting_on():
            for pod in pods("converter"):
                logs = subprocess.run(["podman", "logs", "--since", "60s", pod], capture_output=True, text=True)
                if any("conversion started" in line and job in line for line in (logs.stdout + logs.stderr).splitlines()):
                    return pod
            return None

        victim = c.wait_for("the long job converting", converting_on, 120)
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", victim))
        subprocess.run(["kill", "-KILL", str(pid)], check=True)
        killed = time.monotonic()

        def elsewhere():
            for pod in pods("converter"):
                if pod == victim:
                    continue
                logs = subprocess.run(["podman", "logs", "--since", "30s", pod], capture_output=True, text=True)
                if any("conversion started" in line and job in line for line in (logs.stdout + logs.stderr).splitlines()):
                    return time.monotonic()
            return None

        waits.append(c.wait_for("the job running elsewhere", elsewhere, 120) - killed)
        c.wait_for(f"{victim} back", lambda: ready(victim), 120)
        c.api("DELETE", f"/api/v1/jobs/{job}", token)
    step(
        f"failover: a converter killed as it starts a job; the job runs elsewhere after "
        f"{', '.join(f'{w:.2f}' for w in waits)} s (median {statistics.median(waits):.2f} s; "
        "the polling of container logs adds up to ~0.5 s)"
    )


def main() -> None:
    if "-h" in sys.argv or "--help" in sys.argv:
        sys.exit(__doc__)
    subprocess.run(["podman", "exec", "-i", "auth-0", "auth-service", "user", "add", EMAIL],
                   input=f"{PASSWORD}\n", capture_output=True, text=True)
    token = c.curl("-X", "POST", "-u", f"{EMAIL}:{PASSWORD}", f"{GW}/login")
    image = podman("inspect", "--format", "{{.ImageName}}", "gateway-0")
    step(f"on {image} and its siblings, {len(pods('converter'))} converters, {len(pods('gateway'))} gateways")
    with tempfile.TemporaryDirectory() as work:
        video = make_video(pathlib.Path(work) / "minute.mp4", 60)
        long_video = make_video(pathlib.Path(work) / "long.mp4", 1200, rate=2)
    overhead(token, video, option("--jobs", 50))
    scaling(token, video, option("--throughput-jobs", 60))
    failover(token, long_video, option("--kills", 3))


if __name__ == "__main__":
    main()
