"""History pages of a large room: REST latency of the newest and of a deep page, and SQL queries per request.

Migrates a dedicated database (created if missing; by default `bench_history` on the local
PostgreSQL), seeds one room with --messages messages in one INSERT ... SELECT (skipped when
the room already holds them), starts a daphne on it and times --requests sequential
`GET /api/rooms/<slug>/messages/` on one keep-alive connection, for the newest page and for
a page near the start (`before` = an id near the first), with the server's CPU time per
request. It also counts the SQL queries of one request for each page, in this process,
through the whole Django stack:

    .venv/bin/python bench/history.py
    .venv/bin/python bench/history.py --messages 1000000 --requests 200 --explain

Prints one JSON line, then a table.
"""

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))  # run as a script: bench.common from the repository root
from bench.common import ensure_postgres_database, free_port, log, stop, wait_for_port  # noqa: E402
from chatproject.keys import setdefault_local_keys  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_history"
ROOM = "history-bench"
AUTHOR = "history-bench"


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    setdefault_local_keys(os.environ)  # and the daphne started later, which inherits them
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the in-memory layer: no Redis needed here
    import django

    django.setup()


# Seeding and counting: plain functions on the configured database (the tests use them too)


def seed_messages(
    room, author, count: int, *, body_sql: str = "'message ' || n", html_sql: str = "'<p>message ' || n || '</p>'"
) -> int:
    """Add messages to `room` until it holds `count`, in one INSERT ... SELECT; return how many were added.

    Bodies and their html are SQL expressions of the row number `n` (default `message <n>`, as
    `chat.markup` renders it). On PostgreSQL the rows come from generate_series, elsewhere from a
    recursive CTE. The table is analyzed afterwards, so the planner knows its size.
    """
    from django.db import connection
    from django.utils import timezone

    from chat.models import Message

    missing = count - Message.objects.filter(room=room).count()
    if missing <= 0:
        return 0
    table = Message._meta.db_table
    columns = (
        "room_id, author_id, body, kind, client_id, created_at, deleted, html, mentions, mentions_room, "
        "earlier_mentions, reactions, attachments, reply_count, seq"
    )
    # Each row takes the room's next change sequence value.
    values = (
        f"%s, %s, {body_sql}, 'user', '', %s, false, {html_sql}, '[]', false, '{{}}', '[]', '[]', 0, "
        f"{int(room.change_seq)} + n"
    )
    if connection.vendor == "postgresql":
        sql = f"INSERT INTO {table} ({columns}) SELECT {values} FROM generate_series(1, %s) AS n"
        params = [room.pk, author.pk, timezone.now(), missing]
    else:
        sql = (
            f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s) "
            f"INSERT INTO {table} ({columns}) SELECT {values} FROM seq"
        )
        params = [missing, room.pk, author.pk, timezone.now()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.execute(f"ANALYZE {table}")
    room.change_seq += missing
    room.save(update_fields=["change_seq"])
    return missing


def bench_room(count: int):
    """The bench room, its author (a member) and `count` messages in it: (room, author, added)."""
    from django.contrib.auth import get_user_model

    from chat.models import Membership, Room

    author, created = get_user_model().objects.get_or_create(username=AUTHOR)
    if created:
        author.set_unusable_password()
        author.save()
    room, _ = Room.objects.get_or_create(slug=ROOM, defaults={"name": ROOM, "created_by": author})
    Membership.objects.get_or_create(room=room, user=author, defaults={"role": Membership.Role.OWNER})
    return room, author, seed_messages(room, author, count)


def page_paths(room, limit: int) -> dict[str, str]:
    """Request paths of the newest page and of a page near the start of `room`'s history."""
    from chat.models import Message

    first = Message.objects.filter(room=room).order_by("id").values_list("id", flat=True).first()
    base = f"/api/rooms/{room.slug}/messages/?limit={limit}"
    return {"newest": base, "deep": f"{base}&before={first + 2 * limit}"}


def count_queries(user, path: str) -> tuple[int, list[str]]:
    """SQL queries (count and statements) of one authenticated GET of `path` through the Django stack."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import AccessToken

    client = APIClient(HTTP_HOST="127.0.0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.content[:300]!r}")
    return len(queries), [q["sql"] for q in queries.captured_queries]


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


# Timing through a real server


@contextlib.contextmanager
def daphne(database_url: str):
    """A daphne on `database_url`; yields its port and process id."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "chatproject.settings",
        "LOG_LEVEL": "WARNING",
        "PYTHONWARNINGS": "ignore::RuntimeWarning",
    }
    setdefault_local_keys(env)
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatproject.asgi:application"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, timeout=30, name="daphne")
        yield port, process.pid
    finally:
        stop(process, timeout=10)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_requests(
    port: int, token: str, path: str, count: int, limit: int, warmup: int = 10, pid: int | None = None
) -> dict:
    """Latency of `count` sequential GETs of `path` on one keep-alive connection, in ms.

    With the server's `pid`, also the server's CPU time per request: unlike latency, it
    hardly changes when other processes compete for the cores.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    times = []
    for i in range(warmup + count):
        if i == warmup and pid is not None:
            cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200 or len(json.loads(body)["results"]) != limit:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        if i >= warmup:
            times.append(elapsed)
    conn.close()
    times.sort()
    result = {
        "requests": count,
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "max_ms": round(times[-1], 2),
    }
    if pid is not None:
        result["server_cpu_ms"] = round((cpu_seconds(pid) - cpu_before) * 1000 / count, 2)
    return result


def table(result: dict) -> str:
    lines = [
        f"{result['messages']:,} messages in '{ROOM}' ({result['database']}), limit {result['limit']}",
        f"{'page':<8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cpu ms':>9}{'queries':>9}",
    ]
    for name in ("newest", "deep"):
        t = result[name]
        lines.append(
            f"{name:<8}{t['p50_ms']:>9}{t['p99_ms']:>9}{t['max_ms']:>9}{t['server_cpu_ms']:>9}{t['queries']:>9}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument("--limit", type=int, default=50, help="page size (the API's default)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each page's queries")
    args = parser.parse_args(argv)
    name = urlsplit(args.database_url).path.lstrip("/")
    if name == "test":
        parser.error("'test' is the test suite's database: give the bench its own (the default is bench_history)")
    if args.database_url.startswith(("postgres://", "postgresql://")):
        ensure_postgres_database(args.database_url)
    setup_django(args.database_url)
    from django.core.management import call_command
    from rest_framework_simplejwt.tokens import AccessToken

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    room, author, added = bench_room(args.messages)
    seed_seconds = round(time.monotonic() - started, 1)
    log(f"seeded {added} messages in {seed_seconds} s" if added else f"'{ROOM}' already holds {args.messages} messages")

    paths = page_paths(room, args.limit)
    result = {
        "tool": "history",
        "database": name,
        "messages": args.messages,
        "seeded": added,
        "seed_seconds": seed_seconds,
        "limit": args.limit,
    }
    for page, path in paths.items():
        queries, statements = count_queries(author, path)
        result[page] = {"path": path, "queries": queries}
        if args.explain:
            log(f"-- {page}: {path}")
            for sql in statements:
                log(f"{sql}\n{explain(sql)}\n")
    token = str(AccessToken.for_user(author))
    with daphne(args.database_url) as (port, pid):
        for page, path in paths.items():
            result[page].update(time_requests(port, token, path, args.requests, args.limit, pid=pid))
    print(json.dumps(result), flush=True)
    print(table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
