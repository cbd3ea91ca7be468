"""What the benchmark tools in bench/ share: logging, free ports, server processes, PostgreSQL databases, RSS,
the disk's commit time.

The tools run as scripts (`python bench/idle.py`); each puts the repository root on
sys.path before it imports this module as `bench.common`.
"""

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def log(*parts) -> None:
    """Print `parts` to stderr at once: progress, never mixed into the results on stdout."""
    print(*parts, file=sys.stderr, flush=True)


# Ports and server processes


def free_port(count: int = 1) -> int:
    """A free port on 127.0.0.1; with `count`, one whose next count-1 ports are free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if all(port_free(port + i) for i in range(1, count)):
            return port


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for_port(port: int, process: subprocess.Popen, timeout: float, name: str = "the server") -> None:
    """Return once 127.0.0.1:`port` accepts connections.

    Raises RuntimeError if `process` exits first or nothing listens within `timeout` seconds;
    the caller stops the process.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:g} s")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate `process` if it still runs; kill it if it has not exited after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_kib(pid: int) -> int:
    """Resident set size of process `pid` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# PostgreSQL databases


def ensure_postgres_database(url: str) -> None:
    """Create the database `url` names if it does not exist yet (connecting to `postgres` on the same server)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


@contextlib.contextmanager
def postgres_database(url: str):
    """A fresh database of its own (bench_<pid>) on the server `url` names; yields its URL, drops it at the end."""
    import psycopg

    name = f"bench_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The disk under the database


class CommitProbe:
    """While a scenario runs, a thread of its own commits a one-row insert every `interval`
    seconds on a connection of its own to the server's database, and times each commit: how
    long the disk takes to make a commit durable, beside the acknowledgements that wait for it.

    A SQLite database gets a probe file beside it, with the server's journal settings (the
    server holds the database's write lock); a PostgreSQL one, a table of its own.
    """

    def __init__(self, database_url: str, interval: float = 0.01):
        self.url, self.interval = database_url, interval
        self.seconds: list[float] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stopped.set()
        self._thread.join()

    def _connect(self):
        if self.url.startswith("sqlite:"):
            import sqlite3

            db = sqlite3.connect(Path(urlsplit(self.url).path).with_name("commit-probe.sqlite3"), isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE IF NOT EXISTS commit_probe (id INTEGER PRIMARY KEY, at REAL)")
            return db, "INSERT INTO commit_probe (at) VALUES (?)"
        import psycopg

        db = psycopg.connect(self.url, autocommit=True)
        db.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (id serial PRIMARY KEY, at double precision)")
        return db, "INSERT INTO bench_commit_probe (at) VALUES (%s)"

    def _run(self) -> None:
        db, insert = self._connect()
        try:
            while not self._stopped.wait(self.interval):
                started = time.perf_counter()
                db.execute(insert, (time.time(),))  # autocommit: each insert is a transaction
                self.seconds.append(time.perf_counter() - started)
        finally:
            db.close()

    def summary(self) -> dict:
        """The commits' count, median and longest (ms), and how many took over 20 ms."""
        if not self.seconds:
            return {}
        ms = sorted(s * 1000 for s in self.seconds)
        return {
            "commits": len(ms),
            "commit_p50_ms": round(ms[len(ms) // 2], 2),
            "commit_max_ms": round(ms[-1], 2),
            "commits_over_20ms": sum(1 for m in ms if m > 20),
        }
