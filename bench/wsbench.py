#!/usr/bin/env python3
"""Chat fan-out benchmark: R rooms x N clients, S senders per room, K messages per sender.

Every client connects and joins its room, then the senders send messages carrying a unique
token, as fast as possible or at `--rate` messages/s in total. Every client records when
each token arrives. One process holds every client, so send and receive times share one clock.

Prints one JSON line: deliveries/s, latency from send to every receiver (p50/p99/max), lost
and duplicated deliveries, handshake time (connect, and `hello` for ours), the send->ack
latency and `error` frames by code (ours), the peak RSS of the server processes named by
`--server-pid` and the CPU they and this client used while messages flowed (in cores), and
(ours) whether every sent token was stored exactly once.

Protocols:
  tutorial  ws://HOST/ws/chat/<room>/ ; send {"message": tok} ; recv {"message": tok}
  ours      docs/protocol.md: a JWT (from --tokens, or the REST login, registering
            `bench<i>` accounts on first use), ws://HOST/ws/chat/?token=..., `join`, then
            `message.send` with `ref` = `client_id` = the token; the sender's ack is the
            `message.new` that carries its `ref`.
"""

import argparse
import array
import asyncio
import collections
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

# websockets' client API on picows, whose frame parsing is compiled: it costs the client half
# the CPU per received frame that `websockets` does, CPU that the server shares on one machine.
import picows.websockets as websockets

PASSWORD = "bench-pass-7"
# Creates the rooms and reads them back; it never opens a socket, so no client of the run is
# subscribed to more rooms than its own.
OWNER = "benchowner"


# `--markdown`: every body is its token followed by this (rendered through the Markdown parser,
# with a link and a mention of a room member: bench1 is in room100-md's room).
MARKDOWN = " says **bold**, _em_ and `code`, see https://example.com/docs and @bench1:\n> a quote\n- one\n- two"


def first_word(body):
    """A body's token: all of it, or what comes before `MARKDOWN`."""
    return body.split(" ", 1)[0] if isinstance(body, str) else body


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


class Tutorial:
    """The Channels tutorial's frames (bench/baselines/tutorial_peer, raw_ws.py)."""

    def __init__(self, base):
        self.base = base

    def prepare(self, rooms, users):
        return

    async def open(self, room, user):
        return await websockets.connect(
            f"{self.base}/ws/chat/{room}/", max_size=2**22, ping_interval=None, compression=None
        )

    async def ready(self, ws, room):
        return

    def frame(self, room, tok, body):
        return json.dumps({"message": body})

    def parse(self, data):
        """(token, room, ref, error code) of a frame; the tutorial names no room and has no refs."""
        try:
            return first_word(json.loads(data).get("message")), None, None, None
        except (ValueError, AttributeError):
            return None, None, None, None

    def verify(self, rooms, prefix, total):
        return None


