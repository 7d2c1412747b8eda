"""The system's fsck: compares the jobs, the stored files, the queues and the
mails sent, and says what is wrong.

usage: audit.py --mongodb-uri URI --amqp-url URL (--mail-api URL | --maildir DIR)
                [--expect-dead-letters N] [--videos-db videos] [--mp3s-db mp3s]
                [--queue-prefix P] [--json]

Problems it finds, one line each:
  - a job not in a final state (queued or converting)
  - a done job without its MP3 (no mp3_fid, or no such file)
  - two MP3s for one job, or two mails (of one kind) for one job
  - a stored video or MP3 that no job names, or chunks without a file (orphans)
  - a finished job whose user was never mailed (when the job asked for mail),
    and, when its message was dead-lettered, the command that replays it
    (`notification replay-dead-letters`)
  - messages left in `video` or `mp3`
  - more messages in the dead-letter queues than expected
Exits 1 when it finds any, 0 when all is well. With --json it prints the
counts as one JSON object last (for scripts/chaos).
"""
import collections
import email
import email.policy
import json
import pathlib
import re
import sys
import urllib.request

import pika
import pymongo

JOB_IN_MAIL = re.compile(r"/api/v1/jobs/([0-9a-f]{24})")
JOB_LINE = re.compile(r"Job: ([0-9a-f]{24})")
# Auth's account mails (confirm an address, reset a password): about no job.
ACCOUNT_SUBJECTS = ("Confirm your address", "Choose a new password")


def option(args: list, name: str, default: str | None = None) -> str | None:
    if name in args:
        return args[args.index(name) + 1]
    return default


def mail_listing(api: str) -> list[dict]:
    """Every message Mailpit (or scripts/smtp-catcher.py) holds, page by
    page: a listing answers 50 by default."""
    listing: list[dict] = []
    while True:
        url = f"{api}/api/v1/messages?start={len(listing)}&limit=500"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = json.load(response)
        listing += page["messages"]
        if not page["messages"] or len(listing) >= page["total"]:
            return listing


def job_mail_count(api: str) -> int:
    """How many of the messages are about jobs (not auth's account mails)."""
    return sum(1 for m in mail_listing(api) if not str(m.get("Subject", "")).startswith(ACCOUNT_SUBJECTS))


def mails(args: list) -> list[tuple[str, str, str]]:
    """(kind, job id, Message-ID) of every mail about a job: `ready` or
    `failed` (auth's account mails are not counted).
    The notification service sends at least once: a mail whose SMTP
    confirmation was lost is sent again with the same Message-ID, which a
    receiving system drops; two Message-IDs of one kind for one job are
    two different mails."""
    texts = []
    api = option(args, "--mail-api")
    if api:
        for message in mail_listing(api):
            with urllib.request.urlopen(f"{api}/api/v1/message/{message['ID']}/raw", timeout=10) as response:
                texts.append(response.read())
    else:
        texts = [path.read_bytes() for path in sorted(pathlib.Path(option(args, "--maildir")).glob("*.eml"))]
    found = []
    for raw in texts:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body else ""
        subject = str(message["Subject"] or "")
        if subject.startswith(ACCOUNT_SUBJECTS):
            continue
        kind = "failed" if subject.startswith("We could not") else "ready"
        job = JOB_IN_MAIL.search(text) or JOB_LINE.search(text)
        found.append((kind, job.group(1) if job else "?", str(message["Message-ID"] or "").strip()))
    return found


def dead_lettered(url: str, queue: str) -> list[tuple[dict, str]]:
    """The messages waiting in a dead-letter queue (body as JSON, reason),
    read and left in place."""
    found = []
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    try:
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            reason = (properties.headers or {}).get("x-failure-reason", "")
            try:
                found.append((json.loads(body), reason if isinstance(reason, str) else str(reason)))
            except ValueError:
                found.append(({}, reason))
    except pika.exceptions.ChannelClosedByBroker:
        pass  # never declared: nothing in it
    connection.close()  # unacked: all back in the queue
    return found


