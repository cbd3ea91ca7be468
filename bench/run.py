#!/usr/bin/env python3
"""The benchmark `make bench` runs: each server as a subprocess on a free port, the scenarios
against it with bench/wsbench.py, then one markdown table on stdout.

Servers (bench/servers.py): ours on the embedded defaults (a fresh SQLite database, in-memory layer); ours on
Redis + PostgreSQL with --services (a database and a Redis prefix of its own, dropped at the
end); the Channels tutorial consumer on its RedisChannelLayer (bench/baselines/tutorial_peer);
and raw_ws.py, a bare `websockets` broadcaster. Every wsbench JSON line, with the scenario and
server, goes to bench/results/<time>.jsonl; server logs go next to it.
"""

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # run as a script: bench.common from the repository root
from bench.common import CommitProbe, log  # noqa: E402
from bench.servers import (  # noqa: E402
    DEFAULT_REDIS,
    PYTHON,
    RESULTS,
    cluster,
    cluster_unavailable,
    ours,
    raw_ws,
    redis_reachable,
    tutorial,
    uvicorn_missing,
)

SCENARIOS = ["room100-afap", "room100-md", "rooms100x10", "half-sat", "ack200", "storm", "cluster2"]
OURS_ONLY = {"half-sat", "ack200", "storm"}


@dataclass
class Scenario:
    rooms: int
    clients: int
    senders: int
    messages: int
    rate: float = 0
    markdown: bool = False  # Markdown bodies with a link and a mention (wsbench --markdown)


# Full sizes. room100-afap's 150 messages (15,000 deliveries) take ours ~5-10 s on a quiet
# 2-core machine; rooms100x10 spends most of its time connecting its 1,000 clients.
FULL = {
    "room100-afap": Scenario(rooms=1, clients=100, senders=5, messages=30),
    "room100-md": Scenario(rooms=1, clients=100, senders=5, messages=30, markdown=True),
    "rooms100x10": Scenario(rooms=100, clients=10, senders=1, messages=10),
    "half-sat": Scenario(rooms=1, clients=100, senders=5, messages=0),  # rate and count from room100-afap
    "ack200": Scenario(rooms=1, clients=50, senders=5, messages=200, rate=200),
    "storm": Scenario(rooms=1, clients=100, senders=100, messages=3),  # messages: emoji per client
}
QUICK = {
    "room100-afap": Scenario(rooms=1, clients=10, senders=2, messages=20),
    "room100-md": Scenario(rooms=1, clients=10, senders=2, messages=20, markdown=True),
    "rooms100x10": Scenario(rooms=10, clients=3, senders=1, messages=5),
    "half-sat": Scenario(rooms=1, clients=10, senders=2, messages=0),
    "ack200": Scenario(rooms=1, clients=10, senders=2, messages=25, rate=50),
    "storm": Scenario(rooms=1, clients=10, senders=10, messages=2),
}
HALF_SAT_SECONDS = {False: 8, True: 1}  # how long half-sat offers its rate (full, quick)


def wsbench(server, scenario, size, room_prefix, timeout):
    command = [
        PYTHON,
        str(BENCH / "wsbench.py"),
        "--protocol",
        server.protocol,
        "--ws",
        f"ws://127.0.0.1:{server.port}",
        "--http",
        f"http://127.0.0.1:{server.port}",
        "--rooms",
        str(size.rooms),
        "--clients",
        str(size.clients),
        "--senders",
        str(size.senders),
        "--messages",
        str(size.messages),
        "--rate",
        str(size.rate),
        "--users",
        str(size.rooms * size.clients),
        "--room-prefix",
        room_prefix,
        "--server-pid",
        str(server.process.pid),
        "--timeout",
        str(timeout),
    ]
    if server.tokens:
        command += ["--tokens", server.tokens]
    if size.markdown:
        command.append("--markdown")
    log(
        f"  {scenario} on {server.name}: {size.rooms} room(s) x {size.clients} clients, {size.senders} sender(s) "
        f"x {size.messages} msgs, {'%g msg/s' % size.rate if size.rate else 'as fast as possible'}"
    )
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        log(f"  failed: {reason}")
        return {"scenario": scenario, "server": server.name, "failed": reason}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"scenario": scenario, "server": server.name, **result}


def storm(server, size, room_prefix, timeout):
    """bench/storm.py: every client of one room reacts to one message (ours only)."""
    command = [PYTHON, str(BENCH / "storm.py"), "--ws", f"ws://127.0.0.1:{server.port}"]
    command += ["--http", f"http://127.0.0.1:{server.port}", "--clients", str(size.clients)]
    command += ["--emoji", str(size.messages), "--room-prefix", room_prefix, "--timeout", str(timeout)]
    command += ["--tokens", server.tokens, "--server-pid", str(server.process.pid)]
    log(f"  storm on {server.name}: {size.clients} clients x {size.messages} emoji, added then removed")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        log(f"  failed: {reason}")
        return {"scenario": "storm", "server": server.name, "failed": reason}
    return {"scenario": "storm", "server": server.name, **json.loads(done.stdout.strip().splitlines()[-1])}


