"""Fault injection for live tests: a private Redis to kill and restart, a TCP proxy to cut the
database off, and a chat client that behaves as the issue asks of a real one.

- `PrivateRedis`: a redis-server of the test's own on a free port (never the shared one):
  `stop()` kills it (SIGKILL, nothing saved), `start()` brings back an empty one on the same port.
- `TcpProxy`: forwards a local port to PostgreSQL; `cut()` drops every connection and refuses
  new ones until `restore()`. A daphne whose DATABASE_URL points at it loses its database
  while the test process keeps talking to PostgreSQL directly.
- `ChatClient`: reconnects (with backoff, failing over to the next server) after any close but
  a final 44xx, rejoins each room with `since` as docs/protocol.md says (the highest id
  received after the room's last `room.joined`), resends every send that was not acknowledged
  with the same `client_id`, and keeps what it saw: its `view` of each room (ids,
  de-duplicated), acknowledgements, errors, close codes and presence.
- `assert_views_match_db`: the issue's invariant, every client holds exactly the database's
  sequence of the room.
"""
import asyncio
import contextlib
import itertools
import json
import os
import random
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
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chat.models import Message
from tests.live import LiveServer, database_url, free_port, start_daphne
from tests.support import access_token

REDIS_SERVER = "/usr/bin/redis-server"

# Daphnes in fault tests: clients send as fast as the test wants, presence beats every second
# (a SIGKILLed process's users go offline within 4 beats), Redis is checked every second.
FAULT_ENV = {"CHAT_RATE_PER_10S": "100000", "CHAT_MAX_CONNECTIONS_PER_USER": "1000", "CHAT_LOGIN_RATE": "100000/min",
             "CHAT_REGISTER_RATE": "100000/min", "CHAT_HEARTBEAT_S": "1", "CHAT_LAYER_CHECK_S": "1"}

# Close codes after which a client must not reconnect (PROTOCOL.md): credentials or access.
FINAL_CLOSE_CODES = {4401, 4403, 4404, 4410}
REPLY_TIMEOUT_S = 10.0  # a send on an open connection that gets neither ack nor error by then was met with silence


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
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


# The client