def queue_depths(url: str, names: list[str]) -> dict[str, int]:
    depths = {}
    connection = pika.BlockingConnection(pika.URLParameters(url))
    for name in names:
        channel = connection.channel()
        try:
            depths[name] = channel.queue_declare(queue=name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            depths[name] = 0  # never declared: nothing in it
    connection.close()
    return depths


def audit(args: list) -> tuple[list[str], dict]:
    client = pymongo.MongoClient(option(args, "--mongodb-uri"), serverSelectionTimeoutMS=10_000)
    videos_db = client[option(args, "--videos-db", "videos")]
    mp3s_db = client[option(args, "--mp3s-db", "mp3s")]
    jobs = list(videos_db["jobs"].find())
    video_files = {f["_id"] for f in videos_db["fs.files"].find({}, {"_id": 1})}
    mp3_files = list(mp3s_db["fs.files"].find({}, {"_id": 1, "metadata.job_id": 1}))
    # Chunks whose file document was never written (an upload cut off) or
    # is gone: space nobody can reach. An upload still being written shows
    # here too, so audit a quiet system.
    loose_chunks = {
        name: set(db["fs.chunks"].distinct("files_id")) - files
        for name, db, files in (("videos", videos_db, video_files), ("mp3s", mp3s_db, {f["_id"] for f in mp3_files}))
    }
    client.close()
    problems = []
    states = collections.Counter(job["state"] for job in jobs)
    job_ids = {job["_id"] for job in jobs}
    for job in jobs:
        if job["state"] not in ("done", "failed"):
            problems.append(f"job {job['_id']} is {job['state']}, not finished")
        if job["state"] == "done" and (not job.get("mp3_fid") or job["mp3_fid"] not in {f["_id"] for f in mp3_files}):
            problems.append(f"job {job['_id']} is done without its MP3")
    per_job = collections.Counter(str(f.get("metadata", {}).get("job_id")) for f in mp3_files)
    duplicates = [job for job, n in per_job.items() if n > 1]
    for job in duplicates:
        problems.append(f"job {job} has {per_job[job]} MP3s")
    named_videos = {job["video_fid"] for job in jobs}
    named_mp3s = {job.get("mp3_fid") for job in jobs}
    orphans = [f"video {fid}" for fid in video_files - named_videos]
    orphans += [f"MP3 {f['_id']}" for f in mp3_files if f["_id"] not in named_mp3s]
    for orphan in orphans:
        problems.append(f"{orphan} belongs to no job")
    for name, ids in loose_chunks.items():
        for fid in ids:
            problems.append(f"chunks of {name} file {fid} have no file (an upload cut off, never cleaned up)")
        orphans += [f"chunks of {name} file {fid}" for fid in ids]
    sent = mails(args)
    # One mail is one Message-ID; copies of it (sent again after a lost
    # confirmation) count once, as `resent`.
    distinct = {(kind, job, mid or f"#{n}") for n, (kind, job, mid) in enumerate(sent)}
    mail_counts = collections.Counter((kind, job) for kind, job, _ in distinct)
    resent = len(sent) - len(distinct)
    duplicate_mails = [key for key, n in mail_counts.items() if n > 1 and key[1] != "?"]
    for kind, job in duplicate_mails:
        problems.append(f"job {job} got {mail_counts[(kind, job)]} '{kind}' mails")
    prefix = option(args, "--queue-prefix", "")
    mail_queues = {"ready": f"{prefix}mp3.dlq", "failed": f"{prefix}notification.job-failed.dlq"}
    waiting = {
        (kind, str(body.get("job_id"))): (queue, reason)
        for kind, queue in mail_queues.items()
        for body, reason in dead_lettered(option(args, "--amqp-url"), queue)
    }
    unmailed = [
        job for job in jobs
        if job.get("notify_email", True) and job["state"] in ("done", "failed")
        and not mail_counts[("ready" if job["state"] == "done" else "failed", str(job["_id"]))]
    ]
    for job in unmailed:
        kind = "ready" if job["state"] == "done" else "failed"
        problem = f"job {job['_id']} is {job['state']}, and its user was never mailed"
        if (kind, str(job["_id"])) in waiting:
            queue, reason = waiting[(kind, str(job["_id"]))]
            problem += (f"; its message is dead-lettered in {queue} ({reason}): once the cause is fixed, "
                        "`notification replay-dead-letters` sends it")
        problems.append(problem)
    unknown_mails = [job for _, job, _ in sent if job != "?" and job not in {str(j) for j in job_ids}]
    queues = [f"{prefix}video", f"{prefix}mp3"]
    dead = [f"{prefix}video.dlq", f"{prefix}mp3.dlq", f"{prefix}notification.job-failed.dlq"]
    depths = queue_depths(option(args, "--amqp-url"), queues + dead)
    for queue in queues:
        if depths[queue]:
            problems.append(f"{depths[queue]} messages left in {queue}")
    dead_letters = sum(depths[queue] for queue in dead)
    expected = int(option(args, "--expect-dead-letters", "0"))
    if dead_letters > expected:
        problems.append(f"{dead_letters} dead letters ({', '.join(f'{q}={depths[q]}' for q in dead)}), {expected} expected")
    counts = {
        "jobs": len(jobs),
        "done": states["done"],
        "failed": states["failed"],
        "unfinished": len(jobs) - states["done"] - states["failed"],
        "lost": sum(1 for job in jobs if job["state"] == "done" and not job.get("mp3_fid")),
        "dup": len(duplicates) + len(duplicate_mails),
        "mails": len(distinct),
        "resent": resent,
        "unmailed": len(unmailed),
        "mails_for_unknown_jobs": len(unknown_mails),
        "orphans": len(orphans),
        "dead_letters": dead_letters,
        "left_in_queues": sum(depths[q] for q in queues),
    }
    return problems, counts


def main() -> None:
    args = sys.argv[1:]
    if not option(args, "--mongodb-uri") or not option(args, "--amqp-url") or not (
        option(args, "--mail-api") or option(args, "--maildir")
    ):
        sys.exit(__doc__)
    problems, counts = audit(args)
    for problem in problems:
        print(f"audit: {problem}")
    print(
        f"audit: jobs={counts['jobs']} done={counts['done']} failed={counts['failed']} "
        f"mails={counts['mails']} orphans={counts['orphans']} dead_letters={counts['dead_letters']}: "
        + ("all well" if not problems else f"{len(problems)} problems")
    )
    if "--json" in args:
        print(json.dumps(counts))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