def storm_notes(results):
    """The lines under the table on the reaction storm: it delivers message.updated, not messages."""
    runs = [r for r in results if r["scenario"] == "storm" and "failed" not in r]
    if not runs:
        return []
    return [
        "\nstorm (every client reacts to one message; reactions accepted/s, message.updated received/s, "
        "send -> each client p50/p99, -> every client p99, clients whose last view is not the database's, "
        "errors, peak RSS, server cores):"
    ] + [
        f"- {r['server']}: {r['reactions_per_s']:,.0f}/s, {r['updates_per_s']:,.0f}/s, {fmt_ms(r['p50_ms'])}/"
        f"{fmt_ms(r['p99_ms'])}, {fmt_ms(r['all_seen_p99_ms'])}, {r['lost']}, {r['errors'] or 'none'}, "
        f"{r['peak_rss_mib']:.0f} MiB, {r['server_cores']:.2f}"
        for r in runs
    ]


def run_scenarios(server, wanted, sizes, args, results):
    """Run the wanted scenarios on one server; half-sat needs room100-afap's rate on the same server."""
    pid = os.getpid()
    afap = None
    for scenario in wanted:
        if server.kind == "cluster":
            if scenario == "cluster2":  # room100-afap's clients, spread over the processes by nginx
                results.append(wsbench(server, scenario, sizes["room100-afap"], f"cluster{pid}r", args.timeout))
            continue
        if scenario == "cluster2" or (scenario in OURS_ONLY and server.kind != "ours"):
            continue
        size = sizes[scenario]
        room_prefix = f"{scenario.replace('-', '')}{pid}r"  # letters and digits: valid for both protocols
        if scenario == "storm":
            results.append(storm(server, size, room_prefix, args.timeout))
            continue
        if scenario == "half-sat":
            if afap is None:  # measured here, not shown: half-sat's rate depends on it
                afap = wsbench(server, "room100-afap", sizes["room100-afap"], f"probe{pid}r", args.timeout)
            if not afap.get("messages_per_s"):
                results.append({"scenario": scenario, "server": server.name, "failed": "no room100-afap rate"})
                continue
            rate = round(afap["messages_per_s"] / 2, 1)
            seconds = HALF_SAT_SECONDS[args.quick]
            size = Scenario(size.rooms, size.clients, size.senders, max(1, int(rate * seconds / size.senders)), rate)
        # The latency targets' scenarios wait for the disk: time its commits meanwhile.
        probe = CommitProbe(server.database) if scenario in OURS_ONLY and server.database else None
        with probe or contextlib.nullcontext():
            result = wsbench(server, scenario, size, room_prefix, args.timeout)
        if probe is not None:
            result.update(probe.summary())
        if scenario == "room100-afap":
            afap = result
        results.append(result)


def fmt_ms(value):
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def fmt_ratio(value, base):
    return f"{value / base:.2f}x" if value and base else "—"


COLUMNS = [
    "scenario",
    "server",
    "delivered/s",
    "lost",
    "dupes",
    "not persisted",
    "p50",
    "p99",
    "ack p99",
    "handshake p99",
    "peak RSS",
    "vs tutorial",
    "vs raw_ws",
]