class Ours:
    """The project's protocol (docs/protocol.md)."""

    def __init__(self, base, http, tokens=None):
        self.base = base
        self.http = http
        self.tokens = dict(tokens or {})

    def _request(self, path, body=None, token=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        return urllib.request.Request(f"{self.http}{path}", data=data, headers=headers)

    def _post(self, path, body, token=None):
        try:
            with urllib.request.urlopen(self._request(path, body, token), timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, None

    def login(self, user):
        """An access token for `user`: from --tokens, or the REST login (registering the account on first use)."""
        if user not in self.tokens:
            creds = {"username": user, "password": PASSWORD}
            st, body = self._post("/api/auth/token/", creds)
            if st != 200:
                self._post("/api/auth/register/", creds)
                st, body = self._post("/api/auth/token/", creds)
            if st == 429:
                raise SystemExit(
                    "login throttled: start the server with CHAT_LOGIN_RATE and CHAT_REGISTER_RATE raised, or pass --tokens"
                )
            if st != 200:
                raise SystemExit(f"cannot log in as {user}: HTTP {st} (registration closed? pass --tokens)")
            self.tokens[user] = body["access"]
        return self.tokens[user]

    def prepare(self, rooms, users):
        """Log every account in (a few at a time: password hashing is slow) and create the rooms."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.login, [OWNER, *users]))
        owner = self.tokens[OWNER]
        for room in rooms:
            st, _ = self._post("/api/rooms/", {"name": room, "slug": room, "kind": "public"}, owner)
            if st != 201:  # left over from an earlier run: the owner must still be a member to export it
                st, _ = self._post(f"/api/rooms/{room}/join/", None, owner)
                if st not in (200, 201):
                    raise SystemExit(f"cannot create or join room {room}: HTTP {st}")

    async def open(self, room, user):
        ws = await websockets.connect(
            f"{self.base}/ws/chat/?token={self.tokens[user]}", max_size=2**22, ping_interval=None, compression=None
        )
        while json.loads(await ws.recv()).get("type") != "hello":
            pass
        return ws

    async def ready(self, ws, room):
        await ws.send(json.dumps({"type": "join", "room": room}))
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("type") == "room.joined" and msg.get("room") == room:
                return
            if msg.get("type") == "error":
                raise RuntimeError(f"join {room}: {msg}")

    def frame(self, room, tok, body):
        return json.dumps({"type": "message.send", "room": room, "body": body, "client_id": tok, "ref": tok})

    def parse(self, data):
        try:
            m = json.loads(data)
        except ValueError:
            return None, None, None, None
        kind = m.get("type")
        if kind == "message.new":
            return first_word((m.get("message") or {}).get("body")), m.get("room"), m.get("ref"), None
        if kind == "error":
            return None, None, m.get("ref"), m.get("code") or "?"
        return None, None, None, None

    def verify(self, rooms, prefix, total):
        """How many times each token of this run is stored, read back through the NDJSON export."""
        stored = array.array("l", [0]) * total
        for room in rooms:
            req = self._request(f"/api/rooms/{room}/export/?format=ndjson", token=self.tokens[OWNER])
            with urllib.request.urlopen(req, timeout=300) as r:
                for line in r:
                    body = first_word(json.loads(line).get("body")) or ""
                    if body.startswith(prefix):
                        stored[int(body[len(prefix) :])] += 1
        return stored


def status_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stat_fields(pid):
    """The fields of /proc/`pid`/stat after the command name (state, ppid, ...), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def with_descendants(pids):
    """`pids` and every process below them (the workers of a supervisor)."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(entry)) is not None:
            children[int(fields[1])].append(int(entry))
    out, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids):
    """The CPU time (user and system, s) used so far by `pids` and every process below them."""
    total = 0
    for pid in with_descendants(pids):
        if (fields := stat_fields(pid)) is not None:  # else gone meanwhile
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return total / os.sysconf("SC_CLK_TCK")


async def sample_rss(pids, peak, interval=0.2):
    """Keep peak[0] at the largest sum of RSS (KiB) over `pids` and their descendants, until cancelled."""
    tree, refreshed = set(), 0.0
    while True:
        now = time.monotonic()
        if now - refreshed > 2:  # workers may start late; the tree is cheap to rebuild, not free
            tree, refreshed = with_descendants(pids), now
        peak[0] = max(peak[0], sum(status_kib(pid) for pid in tree))
        await asyncio.sleep(interval)


class Client:
    __slots__ = ("ws", "room", "seen")

    def __init__(self, ws, room, total):
        self.ws = ws
        self.room = room
        self.seen = bytearray(total)


async def run(args):
    tokens = json.load(open(args.tokens)) if args.tokens else None
    proto = Tutorial(args.ws) if args.protocol == "tutorial" else Ours(args.ws, args.http, tokens)
    rooms = [f"{args.room_prefix}{r}" for r in range(args.rooms)]
    per_room = max(1, args.users // args.rooms)  # accounts of room r: bench<r*per_room> .. ; none shares a room

    def user_of(r, i):
        return f"bench{r * per_room + i % per_room}"

    users = sorted({user_of(r, i) for r in range(args.rooms) for i in range(args.clients)})
    await asyncio.to_thread(proto.prepare, rooms, users)

    prefix = f"{uuid.uuid4().hex[:12]}-"  # client_id is unique per author: never reuse a token across runs
    senders_per_room = min(args.senders, args.clients)
    total = args.rooms * senders_per_room * args.messages
    sent_at = array.array("d", [0.0]) * total
    lat, ack_lat, handshakes = array.array("d"), array.array("d"), array.array("d")
    errors, closes = collections.Counter(), collections.Counter()
    stats = {"delivered": 0, "dupes": 0, "sent": 0, "last": None}
    done = asyncio.Event()
    stopping = False
    rss_peak = [0]
    rss_task = asyncio.create_task(sample_rss(args.server_pid, rss_peak)) if args.server_pid else None
    sem = asyncio.Semaphore(args.connect_concurrency)

    async def connect(r, i):
        async with sem:
            t = time.perf_counter()
            ws = await proto.open(rooms[r], user_of(r, i))
            handshakes.append(time.perf_counter() - t)
            await proto.ready(ws, rooms[r])
            return Client(ws, rooms[r], total)

    t_conn0 = time.perf_counter()
    results = await asyncio.gather(
        *(connect(r, i) for r in range(args.rooms) for i in range(args.clients)), return_exceptions=True
    )
    clients = [c for c in results if isinstance(c, Client)]
    failed = [c for c in results if not isinstance(c, Client)]
    if failed:
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
        if rss_task:
            rss_task.cancel()
        raise SystemExit(f"{len(failed)} of {len(results)} clients could not connect and join; first: {failed[0]!r}")
    connect_s = time.perf_counter() - t_conn0
    expected = total * args.clients

    def index_of(tok):
        if isinstance(tok, str) and tok.startswith(prefix):
            return int(tok[len(prefix) :])
        return None

    async def reader(client):
        try:
            async for data in client.ws:
                now = time.perf_counter()
                tok, room, ref, code = proto.parse(data)
                if code is not None:
                    errors[code] += 1
                    continue
                i = index_of(tok)
                if i is None or (room is not None and room != client.room):
                    continue
                if ref is not None and ref == tok:
                    ack_lat.append(now - sent_at[i])
                if client.seen[i]:
                    stats["dupes"] += 1
                    continue
                client.seen[i] = 1
                stats["delivered"] += 1
                stats["last"] = now
                lat.append(now - sent_at[i])
                if stats["delivered"] >= expected:
                    done.set()
        except websockets.ConnectionClosed as exc:
            if not stopping:
                closes[exc.rcvd.code if exc.rcvd else 1006] += 1

    readers = [asyncio.create_task(reader(c)) for c in clients]
    n_senders = args.rooms * senders_per_room
    interval = n_senders / args.rate if args.rate else 0

    async def sender(client, first, slot):
        start = t0 + interval * slot / n_senders  # spread the senders over one interval
        for k in range(args.messages):
            if interval:
                delay = start + k * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif args.window and k % args.window == args.window - 1:
                await asyncio.sleep(0)
            i = first + k
            tok = f"{prefix}{i}"
            sent_at[i] = time.perf_counter()
            await client.ws.send(proto.frame(client.room, tok, tok + MARKDOWN if args.markdown else tok))
            stats["sent"] += 1

    # CPU while sending and receiving, the server's and this client's, in cores of the machine.
    cpu0 = (cpu_seconds(args.server_pid) if args.server_pid else 0, time.process_time())
    t0 = time.perf_counter()
    tasks = []
    for r in range(args.rooms):
        for s in range(senders_per_room):
            slot = r * senders_per_room + s
            tasks.append(asyncio.create_task(sender(clients[r * args.clients + s], slot * args.messages, slot)))
    await asyncio.gather(*tasks)
    send_s = time.perf_counter() - t0

    # Wait for the last delivery; give up after --timeout, or once nothing arrived for --idle-timeout.
    deadline = time.perf_counter() + args.timeout
    while not done.is_set():
        now = time.perf_counter()
        quiet_since = max(stats["last"] or t0, t0 + send_s)
        if now > deadline or now - quiet_since > args.idle_timeout:
            break
        try:
            await asyncio.wait_for(done.wait(), 0.25)
        except TimeoutError:
            pass
    elapsed = (stats["last"] or time.perf_counter()) - t0
    busy_s = time.perf_counter() - t0
    server_cores = (cpu_seconds(args.server_pid) - cpu0[0]) / busy_s if args.server_pid else None
    client_cores = (time.process_time() - cpu0[1]) / busy_s
    stopping = True
    await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    for t in readers:
        t.cancel()
    if rss_task:
        rss_task.cancel()

    persisted = not_persisted = persisted_twice = None
    if not args.no_verify:
        stored = await asyncio.to_thread(proto.verify, rooms, prefix, total)
        if stored is not None:
            persisted = sum(1 for n in stored if n == 1)
            persisted_twice = sum(1 for n in stored if n > 1)
            not_persisted = sum(1 for n in stored if n == 0)

    delivered = stats["delivered"]
    lat_ms = [x * 1000 for x in lat]
    out = {
        "protocol": args.protocol,
        "rooms": args.rooms,
        "clients_per_room": args.clients,
        "senders_per_room": senders_per_room,
        "messages_per_sender": args.messages,
        "rate": args.rate or None,
        "connect_s": round(connect_s, 3),
        "send_s": round(send_s, 3),
        "elapsed_s": round(elapsed, 3),
        "sent": stats["sent"],
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "dupes": stats["dupes"],
        "deliveries_per_s": round(delivered / elapsed, 1) if elapsed > 0 else None,
        "messages_per_s": round(delivered / args.clients / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": round(pct(lat_ms, 50), 2) if lat_ms else None,
        "p99_ms": round(pct(lat_ms, 99), 2) if lat_ms else None,
        "max_ms": round(max(lat_ms), 2) if lat_ms else None,
        "handshake_p50_ms": ms(pct(handshakes, 50)),
        "handshake_p99_ms": ms(pct(handshakes, 99)),
        "acked": len(ack_lat) if args.protocol == "ours" else None,
        "ack_p50_ms": ms(pct(ack_lat, 50)),
        "ack_p99_ms": ms(pct(ack_lat, 99)),
        "errors": dict(errors),
        "closed": {str(k): v for k, v in closes.items()},
        "peak_rss_mib": round(rss_peak[0] / 1024, 1) if args.server_pid else None,
        "server_cores": None if server_cores is None else round(server_cores, 2),
        "client_cores": round(client_cores, 2),
        "persisted": persisted,
        "not_persisted": not_persisted,
        "persisted_twice": persisted_twice,
    }
    print(json.dumps(out), flush=True)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=["tutorial", "ours"], default="tutorial")
    ap.add_argument("--ws", default="ws://127.0.0.1:8001")
    ap.add_argument("--http", default="http://127.0.0.1:8001")
    ap.add_argument("--rooms", type=int, default=1)
    ap.add_argument("--room-prefix", default="bench", help="rooms are <prefix>0.. (ours: [a-z0-9-]; tutorial: \\w)")
    ap.add_argument("--clients", type=int, default=50, help="clients per room")
    ap.add_argument("--senders", type=int, default=5, help="senders per room")
    ap.add_argument("--messages", type=int, default=100, help="messages per sender")
    ap.add_argument(
        "--users",
        type=int,
        default=100,
        help="distinct accounts (ours), shared out between the rooms: no account is in two rooms",
    )
    ap.add_argument("--rate", type=float, default=0, help="total msgs/s offered (0 = as fast as possible)")
    ap.add_argument("--window", type=int, default=1, help="as fast as possible: yield to the readers every N sends")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for deliveries after the last send")
    ap.add_argument(
        "--idle-timeout", type=float, default=10, help="stop waiting once nothing was delivered for this many seconds"
    )
    ap.add_argument("--connect-concurrency", type=int, default=50, help="handshakes in flight at once")
    ap.add_argument("--tokens", help="JSON file {username: access token} for bench0.. and benchowner (skips login)")
    ap.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="sample this process's RSS (and its children's); repeatable",
    )
    ap.add_argument("--no-verify", action="store_true", help="ours: skip reading the history back")
    ap.add_argument("--markdown", action="store_true", help="Markdown bodies with a link and a mention")
    return ap.parse_args(argv)


def main():
    args = parse_args()
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