class ChatClient:
    """A client on /ws/chat/ that keeps what a user sees, and recovers from faults as a real one must.

    - On any close but FINAL_CLOSE_CODES it reconnects with backoff: to the same server, or to
      the next of `servers` after 1001 (that one is shutting down) or a failed connect.
    - After each `hello` it joins every room of `rooms` with `since` = the highest id received
      after that room's last `room.joined` (frames that come between `hello` and `room.joined`
      are newer than the replay still to come), then resends, with the same `client_id`,
      every send not yet acknowledged.
    - A send answered with `error` is retried after `retry_after` (at most 1 s here).
    - With `drop_early`, it drops each connection on the first `message.new` that comes before
      `room.joined` (the moment a client that resumed from the highest id it holds would skip
      the replay still to come); `join_delay` (seconds, at most) is how long it is busy with
      `hello` before it joins, which widens that window; while `join_gate` (an asyncio.Event)
      is set on it and not yet set itself, it holds its joins back.

    Run clients with `async with connected([...])`, which starts and stops them.
    """

    _numbers = itertools.count(1)

    def __init__(self, user, servers: list[LiveServer], rooms: list[str], name: str | None = None):
        self.user = user
        self.name = name or f"{user.username}-{next(self._numbers)}"
        self.token = access_token(user)
        self.servers = list(servers)
        self.rooms = list(rooms)
        self.view: dict[str, set[int]] = {room: set() for room in self.rooms}
        self.resume: dict[str, int] = {room: 0 for room in self.rooms}  # the next join's `since`
        # client_id -> how each transmission ended: "ack", "duplicate", "error", "closed" (the
        # connection closed before an answer), "silent" (no answer in REPLY_TIMEOUT_S), or "sent"
        self.outcomes: dict[str, list[str]] = defaultdict(list)
        self.pending: dict[str, dict] = {}  # client_id -> send frame, until acknowledged (in send order)
        self.acked: dict[str, int] = {}  # client_id -> message id
        self.errors: list[dict] = []  # every error frame
        # (code, or None when the connection dropped without a close frame; reason; server port; time)
        self.closes: list[tuple[int | None, str, int, float]] = []
        self.presence: list[tuple[float, str, str, str]] = []  # (time, room, username, status)
        self.gaps: list[dict] = []
        self.joins: list[tuple[float, int, str, int]] = []  # (time, connection number, room, since)
        self.deliveries: list[tuple[float, int, str, int]] = []  # (time, connection number, room, id) of message.new
        self.connections = 0  # successful hellos
        self.final_close: int | None = None
        self.drop_early = False
        self.join_delay = 0.0
        self.join_gate: asyncio.Event | None = None
        self.early_drops = 0
        self.ready = asyncio.Event()  # hello read, joins and resends sent
        self.ws = None
        self.server: LiveServer | None = None
        self._inflight: dict[str, float] = {}  # client_id -> when sent on the current connection
        self._retry_at: dict[str, float] = {}  # client_id -> when to resend after an error
        self._rejoin_at: dict[str, float] = {}  # room -> when to join again after an error
        self._joined: set[str] = set()  # rooms whose `room.joined` came on the current connection
        self._sends = itertools.count(1)
        self._task: asyncio.Task | None = None

    # Control

    async def start(self, timeout: float = 10.0) -> "ChatClient":
        self._task = asyncio.create_task(self._run(), name=self.name)
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name} not connected within {timeout} s; closes: {self.closes}") from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)

    def drop(self) -> None:
        """Lose the connection without a close frame, as a lost network does; the client reconnects."""
        if self.ws is not None:
            self.ws.transport.abort()

    async def send(self, room: str, body: str) -> str:
        """Send a message (now if connected, else after reconnecting); returns its client_id."""
        cid = f"{self.name}-{next(self._sends)}"
        self.pending[cid] = {"type": "message.send", "room": room, "body": body, "client_id": cid, "ref": cid}
        await self._transmit(cid)
        return cid

    async def settled(self, timeout: float = 20.0) -> None:
        """Wait until connected with every send acknowledged."""
        deadline = time.monotonic() + timeout
        while self.pending or not self.ready.is_set():
            if self._task.done():
                raise AssertionError(f"{self.name} stopped (close {self.final_close})") from self._task.exception()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {len(self.pending)} sends still unacknowledged after {timeout} s "
                                     f"(connected: {self.ready.is_set()}, closes: {self.closes[-5:]}, "
                                     f"errors: {self.errors[-3:]})")
            await asyncio.sleep(0.05)

    def saw_presence(self, username: str, status: str, after: float = 0.0) -> float | None:
        """When this client got `presence` `status` for `username` (the first after `after`), or None."""
        return next((t for t, _, user, s in self.presence if user == username and s == status and t >= after), None)

    # The connection loop

    async def _run(self) -> None:
        index, delay = 0, 0.05
        while True:
            server = self.servers[index % len(self.servers)]
            try:
                ws = await websocket_connect(server.ws_url + "/ws/chat/", open_timeout=3, close_timeout=1,
                                             additional_headers={"Authorization": f"Bearer {self.token}"})
            except (OSError, InvalidHandshake, TimeoutError):
                index += 1  # that server is gone: fail over
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.ws, self.server = ws, server
            hellos = self.connections
            try:
                await self._session(ws)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                self.closes.append((code, exc.rcvd.reason if exc.rcvd else "", server.port, time.monotonic()))
                if code in FINAL_CLOSE_CODES:
                    self.final_close = code
                    return
                if code == 1001:
                    index += 1
            finally:
                self.ready.clear()
                self.ws = None
                for cid in self._inflight:
                    self._outcome(cid, "closed")
                self._inflight.clear()
                self._joined.clear()
            if self.connections > hellos:  # back off only while connections keep failing
                delay = 0.05
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _session(self, ws) -> None:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        self.connections += 1
        if self.join_delay:
            await asyncio.sleep(random.uniform(0, self.join_delay))
        if self.join_gate is not None:
            await self.join_gate.wait()
        for room in self.rooms:
            await self._join(ws, room)
        self.ready.set()
        for cid in list(self.pending):
            if cid not in self._inflight:  # a send made meanwhile already went out
                await self._transmit(cid)
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                raw = None
            if raw is not None:
                self._handle(json.loads(raw))
            await self._due(ws)

    async def _join(self, ws, room: str) -> None:
        since = self.resume[room]
        self.joins.append((time.monotonic(), self.connections, room, since))
        await ws.send(json.dumps({"type": "join", "room": room, "since": since, "ref": f"join:{room}"}))

    async def _transmit(self, cid: str) -> None:
        ws = self.ws
        if ws is None or not self.ready.is_set() or cid not in self.pending:
            return  # sent after reconnecting
        self._inflight[cid] = time.monotonic()
        self._retry_at.pop(cid, None)
        self.outcomes[cid].append("sent")
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close; the send goes again after it
            await ws.send(json.dumps(self.pending[cid]))

    async def _due(self, ws) -> None:
        """Retries that are due, and sends met with silence."""
        now = time.monotonic()
        for cid, sent in list(self._inflight.items()):
            if now - sent > REPLY_TIMEOUT_S:
                self._outcome(cid, "silent")
                del self._inflight[cid]
                self._retry_at[cid] = now
        for cid, when in list(self._retry_at.items()):
            if when <= now:
                await self._transmit(cid)
        for room, when in list(self._rejoin_at.items()):
            if when <= now:
                del self._rejoin_at[room]
                await self._join(ws, room)

    def _handle(self, frame: dict) -> None:
        kind, ref = frame["type"], frame.get("ref")
        now = time.monotonic()
        if kind == "message.new":
            room, mid = frame["room"], frame["message"]["id"]
            self.view.setdefault(room, set()).add(mid)
            self.deliveries.append((now, self.connections, room, mid))
            if room in self._joined:
                self.resume[room] = max(self.resume[room], mid)
            elif self.drop_early:
                self.early_drops += 1
                self.drop()
            if ref in self.pending:
                del self.pending[ref]
                self._inflight.pop(ref, None)
                self._outcome(ref, "duplicate" if frame.get("duplicate") else "ack")
                self.acked[ref] = mid
        elif kind == "error":
            self.errors.append(frame)
            wait = min(frame.get("retry_after") or 1, 1)
            if ref in self.pending:
                self._inflight.pop(ref, None)
                self._outcome(ref, "error")
                self._retry_at[ref] = now + wait
            elif ref and ref.startswith("join:"):
                self._rejoin_at[ref.removeprefix("join:")] = now + wait
        elif kind == "room.joined" and ref == f"join:{frame['room']}":
            self._joined.add(frame["room"])
        elif kind == "presence":
            self.presence.append((now, frame["room"], frame["user"]["username"], frame["status"]))
        elif kind == "room.gap":
            self.gaps.append(frame)

    def _outcome(self, cid: str, how: str) -> None:
        if self.outcomes[cid][-1:] == ["sent"]:
            self.outcomes[cid][-1] = how

    def history(self, room: str, ids) -> str:
        """What this client did around `ids` (for failure messages): its joins, closes and deliveries."""
        ids = sorted(ids)
        lo, hi = ids[0] - 3, ids[-1] + 3
        t0 = min([t for t, *_ in self.joins] or [0])
        lines = [f"{self.name}: joins (t, conn, room, since): "
                 + ", ".join(f"({t - t0:.2f}, {c}, {r}, {s})" for t, c, r, s in self.joins if r == room),
                 "  closes (code, reason, port, t): "
                 + ", ".join(f"({c}, {r!r}, {p}, {t - t0:.2f})" for c, r, p, t in self.closes),
                 f"  deliveries near {lo}..{hi} (t, conn, id): "
                 + ", ".join(f"({t - t0:.2f}, {c}, {m})" for t, c, r, m in self.deliveries
                             if r == room and lo <= m <= hi)]
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def connected(clients: list[ChatClient], timeout: float = 15.0):
    """Start `clients` and wait until each is connected; stop them all at the end, whatever happens."""
    try:
        await asyncio.gather(*(client.start(timeout) for client in clients))
        yield clients
    finally:
        await asyncio.gather(*(client.stop() for client in clients))


