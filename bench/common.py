"""What the benchmark tools in bench/ share: logging, free ports, server processes, PostgreSQL databases, RSS.

The tools run as scripts (`python bench/idle.py`); each puts the repository root on
sys.path before it imports this module as `bench.common`.
"""
import contextlib
import os
import socket
import subprocess
import sys
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
