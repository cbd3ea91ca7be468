"""The reconnecting test client: a user's client application on real sockets (support.Client's
`ws_connect`), recovering from faults as docs/guarantees.md ("What the client must do") asks.

- It reconnects after any close but FINAL_CLOSE_CODES, with exponential backoff and jitter: to
  the same server, or to the next of `servers` after 1001 (that one is shutting down) or a
  failed connect.
- After each `hello` it joins every room with `since` = the highest id received after that
  room's last `room.joined` (a `ClientState` per room keeps it, and the room's view: ids
  de-duplicated, one id always the same message; with `check_order`, each connection's
  messages in id order as they arrive).
- It resends every send not acknowledged, with the same `client_id`: with `resend="joins"`
  right after sending its joins, with `resend="joined"` once the room's `room.joined` came
  (and only then sends new ones). A send answered with `error` is retried after
  `retry_after` (at most 1 s here), and so is a refused join; a send met with silence for
  REPLY_TIMEOUT_S goes again.
- It records `room.gap` frames instead of fetching the range over REST: the tests here
  require none, so one is a failure to report, not to paper over.

Test hooks: `drop()`, `reading` (clear it and the client stops reading), `drop_early`,
`join_delay`, `join_gate`, `rcvbuf` and `max_queue` (see the class). Run clients with
`async with connected([...])`, which starts and stops them.
"""

import asyncio
import contextlib
import itertools
import random
import socket
import time
from collections import defaultdict

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.client_state import ClientState
from tests.support import Client, access_token, ws_connect

# Close codes after which a client must not reconnect (docs/protocol.md): credentials or access.
FINAL_CLOSE_CODES = {4401, 4403, 4404, 4410}
REPLY_TIMEOUT_S = 10.0  # a send on an open connection that gets neither ack nor error by then was met with silence
POLL_S = 0.2  # how long the reader waits for a frame before it looks at retries due