async def settle_all(clients: list[ChatClient], timeout: float = 20.0) -> None:
    await asyncio.gather(*(client.settled(timeout) for client in clients))


async def assert_views_match_db(clients: list[ChatClient], room: str, timeout: float = 5.0) -> list[int]:
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
        held = client.view[room]
        missing, extra = sorted(set(expected) - held), sorted(held - set(expected))
        report.append(f"{client.name} misses {missing[:20]}{'...' if len(missing) > 20 else ''} "
                      f"({len(missing)}), holds unknown {extra[:20]}\n{client.history(room, missing or extra)}")
    assert not wrong, f"views differ from the database's {len(expected)} messages of '{room}':\n" + "\n".join(report)
    for client in clients:
        assert not client.gaps, f"{client.name} got room.gap: {client.gaps}"
    return expected


async def assert_acks_in_db(clients: list[ChatClient]) -> None:
    """Every acknowledged send is in the database, once, under the id it was acknowledged with;
    no send is in the database twice; no send met silence; no send answered with an error was
    stored (a later resend of it is acknowledged as new, not as a duplicate)."""
    for client in clients:
        silent = {cid: how for cid, how in client.outcomes.items() if "silent" in how}
        assert not silent, f"{client.name}: sends met neither ack nor error within {REPLY_TIMEOUT_S} s: {silent}"
        stored_despite_error = {cid: how for cid, how in client.outcomes.items()
                                if how[-1:] == ["duplicate"] and "closed" not in how}
        assert not stored_despite_error, f"{client.name}: sends answered with an error were stored: " \
                                         f"{stored_despite_error}"
        sent = list(client.acked) + list(client.pending)
        in_db = await ids_by_client_id(sent)
        assert {cid: ids for cid, ids in in_db.items() if len(ids) > 1} == {}, f"{client.name}: client_ids stored twice"
        assert {cid: in_db.get(cid, [None])[0] for cid in client.acked} == client.acked, \
            f"{client.name}: acknowledged sends missing from the database or under another id"
