"""Search latency: `GET /api/search/` over a room of 1,000,000 mixed English and Chinese messages.

Migrates a dedicated database (created if missing; by default `bench_search` on the local
PostgreSQL; a `sqlite:///path` URL for SQLite), bulk-loads one room in one INSERT ... SELECT
run by the database itself (the search index dropped first and built once afterwards on
PostgreSQL; on SQLite the triggers fill the FTS5 table as the rows go in), starts a daphne on it
and times --requests sequential searches per query on one keep-alive connection. It also counts
the SQL queries of one request per query through the whole Django stack:

    .venv/bin/python bench/search.py
    .venv/bin/python bench/search.py --database-url sqlite:////tmp/bench_search.sqlite3 --explain

Prints one JSON line, then a table.
"""

import argparse
import http.client
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))  # run as a script: bench.common from the repository root
from bench.common import ensure_postgres_database, log  # noqa: E402
from bench.history import count_queries, daphne, explain, seed_messages, setup_django  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_search"
ROOM = "search-bench"
AUTHOR = "search-bench"

# Ten bodies in turn (n % 10), each followed by its number; words of the queries below spread
# as a real room's would: "meeting" in 30% of messages, "中文" in 20%, "release notes" in 10%,
# "budget review" in 0.1%, "zebra" and "大熊猫" in 10 messages of a million.
BODIES = [
    "see you at the meeting tomorrow",
    "我们明天开会讨论中文消息的搜索",
    "the release notes are ready for review",
    "今天天气很好，我们去公园散步吧",
    "can someone review my pull request",
    "中文输入法在新版本里更快了",
    "the meeting moved to thursday afternoon",
    "请把会议记录发到群里",
    "lunch after the meeting anyone",
    "deploy finished without errors",
]
QUERIES = {
    "common word": "meeting",
    "two common words": "meeting tomorrow",
    "rare word": "zebra",
    "phrase": '"release notes"',
    "rare phrase": '"budget review"',
    "Chinese, 3 chars, rare": "大熊猫",
    "common word -word": "meeting -lunch",
    "two that never meet": "meeting deploy",
    "Chinese, 2 chars, common": "中文",
    "Chinese, 2 chars, rare": "熊猫",
    "Chinese, 4 chars": "中文消息",
}


def body_sql() -> str:
    cases = " ".join(f"WHEN {i} THEN '{body}'" for i, body in enumerate(BODIES))
    return (
        f"(CASE n %% 10 {cases} END) || ' ' || n"
        " || (CASE WHEN n %% 1000 = 3 THEN ' budget review' ELSE '' END)"
        " || (CASE WHEN n %% 100000 = 77 THEN ' zebra 大熊猫' ELSE '' END)"
    )


def seed(room, author, count: int) -> int:
    """Fill `room` up to `count` messages; return how many were added. On PostgreSQL the search
    indexes are dropped for the load and built again after it, which is much faster."""
    from django.db import connection

    # The indexes (and the word list's triggers) the search migrations build.
    migrations = [importlib.import_module(f"chat.migrations.{name}") for name in ("0009_search", "0010_search_words")]
    from chat.models import Message

    if Message.objects.filter(room=room).count() >= count:
        return 0
    postgresql = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        for migration in reversed(migrations) if postgresql else ():
            for sql in migration.POSTGRESQL_REVERSE:
                cursor.execute(sql)
        added = seed_messages(room, author, count, body_sql=body_sql(), html_sql="''")
        for migration in migrations if postgresql else ():
            for sql in migration.POSTGRESQL:
                cursor.execute(sql)
    return added


def bench_room(count: int):
    from django.contrib.auth import get_user_model

    from chat.models import Membership, Room

    author, created = get_user_model().objects.get_or_create(username=AUTHOR)
    if created:
        author.set_unusable_password()
        author.save()
    room, _ = Room.objects.get_or_create(slug=ROOM, defaults={"name": ROOM, "created_by": author})
    Membership.objects.get_or_create(room=room, user=author, defaults={"role": Membership.Role.OWNER})
    return room, author, seed(room, author, count)


def time_search(port: int, token: str, path: str, count: int, warmup: int = 5) -> dict:
    """Latency of `count` sequential GETs of `path` on one keep-alive connection, in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    times, found = [], 0
    for i in range(warmup + count):
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        found = len(json.loads(body)["results"])
        if i >= warmup:
            times.append(elapsed)
    conn.close()
    times.sort()
    return {
        "results": found,
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100, help="timed requests per query")
    parser.add_argument("--limit", type=int, default=20, help="page size (the API's default)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each search's queries")
    args = parser.parse_args(argv)
    name = urlsplit(args.database_url).path.lstrip("/")
    if name == "test":
        parser.error("'test' is the test suite's database: give the bench its own")
    if args.database_url.startswith(("postgres://", "postgresql://")):
        ensure_postgres_database(args.database_url)
    setup_django(args.database_url)
    from django.core.management import call_command
    from django.db import connection
    from rest_framework_simplejwt.tokens import AccessToken

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    room, author, added = bench_room(args.messages)
    seed_seconds = round(time.monotonic() - started, 1)
    log(f"seeded {added} messages in {seed_seconds} s" if added else f"'{ROOM}' already holds them")
    result = {"tool": "search", "database": connection.vendor, "messages": args.messages, "seed_seconds": seed_seconds}
    paths = {label: f"/api/search/?q={quote(q)}&limit={args.limit}" for label, q in QUERIES.items()}
    for label, path in paths.items():
        queries, statements = count_queries(author, path)
        result[label] = {"q": QUERIES[label], "queries": queries}
        if args.explain:
            log(f"-- {label}: {path}")
            for sql in statements:
                if "chat_message" in sql:
                    log(f"{sql}\n{explain(sql)}\n")
    token = str(AccessToken.for_user(author))
    with daphne(args.database_url) as (port, _pid):
        for label, path in paths.items():
            result[label].update(time_search(port, token, path, args.requests))
    print(json.dumps(result, ensure_ascii=False), flush=True)
    print(f"{args.messages:,} messages ({connection.vendor}), limit {args.limit}")
    print(f"{'query':<26}{'results':>8}{'p50 ms':>9}{'p99 ms':>9}{'queries':>9}")
    for label in QUERIES:
        r = result[label]
        print(f"{label:<26}{r['results']:>8}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['queries']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
