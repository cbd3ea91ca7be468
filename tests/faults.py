"""Fault injection for live tests: a private Redis to kill and restart, a TCP proxy to cut the
database off, and checks of what the clients end up holding.

- `PrivateRedis`: a redis-server of the test's own on a free port (never the shared one):
  `stop()` kills it (SIGKILL, nothing saved), `start()` brings back an empty one on the same port.
- `TcpProxy`: forwards a local port to PostgreSQL; `cut()` drops every connection and refuses
  new ones until `restore()`. A daphne whose DATABASE_URL points at it loses its database
  while the test process keeps talking to PostgreSQL directly.
- `assert_views_match_db`: the issue's invariant, every client (tests/reconnecting.py's
  `ReconnectingClient`) holds exactly the database's sequence of the room;
  `assert_acks_in_db`: every acknowledged send is stored once.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from chat.models import Message
from tests.live import LiveServer, database_url, free_port, start_daphne
from tests.reconnecting import REPLY_TIMEOUT_S, ReconnectingClient

REDIS_SERVER = "/usr/bin/redis-server"

# Daphnes in fault tests: clients send as fast as the test wants, presence beats every second
# (a SIGKILLed process's users go offline within 4 beats), Redis is checked every second.
FAULT_ENV = {
    "CHAT_RATE_PER_10S": "100000",
    "CHAT_MAX_CONNECTIONS_PER_USER": "1000",
    "CHAT_LOGIN_RATE": "100000/min",
    "CHAT_REGISTER_RATE": "100000/min",
    "CHAT_HEARTBEAT_S": "1",
    "CHAT_LAYER_CHECK_S": "1",
}


def missing(reason: str):
    """Fail: a test that cannot run proves nothing (conftest deselects those a run lacks a service for)."""
    pytest.fail(reason)


def require_postgres() -> None:
    if not connection.settings_dict["ENGINE"].endswith("postgresql"):
        missing("needs PostgreSQL (set DATABASE_URL=postgres://...): SQLite has no server to cut off")


# Private Redis


class PrivateRedis:
    """A redis-server of this test's own, on a free port, with no persistence: a restart empties it."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="fault-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 5.0) -> None:
        """Start on the same port as before; return once it answers PING."""
        import redis

        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGKILL: no shutdown, no save; every client connection breaks at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis():
    """A `PrivateRedis`, running; always killed at teardown."""
    if not os.access(REDIS_SERVER, os.X_OK):
        missing(f"needs {REDIS_SERVER} to run a private Redis")
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# TCP proxy


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`, in threads (independent of the test's event loop).

    `cut()` closes every open connection and, until `restore()`, closes new ones as soon as
    they are accepted: to a client, the server is unreachable.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_cut = False
        self.refused = 0  # connections closed while cut
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_forever, daemon=True, name="tcp-proxy").start()

    def cut(self) -> None:
        with self._lock:
            self.is_cut = True
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self.is_cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self.listener)

    def _accept_forever(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self.is_cut:
                    self.refused += 1
                    _close(client)
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self.is_cut:  # cut while connecting
                    _close(client), _close(upstream)
                    continue
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {source, sink}
            _close(source), _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def database_url_via(proxy: TcpProxy) -> str:
    """The test database's DATABASE_URL, reached through `proxy`."""
    return database_url({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": str(proxy.port)})


@pytest.fixture
def pg_proxy():
    """A `TcpProxy` in front of the test's PostgreSQL (fails on SQLite; tests marked `postgres` are deselected there)."""
    require_postgres()
    db = connection.settings_dict
    proxy = TcpProxy((db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)))
    yield proxy
    proxy.close()


# Daphnes


@contextlib.contextmanager
def daphnes(count: int, env: dict | None = None, args: list[str] | None = None):
    """`count` daphne processes on the test database with FAULT_ENV (and `env`), started in
    parallel; each is terminated at the end (killed if it doesn't stop). If the test fails,
    the end of each server's output is printed."""
    full_env = {"DATABASE_URL": database_url(), **FAULT_ENV, **(env or {})}
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start_daphne, full_env, args=args) for _ in range(count)]
    servers = [future.result() for future in futures if future.exception() is None]
    try:
        for future in futures:
            future.result()  # raises if one did not start
        yield servers
    except BaseException:
        for server in servers:
            print(f"--- daphne on port {server.port}, last lines:\n{output_tail(server)}")
        raise
    finally:
        stop_servers(servers)


def stop_servers(servers: list[LiveServer]) -> None:
    """Stop them all at once, not one after another."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.reap()
        server.log.close()


def output_tail(server: LiveServer, lines: int = 40) -> str:
    """The end of a server's output, for failure messages."""
    return "\n".join(server.output().splitlines()[-lines:])


# Database


def _room_ids(slug: str) -> list[int]:
    return list(Message.objects.filter(room__slug=slug).order_by("id").values_list("id", flat=True))


room_ids = database_sync_to_async(_room_ids)


@database_sync_to_async
def ids_by_client_id(client_ids) -> dict[str, list[int]]:
    """For each client_id: the ids of the messages that carry it (at most one is right)."""
    found = defaultdict(list)
    rows = Message.objects.filter(client_id__in=list(client_ids)).order_by("id").values_list("client_id", "id")
    for cid, mid in rows:
        found[cid].append(mid)
    return found


# What the clients hold


async def assert_views_match_db(clients: list[ReconnectingClient], room: str, timeout: float = 5.0) -> list[int]:
    """Every client's de-duplicated, id-ordered view of `room` equals the database's sequence.

    Messages still on their way get `timeout` seconds to arrive; returns the database's ids.
    """
    deadline = time.monotonic() + timeout
    while True:
        expected = await room_ids(room)
        wrong = [c for c in clients if sorted(c.view[room]) != expected]
        if not wrong or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    report = []
    for client in wrong:
        held = set(client.view[room])
        missing, extra = sorted(set(expected) - held), sorted(held - set(expected))
        report.append(
            f"{client.name} misses {missing[:20]}{'...' if len(missing) > 20 else ''} "
            f"({len(missing)}), holds unknown {extra[:20]}\n{client.history(room, missing or extra)}"
        )
    assert not wrong, f"views differ from the database's {len(expected)} messages of '{room}':\n" + "\n".join(report)
    for client in clients:
        assert not client.gaps, f"{client.name} got room.gap: {client.gaps}"
    return expected


async def assert_acks_in_db(clients: list[ReconnectingClient]) -> None:
    """Every acknowledged send is in the database, once, under the id it was acknowledged with;
    no send is in the database twice; no send met silence; no send answered with an error was
    stored (a later resend of it is acknowledged as new, not as a duplicate)."""
    for client in clients:
        silent = {cid: how for cid, how in client.outcomes.items() if "silent" in how}
        assert not silent, f"{client.name}: sends met neither ack nor error within {REPLY_TIMEOUT_S} s: {silent}"
        stored_despite_error = {
            cid: how for cid, how in client.outcomes.items() if how[-1:] == ["duplicate"] and "closed" not in how
        }
        assert not stored_despite_error, (
            f"{client.name}: sends answered with an error were stored: {stored_despite_error}"
        )
        sent = list(client.acked) + list(client.pending)
        in_db = await ids_by_client_id(sent)
        assert {cid: ids for cid, ids in in_db.items() if len(ids) > 1} == {}, f"{client.name}: client_ids stored twice"
        assert {cid: in_db.get(cid, [None])[0] for cid in client.acked} == client.acked, (
            f"{client.name}: acknowledged sends missing from the database or under another id"
        )