def table(results, notes=()):
    """One markdown table, in scenario order; ratios compare delivered/s with the baselines' in the same scenario."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    base = {}
    for r in results:
        if "failed" not in r and (r["server"] == "raw_ws" or r["server"].startswith("tutorial")):
            base[(r["scenario"], "raw" if r["server"] == "raw_ws" else "tutorial")] = r["deliveries_per_s"]
    for scenario in SCENARIOS:
        for r in results:
            if r["scenario"] != scenario or (scenario == "storm" and "failed" not in r):  # storm_notes
                continue
            if "failed" in r:
                cells = [scenario, r["server"], r["failed"]] + [""] * (len(COLUMNS) - 3)
            else:
                dps = r["deliveries_per_s"]
                cells = [
                    scenario,
                    r["server"],
                    f"{dps:,.0f}" if dps else "0",
                    f"{r['lost']:,}",
                    f"{r['dupes']:,}",
                    "—" if r.get("not_persisted") is None else f"{r['not_persisted']:,}",
                    fmt_ms(r["p50_ms"]),
                    fmt_ms(r["p99_ms"]),
                    fmt_ms(r.get("ack_p99_ms")),
                    fmt_ms(r.get("handshake_p99_ms")),
                    "—" if r.get("peak_rss_mib") is None else f"{r['peak_rss_mib']:.0f} MiB",
                    fmt_ratio(dps, base.get((scenario, "tutorial"))),
                    fmt_ratio(dps, base.get((scenario, "raw"))),
                ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join([*lines, *notes])


def cluster_notes(results):
    """The line under the table on cluster2: the ratio, and the cores each side used meanwhile."""
    scaling = [r for r in results if r["scenario"] == "cluster2" and r.get("deliveries_per_s")]
    if len(scaling) != 2:
        return []
    ratio = fmt_ratio(scaling[1]["deliveries_per_s"], scaling[0]["deliveries_per_s"])
    cores = " and ".join(f"{r['server_cores']:.2f}" for r in scaling)
    client = " and ".join(f"{r['client_cores']:.2f}" for r in scaling)
    return [
        f"\ncluster2: 2 processes deliver {ratio} of what 1 process does (both behind nginx, on Redis + "
        f"PostgreSQL). While the messages flowed, the server processes (daphnes and nginx) used {cores} cores "
        f"and the load client {client}, of the machine's {os.cpu_count()}."
    ]


def disk_notes(results):
    """The lines under the table on the commit probe's figures (`CommitProbe`), if any."""
    probed = [r for r in results if r.get("commits")]
    if not probed:
        return []
    return [
        "\nThe disk meanwhile: a probe's commits, one every 10 ms on a connection of its own to the same "
        "database (median, longest, how many over 20 ms):"
    ] + [
        f"- {r['scenario']} on {r['server']}: {fmt_ms(r['commit_p50_ms'])}, {fmt_ms(r['commit_max_ms'])}, "
        f"{r['commits_over_20ms']} of {r['commits']}"
        for r in probed
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every tool, not a measurement")
    ap.add_argument("--only", action="append", choices=SCENARIOS, help="run this scenario (repeatable)")
    ap.add_argument(
        "--services",
        action="store_true",
        help="also ours on Redis + PostgreSQL (REDIS_URL, DATABASE_URL or the local defaults)",
    )
    ap.add_argument(
        "--server",
        choices=["daphne", "uvicorn"],
        default=os.environ.get("SERVER") or "daphne",
        help="what serves ours and the tutorial peer (default: $SERVER or daphne)",
    )
    ap.add_argument("--cluster", action="store_true", help="cluster2: 2 processes behind nginx vs 1")
    ap.add_argument("--timeout", type=float, default=120, help="wsbench --timeout")
    ap.add_argument("--output", type=Path, help="JSON lines file (default: bench/results/<time>.jsonl)")
    args = ap.parse_args(argv)

    wanted = [s for s in SCENARIOS if not args.only or s in args.only]
    sizes = QUICK if args.quick else FULL
    # 1,000 clients and their server sockets in one process each: more than the usual 1,024 descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output = args.output or RESULTS / f"{stamp}.jsonl"
    users = max(s.rooms * s.clients for s in sizes.values())
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    results, notes = [], []

    servers = []
    missing = uvicorn_missing() if args.server == "uvicorn" else None
    peers = [s for s in wanted if s not in OURS_ONLY and s != "cluster2"]
    if missing:
        notes.append(f"\nours and the tutorial peer on uvicorn: {missing}")
    else:
        servers.append(("ours (sqlite+memory)", lambda: ours(args, stamp, services=False, users=users)))
        if args.services:
            servers.append(("ours (postgres+redis)", lambda: ours(args, stamp, services=True, users=users)))
    if peers and not missing:
        if redis_reachable(redis_url):
            servers.append(("tutorial", lambda: tutorial(args, stamp, redis_url)))
        else:
            for scenario in peers:
                results.append(
                    {"scenario": scenario, "server": "tutorial", "failed": f"not available: no Redis at {redis_url}"}
                )
    if peers:
        servers.append(("raw_ws", lambda: raw_ws(args, stamp)))
    if "cluster2" in wanted:
        reason = cluster_unavailable(args)
        if reason:
            results.append({"scenario": "cluster2", "server": "ours x2 behind nginx", "failed": reason})
        else:
            servers += [
                (f"ours x{n} behind nginx", lambda n=n: cluster(args, stamp, processes=n, users=users)) for n in (1, 2)
            ]

    for label, start in servers:
        try:
            with start() as server:
                log(f"{server.name} on port {server.port} (pid {server.process.pid})")
                run_scenarios(server, wanted, sizes, args, results)
        except Exception as exc:  # one server that cannot start must not cost the others' figures
            log(f"a server failed to start: {exc!r}")
            results.append({"scenario": wanted[0], "server": label, "failed": f"server failed to start: {exc}"})
    notes += cluster_notes(results)

    notes += storm_notes(results)
    notes += disk_notes(results)

    with open(output, "w") as out:
        for r in results:
            out.write(json.dumps(r) + "\n")
    print(table(results, notes))
    log(f"\nJSON lines: {output}")
    return 1 if any(r.get("failed", "").startswith("server failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
