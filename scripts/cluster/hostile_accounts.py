"""scripts/chaos hostile's account and abuse cases, through the Ingress as a
stranger would: a phishing name mailed to an address nobody confirmed, a
burst of uploads past the in-flight quota, and a flood of live event
streams. Each fails the scenario (client.fail) when the system gives in."""
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import audit
import client as c
from client import GW, pod_ip, pods, step

LURE = "URGENT - payroll account locked. Verify within 24h at https://victim-corp-payroll.example/verify.mp4"
CONFIRM_LINK = re.compile(r"/account/confirm\?token=([A-Za-z0-9_-]+)")


def upload(token: str, name: str, data: bytes, path: str = "/upload") -> tuple[int, dict, bytes]:
    """One multipart upload: (status, headers, body)."""
    request = c.upload_request(path, token, name, data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def job_of(headers: dict) -> str:
    return next(v for k, v in headers.items() if k.lower() == "x-job-id")


def mails_to(address: str) -> list[dict]:
    listing = audit.mail_listing(f"http://{pod_ip('mailpit-0')}:8025")
    return [m for m in listing if any(to.get("Address") == address for to in m.get("To") or [])]


def phishing_name(sample: bytes, wait_finished) -> int:
    """A stranger registers someone else's address and uploads a file named
    like a phishing lure: that address gets the confirmation mail (which
    says nothing the stranger wrote) and nothing else. Once confirmed, the
    conversion mail names the file shortened and with no link in it.
    Returns the job mails it caused (one)."""
    # New each run: a soak repeats the scenario in one process.
    address = f"phish-{c.RUN}-{time.monotonic_ns()}@example.com"
    status, body = c.api("POST", "/api/v1/register", body={"email": address, "password": "a long password 1"})
    if status != 201:
        c.fail(f"hostile phishing: registering answered {status} {body[:200]!r}")
    status, body = c.api("POST", "/api/v1/login", body={"email": address, "password": "a long password 1"})
    token = json.loads(body)["token"]
    status, headers, body = upload(token, LURE, sample + b"lure-1")
    if status != 200:
        c.fail(f"hostile phishing: the upload answered {status} {body[:200]!r}")
    wait_finished([job_of(headers)], 120)
    time.sleep(3)  # a mail about it would have arrived by now
    received = mails_to(address)
    subjects = [m["Subject"] for m in received]
    if len(received) != 1 or not subjects[0].startswith("Confirm your address"):
        c.fail(f"hostile phishing: the unconfirmed address got {subjects}, only the confirmation was due")
    text = c.mail_body(received[0])
    if "payroll" in text or "victim" in text:
        c.fail("hostile phishing: the confirmation mail carries the uploader's text")
    link = CONFIRM_LINK.search(text)
    if not link:
        c.fail(f"hostile phishing: no confirmation link in {text!r}")
    status, body = c.api("POST", "/api/v1/confirm", body={"token": link.group(1)})
    if status != 200:
        c.fail(f"hostile phishing: confirming answered {status} {body[:200]!r}")
    status, headers, body = upload(token, LURE, sample + b"lure-2")
    wait_finished([job_of(headers)], 120)
    c.wait_for("the mail to the confirmed address", lambda: len(mails_to(address)) == 2, 120)
    mail = next(m for m in mails_to(address) if not m["Subject"].startswith("Confirm"))
    for where, text in (("Subject", mail["Subject"]), ("text", c.mail_body(mail))):
        if "victim-corp-payroll.example" in text or (where == "Subject" and "://" in text):
            c.fail(f"hostile phishing: the conversion mail's {where} holds a link from the file name: {text[:300]!r}")
    if len(mail["Subject"]) > 100:
        c.fail(f"hostile phishing: a {len(mail['Subject'])}-character Subject: {mail['Subject']!r}")
    step(f"hostile: a phishing name to an unconfirmed address: only the confirmation mail; confirmed: {mail['Subject']!r}")
    return 1


def quota_burst(uploads, user: str, token: str, converters: list[str]) -> None:
    """With the converters frozen, one account sends more uploads at once
    than its in-flight quota: the quota holds (429 with Retry-After), and
    what it accepted is converted once the converters resume."""
    before = len(uploads.accepted)
    refused_before = uploads.refused.get(429, 0)
    subprocess.run(["podman", "pause", *converters], check=True, capture_output=True)
    try:
        # Read with the converters frozen: nothing in flight ends meanwhile.
        status, body = c.api("GET", "/api/v1/me", token)
        quota = json.loads(body)["quotas"]["jobs_in_flight"]
        burst = quota["limit"] - quota["used"] + 10
        threads = [threading.Thread(target=uploads.one, kwargs={"user": user}) for _ in range(burst)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = len(uploads.accepted) - before
        refused = uploads.refused.get(429, 0) - refused_before
        status, body = c.api("GET", "/api/v1/me", token)
        used = json.loads(body)["quotas"]["jobs_in_flight"]["used"]
        status, headers, answer = upload(token, f"over-{c.RUN}.mp4", b"\x00\x00\x00\x18ftypmp42" + c.RUN.encode(), "/api/v1/jobs")
    finally:
        subprocess.run(["podman", "unpause", *converters], check=True, capture_output=True)
    # Admissions take turns per account: the burst fills the quota exactly.
    if used != quota["limit"] or accepted != quota["limit"] - quota["used"]:
        c.fail(f"hostile quota: {accepted} of a burst of {burst} accepted, {used} jobs in flight after it; "
               f"the quota is {quota['limit']} and {quota['used']} were in flight before")
    if accepted + refused != burst:
        c.fail(f"hostile quota: of {burst} uploads {accepted} accepted and {refused} refused with 429")
    retry_after = headers.get("Retry-After") or headers.get("retry-after")
    if status != 429 or not retry_after or json.loads(answer)["error"]["code"] != "quota":
        c.fail(f"hostile quota: past the quota an upload answered {status} (Retry-After {retry_after}) {answer[:200]!r}")
    step(f"hostile: a burst of {burst} uploads by one account: {accepted} accepted, {refused} refused "
         f"(429, Retry-After {retry_after} s); quota {quota['limit']}, {quota['used']} in flight before")


class Stream(threading.Thread):
    """One GET /api/v1/events, opened once: its status, then the job states
    it reports while open."""

    def __init__(self, token: str):
        super().__init__(daemon=True)
        self.token = token
        self.status = None
        self.states: dict[str, str] = {}
        self.opened = threading.Event()
        self.stopped = threading.Event()

    def run(self):
        request = urllib.request.Request(f"{GW}/api/v1/events")
        request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                self.status = response.status
                self.opened.set()
                data = None
                for raw in response:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("data:"):
                        data = json.loads(line[5:])
                    elif not line and data:
                        self.states[data["job"]["id"]] = data["job"]["state"]
                        data = None
                    if self.stopped.is_set():
                        return
        except urllib.error.HTTPError as err:
            self.status = err.code
        except OSError:
            pass
        self.opened.set()


def stream_flood(uploads, user: str, token: str, other_token: str) -> None:
    """One token opens 40 live event streams: each gateway holds a few of
    them for the account and refuses the rest with 429; the open ones
    still see every job, and another user's job list stays quick."""
    streams = [Stream(token) for _ in range(40)]
    for stream in streams:
        stream.start()
    for stream in streams:
        stream.opened.wait(30)
    open_ = [s for s in streams if s.status == 200]
    refused = [s for s in streams if s.status == 429]
    gateways = len(pods("gateway"))
    before = len(uploads.accepted)
    for _ in range(3):
        uploads.one(user=user)
    jobs = uploads.accepted[before:]
    started = time.monotonic()
    status, _ = c.api("GET", "/api/v1/jobs?limit=20", other_token)
    listing_ms = (time.monotonic() - started) * 1000
    c.wait_for("the open streams seeing the new jobs done",
               lambda: all(all(s.states.get(j) == "done" for j in jobs) for s in open_), 120)
    for stream in streams:
        stream.stopped.set()
    if not open_ or len(open_) > 8 * gateways or len(open_) + len(refused) != len(streams):
        c.fail(f"hostile streams: of 40 streams {len(open_)} open, {len(refused)} refused, "
               f"{40 - len(open_) - len(refused)} neither; at most 8 per gateway ({gateways})")
    if status != 200:
        c.fail(f"hostile streams: another user's job list answered {status}")
    step(f"hostile: 40 streams on one token: {len(open_)} open, {len(refused)} refused (429); "
         f"each open one saw its 3 new jobs done; another user's job list took {listing_ms:.0f} ms")
