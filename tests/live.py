"""Real servers for live tests: daphne subprocesses on free local ports, sharing the test database.

Use inside a test that has the `transactional_db` fixture, so that what the test writes is
committed and the server sees it:

    with run_daphne() as server:
        ...  # server.url == "http://127.0.0.1:<port>", server.ws_url == "ws://127.0.0.1:<port>"

The server's output is kept and shown if it fails to start; `server.output()` reads it later.

For tests that talk to servers over real sockets: module-scoped fixtures `daphne_a` and
`daphne_b` (a second process on the same Redis and database; needs `redis_url`), the
`redis_url` fixture (fails without REDIS_URL; conftest deselects its tests then, unless
CHAT_REQUIRE_SERVICES=1), and `http_json()`. `tests.support.ws_connect` opens the test client
on a real socket to one of them. tests/conftest.py registers this module as a plugin, so the
fixtures are everywhere.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

import pytest
from django.conf import settings
from django.db import connection

from tests.support import access_token

BASE_DIR = Path(__file__).resolve().parent.parent
DAPHNE = [sys.executable, "-m", "daphne"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(settings_dict: dict | None = None) -> str:
    """A DATABASE_URL naming the database this process uses (the test database, under pytest-django)."""
    db = settings_dict or connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if db["ENGINE"].endswith("postgresql"):
        auth = quote(db.get("USER") or "", safe="")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"], safe="")
        host = db.get("HOST") or "127.0.0.1"
        port = f":{db['PORT']}" if db.get("PORT") else ""
        return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{quote(db['NAME'], safe='')}"
    raise RuntimeError(f"Live tests cannot pass a {db['ENGINE']} database to a subprocess.")


@dataclass
class Endpoint:
    """Where a server listens, as `tests.support.ws_connect` and `http_json` see it."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@dataclass
class LiveServer(Endpoint):
    process: subprocess.Popen
    log: object

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        self.terminate()
        self.reap()

    def terminate(self) -> None:
        """SIGTERM, if still running: daphne closes its sockets with 1001 and exits."""
        if self.process.poll() is None:
            self.process.terminate()

    def reap(self) -> None:
        """Wait for the exit, killing a server that takes over 10 s."""
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with code {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"daphne did not listen on port {port} within {timeout} s")


def start_daphne(
    env: dict | None = None, *, port: int | None = None, timeout: float = 30.0, args: list[str] | None = None
) -> LiveServer:
    """Start daphne with the test database (and `env` on top); return once it accepts.

    `port` restarts a server where its clients expect it; by default a free one is picked.
    `args` are extra daphne options, such as `["--ping-interval", "1"]`.
    """
    port = port or free_port()
    # The server shares the rate-limit counters (the Redis cache) with this process, so it also
    # takes the test's limit: messages a test seeds must not count against its browser sends.
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatproject.settings",
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
        "CHAT_RATE_PER_10S": str(settings.CHAT_RATE_PER_10S),
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        **(env or {}),
    }
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [*DAPHNE, "-b", "127.0.0.1", "-p", str(port), *(args or []), "chatproject.asgi:application"],
        cwd=BASE_DIR,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = LiveServer(port, process, log)
    try:
        wait_for_port(port, process, timeout)
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(f"{exc}; its output:\n{server.output()}") from None
    return server


@contextlib.contextmanager
def run_daphne(
    env: dict | None = None, *, port: int | None = None, timeout: float = 30.0, args: list[str] | None = None
):
    """`start_daphne` as a context manager that terminates the server at the end."""
    server = start_daphne(env, port=port, timeout=timeout, args=args)
    try:
        yield server
    finally:
        server.stop()
        server.log.close()


# Fixtures

# Clients in live tests send as fast as the test wants; a per-user connection limit a test can reach.
LIVE_ENV = {"CHAT_RATE_PER_10S": "100000", "CHAT_MAX_CONNECTIONS_PER_USER": "5"}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """REDIS_URL, for tests that need a real Redis. conftest deselects them without it; under
    CHAT_REQUIRE_SERVICES=1 (CI) they run and fail, so a missing service never passes as green."""
    url = os.environ.get("REDIS_URL", "")
    if not url:  # without CHAT_REQUIRE_SERVICES=1, conftest deselects these tests instead
        pytest.fail("set REDIS_URL: this test needs a real Redis")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"REDIS_URL={url} is set but Redis does not answer: {exc}")
    return url


@pytest.fixture(scope="module")
def daphne_a(django_db_setup):
    """A daphne on the test database, for the whole module (on Redis when REDIS_URL is set).

    Tests still need `transactional_db`: the data they create must be committed to be seen.
    """
    with run_daphne(LIVE_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def daphne_b(redis_url, daphne_a):
    """A second daphne process, sharing Redis (channel layer, presence, cache) and the database with `daphne_a`."""
    with run_daphne({**LIVE_ENV, "REDIS_URL": redis_url}) as server:
        yield server


def http_json(server: LiveServer, method: str, path: str, data=None, *, user=None) -> tuple[int, dict]:
    """(status, decoded body) of one JSON request to `server`, as `user` (JWT) or anonymous. Blocking."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if user is not None:
        headers["Authorization"] = f"Bearer {access_token(user)}"
    body = None if data is None else json.dumps(data).encode()
    request = Request(server.url + path, data=body, headers=headers, method=method)
    try:
        with urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
