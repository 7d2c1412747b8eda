"""The converter worker as users get it, against the FFmpeg CLI (and the
original project's MoviePy method) on the same files in the same run.

A job is uploaded to the gateway, published to the `video` queue and
consumed by the converter's release binary, which streams the video from
GridFS. Per job: the converter process's CPU seconds (from /proc, before
the upload and after the job is done), the wall time from the upload's
answer to the job being done, the process's peak RSS (VmHWM, reset before
each job), the bytes it fetched from MongoDB and the time from consuming
the message to the first MP3 packet (both from its `timings` log line).
The CLI runs under wait4() for CPU and peak RSS, and reports the bytes it
read (`rchar`). Prints a table and the goals; asserts nothing.

   usage: python3 bench_converter.py GATEWAY TOKEN CONVERTER_PID CONVERTER_LOG BENCH_DIR RUNS [MOVIEPY_PYTHON]
"""

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

GW, TOKEN, PID, LOG, BENCH, RUNS = sys.argv[1:7]
PID, RUNS = int(PID), int(RUNS)
MOVIEPY = sys.argv[7] if len(sys.argv) > 7 else None
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
OUT = os.path.join(BENCH, "out.mp3")


def api(method: str, path: str) -> dict | None:
    request = urllib.request.Request(GW + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return json.loads(body) if body else None


def cpu_seconds() -> float:
    with open(f"/proc/{PID}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_kib() -> int:
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def timings(job: str) -> dict:
    """The converter's `timings` line for `job` (JSON logs)."""
    for _ in range(100):
        with open(LOG) as log:
            for line in log:
                if '"timings"' in line and job in line:
                    return json.loads(line)
        time.sleep(0.05)
    raise RuntimeError(f"no timings line for job {job}")


def worker(path: str, options: str = "{}") -> dict:
    """One job through the gateway, the queue and the converter."""
    with open(f"/proc/{PID}/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM
    before = cpu_seconds()
    answer = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-X", "POST", f"{GW}/api/v1/jobs",
         "-H", f"Authorization: Bearer {TOKEN}", "-F", f"file=@{path}", "-F", f"options={options}"],
        capture_output=True, text=True, check=True,
    )
    answered = time.monotonic()
    job = json.loads(answer.stdout)["job"]["id"]
    while True:
        state = api("GET", f"/api/v1/jobs/{job}")["job"]["state"]
        if state in ("done", "failed"):
            break
        time.sleep(0.01)
    wall = time.monotonic() - answered
    if state != "done":
        raise RuntimeError(f"job {job} for {path} failed: {api('GET', f'/api/v1/jobs/{job}')}")
    cpu = cpu_seconds() - before
    line = timings(job)
    api("DELETE", f"/api/v1/jobs/{job}")  # else the same bytes deduplicate
    return {
        "cpu": cpu,
        "wall": wall,
        "rss": peak_kib() / 1024,
        "read": int(line["fetched_bytes"]),
        "first": float(line["first_packet_ms"]),
        "line": line,
    }


def process(argv: list[str]) -> dict:
    """A command's CPU, wall, peak RSS and bytes read (its `rchar`, reported
    by the shell that waited for it)."""
    script = '"$@" >/dev/null 2>&1 </dev/null; rc=$?; grep "^rchar" /proc/$$/io >&2; exit $rc'
    started = time.monotonic()
    child = subprocess.Popen(["bash", "-c", script, "bash", *argv], stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    rchar = int(child.stderr.read().split()[-1])
    if os.waitstatus_to_exitcode(status) != 0:
        return {}
    return {"cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "rss": usage.ru_maxrss / 1024, "read": rchar}


def median_run(measure, *args) -> dict:
    runs = [measure(*args) for _ in range(RUNS)]
    if any(not run for run in runs):
        return {}
    runs.sort(key=lambda run: run["cpu"])
    median = dict(runs[len(runs) // 2])
    for key in ("wall", "rss", "read"):
        median[key] = statistics.median(run[key] for run in runs)
    if "first" in runs[0]:
        median["first"] = statistics.median(run["first"] for run in runs)
    return median


MOVIEPY_CODE = """
import sys
try:
    from moviepy import VideoFileClip
except ImportError:
    from moviepy.editor import VideoFileClip
clip = VideoFileClip(sys.argv[1])
clip.audio.write_audiofile(sys.argv[2], logger=None)
"""


def ffmpeg(path: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", path, "-vn", "-c:a", "libmp3lame", "-q:a", "2", OUT]


def row(name: str, method: str, run: dict, base: dict) -> None:
    if not run:
        print(f"{name:<21} {method:<8} failed")
        return
    ratio = f"{run['cpu'] / base['cpu']:.2f}" if base.get("cpu") else "n/a"
    first = f"{run['first']:.0f}" if "first" in run else "-"
    print(f"{name:<21} {method:<8} {run['cpu']:8.2f} {run['wall']:8.2f} {run['rss']:9.1f} "
          f"{run['read'] / MIB:10.1f} {first:>9} {ratio:>9}")


def main() -> None:
    inputs = ["720p-10min.mp4", "720p-10min-camera.mp4", "opus-10min.mkv", "clip-1s.mp4"]
    print(f"\n{RUNS} run(s) each, medians; worker = upload -> `video` queue -> converter (release) "
          "streaming from GridFS -> job done")
    print(f"{'input':<21} {'method':<8} {'cpu s':>8} {'wall s':>8} {'peak MiB':>9} "
          f"{'read MiB':>10} {'1st pkt ms':>9} {'cpu/wkr':>9}")
    results = {}
    for name in inputs:
        path = os.path.join(BENCH, name)
        size = os.path.getsize(path)
        process(ffmpeg(path))  # the file into the page cache, as the upload puts it in the server's
        ours = median_run(worker, path)
        cli = median_run(process, ffmpeg(path))
        results[name] = (ours, cli, size)
        row(name, "worker", ours, ours)
        row("", "ffmpeg", cli, ours)
        if MOVIEPY:
            row("", "moviepy", median_run(process, [MOVIEPY, "-c", MOVIEPY_CODE, path, OUT]), ours)
        line = ours["line"]
        print(f"{'':<21} worker's log: fetch {line['fetch_ms']} ms in {line['round_trips']} round trips, "
              f"convert {line['convert_ms']} ms, verify {line['verify_ms']} ms, store {line['store_ms']} ms; "
              f"fetched {ours['read'] / size:.0%} of {size / MIB:.1f} MiB")

    avi = os.path.join(BENCH, "mp3-in-60s.avi")
    copy = median_run(worker, avi)
    # A trim end past the end changes nothing but forces the re-encode at V2.
    encode = median_run(worker, avi, '{"trim_end_s":3600}')
    print(f"\nfast path (MP3 in AVI, 60 s) through the worker: copy {copy['cpu']:.2f} s cpu, "
          f"re-encode (V2) {encode['cpu']:.2f} s cpu: {encode['cpu'] / max(copy['cpu'], 0.01):.2f}x")

    big = os.path.join(BENCH, "big-2GiB.mkv")
    huge = worker(big)
    huge_cli = process(ffmpeg(big))
    print(f"2 GiB input ({os.path.getsize(big) / MIB:.0f} MiB): worker {huge['cpu']:.2f} s cpu, "
          f"{huge['wall']:.2f} s wall, peak RSS {huge['rss']:.1f} MiB, fetched {huge['read'] / MIB:.0f} MiB, "
          f"first packet {huge['first']:.0f} ms; ffmpeg {huge_cli['cpu']:.2f} s cpu, "
          f"peak RSS {huge_cli['rss']:.1f} MiB")

    print("\ngoals:")
    for name in ("720p-10min.mp4", "opus-10min.mkv"):
        ours, cli, _ = results[name]
        print(f"  worker CPU vs the CLI on {name}: {ours['cpu'] / cli['cpu']:.2f}x (goal <= 1.05)")
    for name in ("720p-10min.mp4", "720p-10min-camera.mp4"):
        ours, _, size = results[name]
        print(f"  bytes fetched of {name}: {ours['read'] / size:.1%} (goal < 10%)")
    firsts = [results[name][0]["first"] for name in inputs] + [huge["first"]]
    print(f"  consumption -> first MP3 packet: {', '.join(f'{f:.0f}' for f in firsts)} ms (goal < 100)")
    clip_rss = results["clip-1s.mp4"][0]["rss"]
    print(f"  peak RSS, 1 s clip vs 2 GiB file: {clip_rss:.1f} vs {huge['rss']:.1f} MiB "
          f"({huge['rss'] / clip_rss:.2f}x; goal: flat)")


main()
