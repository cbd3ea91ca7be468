"""Uploads beside message delivery: does a burst of large uploads hold back the messages of the
same daphne process, and how much memory does the process take for it?

One real daphne on a fresh SQLite database (or --database-url). A sender and a receiver in one room
exchange a message every 20 ms; the delivery time (send to the receiver's `message.new`) is
measured first alone, then while N clients each upload files of SIZE bytes, one after another, to
the same process. Prints a JSON result (p50/p99 delivery with and without uploads, uploads done,
their throughput, the server's peak RSS) and a markdown table: bench/README.md, item 28.

    python bench/uploads.py [--uploaders 10] [--size-mib 25] [--seconds 15]
"""

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))  # run as a script: bench.common from the repository root
from bench.common import log, rss_kib  # noqa: E402
from bench.history import daphne, setup_django  # noqa: E402

PERIOD_S = 0.02


def seed():
    """Alice (sender and uploader), Bob (receiver) in room `bench`; their access tokens."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework_simplejwt.tokens import AccessToken

    from chat import services

    call_command("migrate", verbosity=0)
    users = get_user_model()
    alice = users.objects.create_user("alice", password="bench-password-1")
    bob = users.objects.create_user("bob", password="bench-password-1")
    services.room_create(user=alice, name="Bench", slug="bench")
    services.room_join(user=bob, slug="bench")
    return str(AccessToken.for_user(alice)), str(AccessToken.for_user(bob))


def upload_loop(port: int, token: str, size: int, stop, done, errors) -> None:
    """Upload a file of `size` random bytes again and again until `stop`; streams it from memory.
    Runs in a process of its own, so that the uploaders never take the measuring loop's GIL."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    content = os.urandom(size)
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            connection.putrequest("POST", "/api/rooms/bench/uploads/")
            connection.putheader("Authorization", f"Bearer {token}")
            connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            connection.putheader("Content-Length", str(len(head) + size + len(tail)))
            connection.endheaders()
            connection.send(head)
            view = memoryview(content)
            for offset in range(0, size, 1 << 20):
                connection.send(view[offset : offset + (1 << 20)])
            connection.send(tail)
            response = connection.getresponse()
            response.read()
            with (done if response.status == 201 else errors).get_lock():
                (done if response.status == 201 else errors).value += 1
        except OSError:
            with errors.get_lock():
                errors.value += 1
        finally:
            connection.close()


async def deliveries(port: int, sender: str, receiver: str, seconds: float) -> list[float]:
    """Delivery times (ms) of messages sent every PERIOD_S for `seconds`."""
    import websockets

    url = f"ws://127.0.0.1:{port}/ws/chat/?token="
    sent: dict[str, float] = {}
    times: list[float] = []
    async with websockets.connect(url + sender) as a, websockets.connect(url + receiver) as b:
        for ws in (a, b):
            await ws.send(json.dumps({"type": "join", "room": "bench"}))

        async def receive():
            async for text in b:
                frame = json.loads(text)
                if frame.get("type") == "message.new" and frame["message"]["client_id"] in sent:
                    times.append((time.perf_counter() - sent.pop(frame["message"]["client_id"])) * 1000)

        async def drain():
            async for _ in a:
                pass

        tasks = [asyncio.create_task(receive()), asyncio.create_task(drain())]
        await asyncio.sleep(1)  # both joined
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            client_id = uuid.uuid4().hex
            sent[client_id] = time.perf_counter()
            await a.send(json.dumps({"type": "message.send", "room": "bench", "body": "ping", "client_id": client_id}))
            await asyncio.sleep(PERIOD_S)
        await asyncio.sleep(2)
        for task in tasks:
            task.cancel()
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1) if ordered else float("nan")


def summary(times: list[float]) -> dict:
    return {"messages": len(times), "p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99),
            "max_ms": round(max(times), 1) if times else None, "mean_ms": round(statistics.fmean(times), 1) if times else None}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploaders", type=int, default=10)
    parser.add_argument("--size-mib", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--files-dir",
        default="",
        help="where the server's upload temporary files and MEDIA_ROOT go (default: beside the database)",
    )
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-uploads-")
    database_url = args.database_url or f"sqlite:///{work}/db.sqlite3"
    files = tempfile.mkdtemp(prefix="bench-uploads-files-", dir=args.files_dir or work)
    os.environ["MEDIA_ROOT"] = f"{files}/media"
    os.environ["TMPDIR"] = files  # the server's (daphne inherits it): Twisted's and Django's temporary files
    os.environ.setdefault("CHAT_RATE_PER_10S", "100000")
    os.environ.setdefault("CHAT_WRITE_RATES", "")
    setup_django(database_url)
    sender, receiver = seed()
    size = args.size_mib * 1024 * 1024
    result = {
        "tool": "uploads",
        "uploaders": args.uploaders,
        "size_mib": args.size_mib,
        "seconds": args.seconds,
        "files_dir": args.files_dir or "beside the database",
    }
    with daphne(database_url) as (port, pid):
        baseline_rss = rss_kib(pid)
        result["alone"] = summary(asyncio.run(deliveries(port, sender, receiver, args.seconds)))
        log("alone:", result["alone"])
        stop, done, errors, peak = multiprocessing.Event(), multiprocessing.Value("i"), multiprocessing.Value("i"), [0]
        peak[0] = rss_kib(pid)

        def sample():
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    peak[0] = max(peak[0], rss_kib(pid))
                time.sleep(0.05)

        threads = [threading.Thread(target=sample, daemon=True)] + [
            multiprocessing.Process(target=upload_loop, args=(port, sender, size, stop, done, errors), daemon=True)
            for _ in range(args.uploaders)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1)  # the uploads under way
        started = time.perf_counter()
        result["with_uploads"] = summary(asyncio.run(deliveries(port, sender, receiver, args.seconds)))
        elapsed = time.perf_counter() - started
        uploaded = done.value
        stop.set()
        for thread in threads:
            thread.join(300)
        result.update(
            uploads_during=uploaded,
            uploads_total=done.value,
            upload_errors=errors.value,
            upload_mib_per_s=round(uploaded * args.size_mib / elapsed, 1),
            rss_start_mib=round(baseline_rss / 1024),
            rss_peak_mib=round(peak[0] / 1024),
        )
        log("with uploads:", result["with_uploads"])
    print(json.dumps(result))
    print(table(result))
    return 0


def table(result: dict) -> str:
    rows = ["| delivery | messages | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for name, label in (
        ("alone", "alone"),
        ("with_uploads", f"{result['uploaders']} uploads of {result['size_mib']} MiB"),
    ):
        data = result[name]
        rows.append(f"| {label} | {data['messages']} | {data['p50_ms']} | {data['p99_ms']} | {data['max_ms']} |")
    rows.append(
        f"\nUploads stored while measured: {result['uploads_during']} ({result['upload_mib_per_s']} MiB/s); "
        f"daphne RSS {result['rss_start_mib']} MiB at start, {result['rss_peak_mib']} MiB at peak."
    )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