class ReconnectingClient:
    """A client on /ws/chat/ of `servers` (tests/live.py) in `rooms`, that keeps what its user sees.

    Options: `resend` ("joins" or "joined", see the module); `check_order`; `rcvbuf` shrinks
    the first connection's socket receive buffer and `max_queue` the library's, so that a
    client that stops reading pushes back on the server at once; `connect_options` go to
    `websockets`' connect. Set on the instance: with `drop_early` it drops each connection on
    the first `message.new` that comes before `room.joined` (the moment a client that resumed
    from the highest id it holds would skip the replay still to come); `join_delay` (seconds,
    at most) is how long it is busy with `hello` before it joins; while `join_gate` (an
    asyncio.Event) is set on it and not yet set itself, it holds its joins back.
    """

    _numbers = itertools.count(1)

    def __init__(
        self,
        user,
        servers: list,
        rooms: list[str],
        name: str | None = None,
        *,
        resend: str = "joins",
        check_order: bool = False,
        rcvbuf: int | None = None,
        max_queue: int | None = 16,
        connect_options: dict | None = None,
    ):
        assert resend in ("joins", "joined"), resend
        self.user = user
        self.name = name or f"{user.username}-{next(self._numbers)}"
        self.token = access_token(user)
        self.servers, self.rooms = list(servers), list(rooms)
        self.resend, self.rcvbuf = resend, rcvbuf
        self.connect_options = {
            "open_timeout": 3,
            "close_timeout": 1,
            "max_queue": max_queue,
            **(connect_options or {}),
        }
        self.states = {
            room: ClientState(f"{self.name}/{room}", user.pk, room, check_order=check_order) for room in self.rooms
        }
        # client_id -> how each transmission ended: "ack", "duplicate", "error", "closed" (the
        # connection closed before an answer), "silent" (no answer in REPLY_TIMEOUT_S), or "sent"
        self.outcomes: dict[str, list[str]] = defaultdict(list)
        self.errors: list[dict] = []  # every error frame
        # (code, or None when the connection dropped without a close frame; reason; server port; time)
        self.closes: list[tuple[int | None, str, int, float]] = []
        self.presence: list[tuple[float, str, str, str]] = []  # (time, room, username, status)
        self.gaps: list[dict] = []
        self.joins: list[tuple[float, int, str, int]] = []  # (time, connection number, room, since)
        self.deliveries: list[tuple[float, int, str, int]] = []  # (time, connection number, room, id) of message.new
        self.arrived: dict[int, float] = {}  # message id -> when it first arrived
        self.connections = 0  # successful hellos
        self.final_close: int | None = None
        self.drop_early = False
        self.join_delay = 0.0
        self.join_gate: asyncio.Event | None = None
        self.early_drops = 0
        self.ready = asyncio.Event()  # connected, and sends go out now
        self.reading = asyncio.Event()
        self.reading.set()
        self.conn: Client | None = None
        self.server = None
        self._room_of: dict[str, str] = {}  # client_id -> room
        self._send_refs: dict[str, str] = {}  # ref of a send frame -> client_id
        self._join_refs: dict[str, str] = {}  # ref of a join frame -> room
        self._inflight: dict[str, float] = {}  # client_id -> when sent on the current connection
        self._retry_at: dict[str, float] = {}  # client_id -> when to resend after an error
        self._rejoin_at: dict[str, float] = {}  # room -> when to join again after an error
        self._sends = itertools.count(1)
        self._task: asyncio.Task | None = None

    # What it holds

    @property
    def view(self) -> dict[str, dict[int, dict]]:
        """room -> message id -> message."""
        return {room: state.view for room, state in self.states.items()}

    @property
    def pending(self) -> dict[str, str]:
        """client_id -> body of every send not acknowledged yet."""
        return {cid: body for state in self.states.values() for cid, body in state.unacked.items()}

    @property
    def acked(self) -> dict[str, int]:
        """client_id -> the message id its acknowledgement named."""
        return {cid: mid for state in self.states.values() for cid, mid in state.acks.items()}

    @property
    def close_codes(self) -> list[int | None]:
        return [code for code, *_ in self.closes]

    def ordered(self, room: str) -> list[dict]:
        return self.states[room].ordered()

    def missing(self, room: str, ids) -> list[int]:
        return [i for i in ids if i not in self.states[room].view]

    def saw_presence(self, username: str, status: str, after: float = 0.0) -> float | None:
        """When this client got `presence` `status` for `username` (the first after `after`), or None."""
        return next((t for t, _, user, s in self.presence if user == username and s == status and t >= after), None)

    # Control

    async def start(self, timeout: float = 10.0) -> "ReconnectingClient":
        self._task = asyncio.create_task(self._run(), name=self.name)
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.is_set():
            self.check()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not connected within {timeout} s; closes: {self.closes}")
            await asyncio.sleep(0.02)

    def check(self) -> None:
        """Raise what stopped the client, if anything did (a broken invariant in `ClientState`)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()
            raise AssertionError(f"{self.name} stopped (close {self.final_close})")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 2)

    def drop(self) -> None:
        """Lose the connection without a close frame, as a lost network does; the client reconnects."""
        if self.conn is not None:
            self.conn.abort()

    async def send(self, room: str, body: str, client_id: str | None = None) -> str:
        """Send a message (now if it may, else once it may); returns its client_id."""
        cid = client_id or f"{self.name}-{next(self._sends)}"
        self.states[room].send(cid, body)
        self._room_of[cid] = room
        await self._transmit(cid)
        return cid

    async def rejoin(self, room: str) -> None:
        """`join since` again on the open connection."""
        await self._join(room)

    async def settled(self, timeout: float = 20.0) -> None:
        """Wait until connected with every send acknowledged."""
        deadline = time.monotonic() + timeout
        while self.pending or not self.ready.is_set():
            self.check()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {len(self.pending)} sends still unacknowledged after {timeout} s "
                    f"(connected: {self.ready.is_set()}, closes: {self.closes[-5:]}, "
                    f"errors: {self.errors[-3:]})"
                )
            await asyncio.sleep(0.05)

    # The connection loop

    async def _run(self) -> None:
        index, delay = 0, 0.05
        while True:
            server = self.servers[index % len(self.servers)]
            try:
                conn = await self._connect(server)
            except (OSError, InvalidHandshake, TimeoutError):
                index += 1  # that server is gone: fail over
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 1.0)
                continue
            self.conn, self.server = conn, server
            hellos = self.connections
            try:
                await self._session(conn)
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
                self.conn = None
                for cid in self._inflight:
                    self._outcome(cid, "closed")
                self._inflight.clear()
                for state in self.states.values():
                    state.connection_lost()
            if self.connections > hellos:  # back off only while connections keep failing
                delay = 0.05
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 1.0)

    async def _connect(self, server) -> Client:
        options = dict(self.connect_options)
        if self.rcvbuf and not self.closes:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            except OSError:
                sock.close()
                raise
            options["sock"] = sock
        return await ws_connect(server, token=self.token, hello=False, **options)

    async def _session(self, conn: Client) -> None:
        await conn.expect("hello", timeout=10)
        self.connections += 1
        if self.join_delay:
            await asyncio.sleep(random.uniform(0, self.join_delay))
        if self.join_gate is not None:
            await self.join_gate.wait()
        for room in self.rooms:
            await self._join(room)
        if self.resend == "joins":
            self.ready.set()
            for cid in list(self.pending):
                if cid not in self._inflight:  # a send made meanwhile already went out
                    await self._transmit(cid)
        while True:
            await self.reading.wait()
            try:
                frame = await conn.recv(POLL_S)
            except TimeoutError:
                frame = None
            if frame is not None:
                await self._handle(frame)
            await self._due()

    def _may_send(self, room: str) -> bool:
        if self.resend == "joins":
            return self.ready.is_set()
        return self.states[room].synced

    async def _join(self, room: str) -> None:
        if self.conn is None:
            return  # it joins after reconnecting
        frame = self.states[room].join()
        self._join_refs[frame["ref"]] = room
        self.joins.append((time.monotonic(), self.connections, room, frame["since"]))
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close; it joins again after it
            await self.conn.send(**frame)

    async def _transmit(self, cid: str) -> None:
        conn, room = self.conn, self._room_of[cid]
        state = self.states[room]
        if conn is None or cid not in state.unacked or not self._may_send(room):
            return  # it goes once the client may send
        frame = state.message_send(cid, state.unacked[cid])
        self._send_refs[frame["ref"]] = cid
        self._inflight[cid] = time.monotonic()
        self._retry_at.pop(cid, None)
        self.outcomes[cid].append("sent")
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close; the send goes again after it
            await conn.send(**frame)

    async def _due(self) -> None:
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
                await self._join(room)

    async def _handle(self, frame: dict) -> None:
        kind, ref = frame["type"], frame.get("ref")
        now = time.monotonic()
        if kind == "error":
            self.errors.append(frame)
            wait = min(frame.get("retry_after") or 1, 1)
            cid = self._send_refs.get(ref)
            if cid in self.pending:
                self._inflight.pop(cid, None)
                self._outcome(cid, "error")
                self._retry_at[cid] = now + wait
            elif ref in self._join_refs:
                self._rejoin_at[self._join_refs[ref]] = now + wait
            return
        if kind == "presence":
            self.presence.append((now, frame["room"], frame["user"]["username"], frame["status"]))
        elif kind == "room.gap":
            self.gaps.append(frame)
        state = self.states.get(frame.get("room"))
        if state is None or kind not in ("message.new", "room.joined"):
            return
        if kind == "message.new":
            mid = frame["message"]["id"]
            self.deliveries.append((now, self.connections, state.room, mid))
            self.arrived.setdefault(mid, now)
            if not state.synced and self.drop_early:
                self.early_drops += 1
                self.drop()
        cid = self._send_refs.get(ref)
        answered = kind == "message.new" and cid in state.unacked
        resends = state.handle(frame)
        if answered:
            self._inflight.pop(cid, None)
            self._outcome(cid, "duplicate" if frame.get("duplicate") else "ack")
        if self.resend == "joined":
            for resend in resends:
                await self._transmit(resend["client_id"])
            if all(s.synced for s in self.states.values()):
                self.ready.set()

    def _outcome(self, cid: str, how: str) -> None:
        if self.outcomes[cid][-1:] == ["sent"]:
            self.outcomes[cid][-1] = how

    def history(self, room: str, ids) -> str:
        """What this client did around `ids` (for failure messages): its joins, closes and deliveries."""
        ids = sorted(ids)
        lo, hi = ids[0] - 3, ids[-1] + 3
        t0 = min([t for t, *_ in self.joins] or [0])
        lines = [
            f"{self.name}: joins (t, conn, room, since): "
            + ", ".join(f"({t - t0:.2f}, {c}, {r}, {s})" for t, c, r, s in self.joins if r == room),
            "  closes (code, reason, port, t): "
            + ", ".join(f"({c}, {r!r}, {p}, {t - t0:.2f})" for c, r, p, t in self.closes),
            f"  deliveries near {lo}..{hi} (t, conn, id): "
            + ", ".join(f"({t - t0:.2f}, {c}, {m})" for t, c, r, m in self.deliveries if r == room and lo <= m <= hi),
        ]
        return "\n".join(lines)


@contextlib.asynccontextmanager
async def connected(clients: list[ReconnectingClient], timeout: float = 15.0):
    """Start `clients` and wait until each is connected; stop them all at the end, whatever happens."""
    try:
        await asyncio.gather(*(client.start(timeout) for client in clients))
        yield clients
    finally:
        await asyncio.gather(*(client.stop() for client in clients))


async def settle_all(clients: list[ReconnectingClient], timeout: float = 20.0) -> None:
    await asyncio.gather(*(client.settled(timeout) for client in clients))
