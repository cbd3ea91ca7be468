#!/usr/bin/env python3
"""Reaction storm: N clients in one room of our server; one message is sent; then every client
sends `reaction.add` for E distinct emoji (of a fixed set of 20) on it as fast as it can, and,
once every reply is in, `reaction.remove` for each of them.

Every reaction fans out a whole `message.updated` to every client of the room. Prints one JSON
line: reactions accepted/s (each phase), `message.updated` frames received/s, the latency from a
reaction's send to each client seeing an update of that reaction's `seq` or later (p50/p99, and
p99 of the time until the last client saw it), `error` frames by code, lost updates (clients
whose last view of the message is not the database's after a phase), the peak RSS and the CPU
of the server processes named by `--server-pid`, and the messages the server read back from the
database because their event came late (its /metrics).
"""

import argparse
import array
import asyncio
import bisect
import collections
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: bench.wsbench
from bench.wsbench import OWNER, Ours, cpu_seconds, pct, sample_rss  # noqa: E402

EMOJI = [f":e{i}:" for i in range(20)]  # shortcodes: 20 distinct, the most a message takes


def gap_reads(http):
    """The server's count of messages read from the database because their event came late
    (`chat_layer_gap_messages` on /metrics, served to 127.0.0.1), or None without it."""
    try:
        with urllib.request.urlopen(f"{http}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("chat_layer_gap_messages_total "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class Client:
    __slots__ = ("ws", "updates", "replies", "view")

    def __init__(self, ws):
        self.ws = ws
        self.updates = []  # (arrival, seq) of each message.updated of the target, in arrival order
        self.replies = {}  # ref -> (arrival, seq or None, error code or None)
        self.view = None  # (seq, reactions) of the latest update of the target


async def run(args):
    tokens = json.load(open(args.tokens)) if args.tokens else None
    proto = Ours(args.ws, args.http, tokens)
    room = f"{args.room_prefix}0"
    users = [f"bench{i}" for i in range(args.clients)]
    await asyncio.to_thread(proto.prepare, [room], users)
    rss_peak = [0]
    rss_task = asyncio.create_task(sample_rss(args.server_pid, rss_peak)) if args.server_pid else None
    sem = asyncio.Semaphore(50)

    async def connect(user):
        async with sem:
            ws = await proto.open(room, user)
            await proto.ready(ws, room)
            return Client(ws)

    clients = await asyncio.gather(*(connect(u) for u in users))
    target = {"id": None}
    posted = asyncio.Event()
    errors = collections.Counter()

    async def reader(client):
        async for data in client.ws:
            now = time.perf_counter()
            m = json.loads(data)
            kind, ref = m.get("type"), m.get("ref")
            if kind == "message.new" and m["message"].get("client_id") == "storm" and target["id"] is None:
                target["id"] = m["message"]["id"]
                posted.set()
            elif kind == "message.updated" and m["message"]["id"] == target["id"]:
                seq = m["message"]["seq"]
                client.updates.append((now, seq))
                if client.view is None or seq >= client.view[0]:
                    client.view = (seq, m["message"]["reactions"])
                if ref:
                    client.replies[ref] = (now, seq, None)
            elif kind == "error":
                errors[m.get("code") or "?"] += 1
                if ref:
                    client.replies[ref] = (now, None, m.get("code"))

    readers = [asyncio.create_task(reader(c)) for c in clients]
    await clients[0].ws.send(
        json.dumps({"type": "message.send", "room": room, "body": "react to me", "client_id": "storm"})
    )
    await asyncio.wait_for(posted.wait(), 30)

    def final_message():
        """The message as the database holds it, read back through the room's NDJSON export."""
        req = proto._request(f"/api/rooms/{room}/export/?format=ndjson", token=proto.tokens[OWNER])
        with urllib.request.urlopen(req, timeout=60) as r:
            return next(m for m in map(json.loads, r) if m["id"] == target["id"])

    gaps0 = await asyncio.to_thread(gap_reads, args.http)
    cpu0, busy = cpu_seconds(args.server_pid) if args.server_pid else 0, 0.0
    frames0 = 0
    lat, last_lat = array.array("d"), array.array("d")
    phases = {}
    for phase, kind in (("add", "reaction.add"), ("remove", "reaction.remove")):
        sent_at = {}

        async def send(i, client, kind=kind, phase=phase, sent_at=sent_at):
            for j in range(args.emoji):
                ref = f"{phase}-{i}-{j}"
                sent_at[(i, ref)] = time.perf_counter()
                frame = {"type": kind, "id": target["id"], "emoji": EMOJI[(i + j) % len(EMOJI)], "ref": ref}
                await client.ws.send(json.dumps(frame))

        t0 = time.perf_counter()
        await asyncio.gather(*(send(i, c) for i, c in enumerate(clients)))
        deadline = t0 + args.timeout
        while time.perf_counter() < deadline and any(len(c.replies) < len(sent_at) // len(clients) for c in clients):
            await asyncio.sleep(0.05)
        stored = await asyncio.to_thread(final_message)
        # Every client's view has caught up with the database's once it saw the last seq.
        while time.perf_counter() < deadline and any((c.view or (0,))[0] < stored["seq"] for c in clients):
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - t0
        busy += elapsed
        accepted = 0
        seqs = [[s for _, s in c.updates] for c in clients]
        for (i, ref), sent in sent_at.items():
            reply = clients[i].replies.pop(ref, None)
            if reply is None or reply[1] is None:
                continue
            accepted += 1
            seen = []
            for c, cs in zip(clients, seqs, strict=True):
                k = bisect.bisect_left(cs, reply[1])
                if k < len(c.updates):
                    seen.append(c.updates[k][0] - sent)
            lat.extend(seen)
            if len(seen) == len(clients):
                last_lat.append(max(seen))
        frames = sum(len(c.updates) for c in clients)
        lost = sum(1 for c in clients if c.view != (stored["seq"], stored["reactions"]))
        phases[phase] = {
            "sent": len(sent_at),
            "accepted": accepted,
            "accepted_per_s": round(accepted / elapsed, 1),
            "updates": frames - frames0,
            "updates_per_s": round((frames - frames0) / elapsed, 1),
            "elapsed_s": round(elapsed, 3),
            "lost": lost,
            "final_seq": stored["seq"],
            "final_emoji": len(stored["reactions"]),
        }
        frames0 = frames
    server_cores = (cpu_seconds(args.server_pid) - cpu0) / busy if args.server_pid else None
    gaps1 = await asyncio.to_thread(gap_reads, args.http)
    await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    for t in readers:
        t.cancel()
    if rss_task:
        rss_task.cancel()
    lat_ms, last_ms = [x * 1000 for x in lat], [x * 1000 for x in last_lat]
    add, remove = phases["add"], phases["remove"]
    out = {
        "clients": args.clients,
        "emoji_per_client": args.emoji,
        "sent": add["sent"] + remove["sent"],
        "accepted": add["accepted"] + remove["accepted"],
        "reactions_per_s": round((add["accepted"] + remove["accepted"]) / busy, 1),
        "updates": add["updates"] + remove["updates"],
        "updates_per_s": round((add["updates"] + remove["updates"]) / busy, 1),
        "p50_ms": round(pct(lat_ms, 50), 2) if lat_ms else None,
        "p99_ms": round(pct(lat_ms, 99), 2) if lat_ms else None,
        "all_seen_p99_ms": round(pct(last_ms, 99), 2) if last_ms else None,
        "lost": add["lost"] + remove["lost"],
        "errors": dict(errors),
        "phases": phases,
        "gap_reads": None if gaps0 is None or gaps1 is None else int(gaps1 - gaps0),
        "peak_rss_mib": round(rss_peak[0] / 1024, 1) if args.server_pid else None,
        "server_cores": None if server_cores is None else round(server_cores, 2),
    }
    print(json.dumps(out), flush=True)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ws", default="ws://127.0.0.1:8001")
    ap.add_argument("--http", default="http://127.0.0.1:8001")
    ap.add_argument("--room-prefix", default="storm", help="the room is <prefix>0")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--emoji", type=int, default=3, help="distinct emoji each client adds, then removes")
    ap.add_argument("--timeout", type=float, default=120, help="seconds each phase may take")
    ap.add_argument("--tokens", help="JSON file {username: access token} for bench0.. and benchowner")
    ap.add_argument("--server-pid", type=int, action="append", default=[], help="sample its RSS and CPU")
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
