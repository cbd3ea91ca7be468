"""Idle WebSocket connections: the server's memory per connection, and whether it grows under churn.

Starts one daphne of ours (embedded defaults: SQLite and the in-memory layer; or Redis and
PostgreSQL with --services), or attaches to a running one (--url and --pid). Opens N
authenticated connections (JWT from the REST login, a handful of accounts, all members of
one room), waits for every `hello`, and reads the server's RSS before and after:

    .venv/bin/python bench/idle.py --connections 10000
    .venv/bin/python bench/idle.py --connections 10000 --churn-seconds 600
    .venv/bin/python bench/idle.py --services --connections 10000
    .venv/bin/python bench/idle.py --url http://127.0.0.1:8000 --pid 1234 --connections 500

With --churn-seconds S, the N connections stay open while a slice of them is closed and
opened again every second; RSS is sampled every 10 s. Prints one JSON line, then a table.

An attached server must allow the connections: CHAT_MAX_CONNECTIONS at least N, and
CHAT_MAX_CONNECTIONS_PER_USER at least N / --accounts. Clients connect from several local
source addresses (127.0.0.1, 127.0.0.2, ...) so that ephemeral ports never run short.
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from websockets.asyncio.client import connect

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))  # run as a script: bench.common from the repository root
from bench.common import ensure_postgres_database, free_port, log, rss_kib, stop, wait_for_port  # noqa: E402
from chatproject.keys import setdefault_local_keys  # noqa: E402

ROOM = "idle-bench"
PASSWORD = "idle-bench-pass-7351"
TOKEN_MAX_AGE_S = 10 * 60  # log in again before a default 15-minute access token expires
SERVICES_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_idle"
SERVICES_REDIS_URL = "redis://127.0.0.1:6379/14"


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# The server


class Server:
    """One daphne process of ours, started with room for `connections` sockets."""

    def __init__(self, connections: int, accounts: int, services: bool, database_url: str, redis_url: str):
        self.workdir = tempfile.mkdtemp(prefix="idle-bench-")
        self.port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatproject.settings",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore::RuntimeWarning",
            "CHAT_MAX_CONNECTIONS": str(connections * 2 + 100),
            "CHAT_MAX_CONNECTIONS_PER_USER": str(connections * 2 // accounts + 100),
            "CHAT_LOGIN_RATE": "10000/min",
            "CHAT_REGISTER_RATE": "10000/min",
            "JWT_ACCESS_MINUTES": "1440",
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
        }  # as deploy/systemd runs it
        setdefault_local_keys(env)
        if services:
            ensure_postgres_database(database_url)
            env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, REDIS_PREFIX="benchidle")
        else:
            env.update(DATABASE_URL=f"sqlite:///{self.workdir}/db.sqlite3")
            env.pop("REDIS_URL", None)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=BASE_DIR, env=env, check=True)
        self.log = open(Path(self.workdir) / "daphne.log", "w+b")
        # `exec` keeps one process: its pid is daphne's, whose RSS is measured.
        command = (
            f"ulimit -n $(ulimit -Hn) && exec {sys.executable} -m daphne -b 127.0.0.1 -p {self.port} "
            "--ping-interval 20 --ping-timeout 30 chatproject.asgi:application"
        )
        self.process = subprocess.Popen(
            ["sh", "-c", command], cwd=BASE_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.pid = self.process.pid
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for_port(self.port, self.process, timeout=30, name="daphne")
        except RuntimeError as exc:
            output = self.output()  # before stop() closes the log
            self.stop()
            raise RuntimeError(f"{exc}:\n{output}") from None

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        stop(self.process)
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


# Accounts


def post_json(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Accounts:
    """`idlebench0..` accounts, registered on first use, members of ROOM; their access tokens, renewed as they age."""

    def __init__(self, http: str, count: int):
        self.http = http
        self.names = [f"idlebench{i}" for i in range(count)]
        self.tokens: dict[str, tuple[str, float]] = {}
        for name in self.names:
            self.token(name)
        token = self.token(self.names[0])
        post_json(f"{http}/api/rooms/", {"name": ROOM, "slug": ROOM, "kind": "public"}, token)  # 400 if it exists
        for name in self.names:
            status, body = post_json(f"{http}/api/rooms/{ROOM}/join/", {}, self.token(name))
            if status >= 300:
                raise RuntimeError(f"{name} could not join {ROOM}: {status} {body}")

    def token(self, name: str) -> str:
        if name in self.tokens and time.monotonic() - self.tokens[name][1] < TOKEN_MAX_AGE_S:
            return self.tokens[name][0]
        creds = {"username": name, "password": PASSWORD}
        status, body = post_json(f"{self.http}/api/auth/token/", creds)
        if status == 401:
            post_json(f"{self.http}/api/auth/register/", creds)
            status, body = post_json(f"{self.http}/api/auth/token/", creds)
        if status != 200:
            raise RuntimeError(f"login of {name} failed: {status} {body}")
        self.tokens[name] = (body["access"], time.monotonic())
        return body["access"]

    def for_slot(self, slot: int) -> str:
        return self.token(self.names[slot % len(self.names)])


# Connections


class Pool:
    """N client connections in numbered slots, each opened from one of several local source addresses."""

    def __init__(self, ws_url: str, accounts: Accounts, sources: list[str], timeout: float):
        self.ws_url = ws_url
        self.accounts = accounts
        self.sources = sources
        self.timeout = timeout
        self.slots: dict[int, object] = {}
        self.failures: list[str] = []

    async def open(self, slot: int) -> bool:
        """Open the connection of `slot` and read frames until `hello`; False (and a recorded failure) otherwise."""
        url = f"{self.ws_url}/ws/chat/?token={self.accounts.for_slot(slot)}"
        source = self.sources[slot % len(self.sources)]
        try:
            async with asyncio.timeout(self.timeout):
                ws = await connect(
                    url,
                    ping_interval=None,
                    compression=None,
                    open_timeout=None,
                    close_timeout=5,
                    max_queue=64,
                    local_addr=(source, 0),
                )
                while json.loads(await ws.recv()).get("type") != "hello":
                    pass
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return False
        self.slots[slot] = ws
        return True

    async def close(self, slot: int) -> None:
        ws = self.slots.pop(slot, None)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def open_many(self, slots, batch: int) -> int:
        """Open `slots` `batch` at a time; the number that got `hello`."""
        slots = list(slots)
        opened = 0
        for start in range(0, len(slots), batch):
            results = await asyncio.gather(*(self.open(s) for s in slots[start : start + batch]))
            opened += sum(results)
            if start // batch % 10 == 9:
                log(f"  {len(self.slots)} open")
        return opened

    async def close_many(self, slots) -> None:
        await asyncio.gather(*(self.close(s) for s in list(slots)))


async def churn(pool: Pool, pid: int, seconds: float, per_second: int, batch: int, sample_every: float) -> dict:
    """Keep the open connections open while closing and reopening `per_second` of them every second; RSS samples.

    Only slots open at the start take part, so that slots whose first connection failed
    do not fill up during the churn and pass for growth.
    """
    slots = sorted(pool.slots)
    pool.failures.clear()
    start = time.monotonic()
    samples = [(0.0, rss_kib(pid))]
    next_sample = start + sample_every
    reopened = failed = 0
    cursor = 0
    while time.monotonic() - start < seconds:
        tick = time.monotonic()
        slice_ = [slots[(cursor + i) % len(slots)] for i in range(min(per_second, len(slots)))]
        cursor = (cursor + per_second) % len(slots)
        await pool.close_many(slice_)
        ok = await pool.open_many(slice_, batch)
        reopened += ok
        failed += len(slice_) - ok
        now = time.monotonic()
        if now >= next_sample:
            samples.append((round(now - start, 1), rss_kib(pid)))
            log(f"  churn {now - start:5.0f} s: RSS {samples[-1][1]} KiB, {len(pool.slots)} open, {failed} failed")
            next_sample += sample_every
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    elapsed = time.monotonic() - start
    samples.append((round(elapsed, 1), rss_kib(pid)))
    values = [kib for _, kib in samples]
    half = [kib for t, kib in samples if t >= elapsed / 2]
    return {
        "seconds": round(elapsed, 1),
        "per_second": per_second,
        "reopened": reopened,
        "failed": failed,
        "reopened_per_second": round(reopened / elapsed, 1),
        "failures": sorted(set(pool.failures))[:5],
        "rss_start_kib": values[0],
        "rss_end_kib": values[-1],
        "rss_max_kib": max(values),
        "growth_kib": values[-1] - values[0],
        "growth_second_half_kib": half[-1] - half[0],
        "samples": samples,
    }


async def measure(args, http: str, pid: int) -> dict:
    ws_url = "ws" + http[len("http") :]
    accounts = Accounts(http, args.accounts)
    sources = [f"127.0.0.{i + 1}" for i in range(args.sources)]
    pool = Pool(ws_url, accounts, sources, args.timeout)

    # Warm-up: the first connections load code and fill caches; that is not per-connection memory.
    warm = range(args.connections, args.connections + min(args.warmup, args.connections))
    await pool.open_many(warm, args.batch)
    await pool.close_many(warm)
    pool.failures.clear()
    await asyncio.sleep(args.settle)

    before = rss_kib(pid)
    log(f"RSS before: {before} KiB; opening {args.connections} connections")
    started = time.monotonic()
    opened = await pool.open_many(range(args.connections), args.batch)
    open_seconds = time.monotonic() - started
    await asyncio.sleep(args.settle)
    after = rss_kib(pid)
    log(f"RSS after: {after} KiB with {opened} open")
    result = {
        "connections": args.connections,
        "opened": opened,
        "hello": opened,
        "failed": args.connections - opened,
        "failures": sorted(set(pool.failures))[:5],
        "open_seconds": round(open_seconds, 1),
        "connects_per_second": round(opened / open_seconds, 1) if open_seconds else None,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / opened, 2) if opened else None,
    }
    if args.churn_seconds:
        per_second = args.churn_per_second or max(1, args.connections // 200)
        result["churn"] = await churn(pool, pid, args.churn_seconds, per_second, args.batch, args.sample_every)
    await pool.close_many(list(pool.slots))
    return result


def table(result: dict) -> str:
    rows = [
        ("server", result["server"]),
        ("connections with hello", f"{result['opened']} of {result['connections']} ({result['open_seconds']} s)"),
        ("RSS before / after", f"{result['rss_before_kib']:,} / {result['rss_after_kib']:,} KiB"),
        ("per connection", f"{result['kib_per_connection']} KiB"),
    ]
    if "churn" in result:
        c = result["churn"]
        rows += [
            (
                "churn",
                f"{c['seconds']} s, {c['reopened']} reopened ({c['reopened_per_second']}/s), {c['failed']} failed",
            ),
            ("RSS start / end / max", f"{c['rss_start_kib']:,} / {c['rss_end_kib']:,} / {c['rss_max_kib']:,} KiB"),
            ("growth (second half)", f"{c['growth_kib']:,} KiB ({c['growth_second_half_kib']:,} KiB)"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", "-n", type=int, default=10000)
    parser.add_argument("--accounts", type=int, default=5, help="accounts the connections are spread over")
    parser.add_argument("--url", help="attach to this server (http://host:port) instead of starting one")
    parser.add_argument("--pid", type=int, help="the attached server's process id (for its RSS)")
    parser.add_argument("--services", action="store_true", help="start the server on Redis and PostgreSQL")
    parser.add_argument("--database-url", default=SERVICES_DATABASE_URL, help="with --services")
    parser.add_argument("--redis-url", default=SERVICES_REDIS_URL, help="with --services")
    parser.add_argument("--batch", type=int, default=200, help="connections opened at once")
    parser.add_argument("--warmup", type=int, default=200, help="connections opened and closed before measuring")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before reading RSS")
    parser.add_argument("--sources", type=int, default=4, help="local source addresses 127.0.0.1..")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for one connection to get hello")
    parser.add_argument("--churn-seconds", type=float, default=0)
    parser.add_argument("--churn-per-second", type=int, default=0, help="default: 0.5%% of the connections")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS samples in churn")
    args = parser.parse_args(argv)
    if args.url and not args.pid:
        parser.error("--url needs --pid: the server's RSS is what is measured")
    # Stopped from a background job (SIGINT ignored) or by SIGTERM: still stop the server it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    fd_limit = raise_fd_limit()
    if fd_limit < args.connections + args.warmup + 100:
        log(f"warning: the open-file limit is {fd_limit}, short of {args.connections} connections")

    server = None
    try:
        if args.url:
            http, pid, name = args.url.rstrip("/"), args.pid, f"attached {args.url} (pid {args.pid})"
        else:
            server = Server(args.connections, args.accounts, args.services, args.database_url, args.redis_url)
            http, pid = server.url, server.pid
            name = "daphne on PostgreSQL + Redis" if args.services else "daphne on SQLite + in-memory layer"
        result = {"tool": "idle", "server": name, **asyncio.run(measure(args, http, pid))}
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(result), flush=True)
    print(table(result), flush=True)
    return 0 if result["failed"] == 0 and not result.get("churn", {}).get("failed") else 1


if __name__ == "__main__":
    sys.exit(main())
