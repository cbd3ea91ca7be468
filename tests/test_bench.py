"""The load tools in bench/: wsbench against real servers, and run.py's scenarios and table."""

import contextlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model

from bench.common import CommitProbe, postgres_database
from chat.models import Message
from tests.live import BASE_DIR, free_port, run_daphne, wait_for_port
from tests.support import access_token

pytestmark = pytest.mark.live

User = get_user_model()
WSBENCH = BASE_DIR / "bench" / "wsbench.py"
BENCH_ENV = {
    "CHAT_RATE_PER_10S": "100000",
    "CHAT_MAX_CONNECTIONS_PER_USER": "100",
    "CHAT_LOGIN_RATE": "1000/min",
    "CHAT_REGISTER_RATE": "1000/min",
}
FIELDS = {
    "protocol",
    "rooms",
    "clients_per_room",
    "senders_per_room",
    "messages_per_sender",
    "connect_s",
    "send_s",
    "elapsed_s",
    "sent",
    "expected",
    "delivered",
    "lost",
    "dupes",
    "deliveries_per_s",
    "messages_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "handshake_p50_ms",
    "handshake_p99_ms",
    "acked",
    "ack_p50_ms",
    "ack_p99_ms",
    "errors",
    "closed",
    "peak_rss_mib",
    "server_cores",
    "client_cores",
    "persisted",
    "not_persisted",
    "persisted_twice",
}


def wsbench(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(WSBENCH), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_bench_module(name="run"):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BASE_DIR / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.django_db(transaction=True)
def test_wsbench_ours_delivers_acks_and_stores_every_message(tmp_path):
    names = ["benchowner"] + [f"bench{i}" for i in range(6)]
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({name: access_token(User.objects.create_user(name)) for name in names}))
    with run_daphne(BENCH_ENV) as server:
        out = wsbench(
            "--protocol",
            "ours",
            "--ws",
            server.ws_url,
            "--http",
            server.url,
            "--rooms",
            "2",
            "--room-prefix",
            "wsb",
            "--clients",
            "3",
            "--senders",
            "2",
            "--messages",
            "5",
            "--users",
            "6",
            "--tokens",
            str(tokens),
            "--server-pid",
            str(server.process.pid),
            "--idle-timeout",
            "30",
        )

    assert FIELDS <= set(out)
    # 2 rooms x 2 senders x 5 messages, each to the 3 clients of its room (its sender's ack included).
    assert (out["sent"], out["expected"], out["delivered"], out["lost"], out["dupes"]) == (20, 60, 60, 0, 0)
    assert out["acked"] == 20 and out["ack_p99_ms"] is not None
    assert (out["persisted"], out["not_persisted"], out["persisted_twice"]) == (20, 0, 0)
    assert Message.objects.filter(room__slug__in=["wsb0", "wsb1"], kind="user").count() == 20
    assert out["errors"] == {} and out["closed"] == {}
    assert out["handshake_p50_ms"] is not None and out["p99_ms"] is not None
    assert out["peak_rss_mib"] > 0
    assert out["server_cores"] >= 0 and out["client_cores"] > 0


@pytest.mark.django_db(transaction=True)
def test_wsbench_ours_registers_and_logs_in_without_tokens():
    with run_daphne(BENCH_ENV) as server:
        out = wsbench(
            "--protocol",
            "ours",
            "--ws",
            server.ws_url,
            "--http",
            server.url,
            "--room-prefix",
            "login",
            "--clients",
            "2",
            "--senders",
            "1",
            "--messages",
            "3",
            "--users",
            "2",
            "--idle-timeout",
            "30",
        )

    assert (out["delivered"], out["lost"], out["dupes"], out["persisted"]) == (6, 0, 0, 3)
    assert set(User.objects.values_list("username", flat=True)) == {"benchowner", "bench0", "bench1"}
    assert out["peak_rss_mib"] is None  # no --server-pid


def test_wsbench_tutorial_protocol_against_raw_ws():
    port = free_port()
    server = subprocess.Popen([sys.executable, str(BASE_DIR / "bench" / "baselines" / "raw_ws.py"), str(port)])
    try:
        wait_for_port(port, server, 10)
        out = wsbench(
            "--ws",
            f"ws://127.0.0.1:{port}",
            "--rooms",
            "3",
            "--clients",
            "4",
            "--senders",
            "2",
            "--messages",
            "10",
            "--rate",
            "200",
            "--server-pid",
            str(server.pid),
        )
    finally:
        server.terminate()
        server.wait(10)

    assert FIELDS <= set(out)
    assert (out["sent"], out["expected"], out["delivered"], out["lost"], out["dupes"]) == (60, 240, 240, 0, 0)
    assert out["acked"] is None and out["persisted"] is None  # the tutorial protocol has neither
    assert out["peak_rss_mib"] > 0


def test_run_quick_room100_afap_and_ack200_end_to_end(tmp_path):
    """run.py starts every server, runs the scenarios, prints the table and writes the JSON lines;
    ack200 runs on ours alone, with the disk probe beside it."""
    output = tmp_path / "results.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(BASE_DIR / "bench" / "run.py"),
            "--quick",
            "--only",
            "room100-afap",
            "--only",
            "ack200",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=BASE_DIR,
    )
    assert done.returncode == 0, done.stderr

    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| room100-afap")]
    by_server = {row[1]: row for row in rows}
    ours = by_server["ours (daphne, sqlite+memory)"]
    assert ours[3:6] == ["0", "0", "0"]  # lost, dupes, not persisted
    assert by_server["raw_ws"][3:5] == ["0", "0"] and by_server["raw_ws"][-1] == "1.00x |"
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    results = {r["server"]: r for r in lines if r["scenario"] == "room100-afap"}
    assert results["ours (daphne, sqlite+memory)"]["persisted"] == results["ours (daphne, sqlite+memory)"]["sent"]
    tutorial = results[
        "tutorial (daphne, RedisChannelLayer)" if "tutorial (daphne, RedisChannelLayer)" in results else "tutorial"
    ]
    if os.environ.get("REDIS_URL") or os.environ.get("CHAT_REQUIRE_SERVICES") == "1":
        assert tutorial.get("lost") == 0, tutorial  # the peer needs Redis: with the services it must run
    else:
        assert "lost" in tutorial or tutorial["failed"].startswith("not available")

    ack200 = [r for r in lines if r["scenario"] == "ack200"]
    assert [r["server"] for r in ack200] == ["ours (daphne, sqlite+memory)"]
    assert ack200[0]["lost"] == 0 and ack200[0]["acked"] == ack200[0]["sent"] > 0
    assert ack200[0]["commits"] > 0 and "commits" not in results["ours (daphne, sqlite+memory)"]
    assert "- ack200 on ours (daphne, sqlite+memory): " in done.stdout


def test_run_quick_storm_end_to_end(tmp_path):
    """storm runs on ours alone: every client's reactions are accepted, each client's last view of
    the message is the database's after each phase, and the note under the table gives its figures."""
    output = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        str(BASE_DIR / "bench" / "run.py"),
        "--quick",
        "--only",
        "storm",
        "--output",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=BASE_DIR)
    assert done.returncode == 0, done.stderr

    [storm] = [json.loads(line) for line in output.read_text().splitlines()]
    assert storm["server"] == "ours (daphne, sqlite+memory)" and "failed" not in storm, storm
    assert storm["clients"] == 10 and storm["emoji_per_client"] == 2
    assert storm["sent"] == storm["accepted"] == 40 and storm["errors"] == {}
    assert storm["lost"] == 0 and storm["reactions_per_s"] > 0 and storm["updates_per_s"] > 0
    assert storm["p50_ms"] <= storm["p99_ms"] and storm["all_seen_p99_ms"] > 0
    assert storm["peak_rss_mib"] > 0 and storm["server_cores"] is not None and storm["gap_reads"] >= 0
    add, remove = storm["phases"]["add"], storm["phases"]["remove"]
    # 10 clients x 2 of the 20 emoji, each a neighbour's too: 11 distinct, and none once all are removed.
    assert (add["accepted"], add["final_emoji"], remove["final_emoji"]) == (20, 11, 0)
    assert remove["final_seq"] == add["final_seq"] + 20 and add["updates"] > 0
    assert "\nstorm (every client reacts to one message" in done.stdout
    assert "- ours (daphne, sqlite+memory): " in done.stdout and "| storm |" not in done.stdout


def test_table_compares_with_the_baselines_of_the_same_scenario():
    run = load_bench_module()
    row = {
        "lost": 0,
        "dupes": 0,
        "p50_ms": 12.0,
        "p99_ms": 2500.0,
        "ack_p99_ms": None,
        "handshake_p99_ms": 8.0,
        "peak_rss_mib": 99.6,
        "not_persisted": None,
    }
    results = [
        {**row, "scenario": "rooms100x10", "server": "raw_ws", "deliveries_per_s": 4000.0},
        {
            **row,
            "scenario": "room100-afap",
            "server": "ours (daphne, sqlite+memory)",
            "deliveries_per_s": 1000.0,
            "not_persisted": 0,
            "ack_p99_ms": 30.5,
        },
        {
            **row,
            "scenario": "room100-afap",
            "server": "tutorial (daphne, RedisChannelLayer)",
            "deliveries_per_s": 2000.0,
        },
        {**row, "scenario": "room100-afap", "server": "raw_ws", "deliveries_per_s": 10000.0},
        {"scenario": "cluster2", "server": "ours x2 behind nginx", "failed": "not run: pass --cluster"},
    ]
    lines = run.table(results).splitlines()

    assert lines[0].startswith("| scenario | server | delivered/s | lost | dupes | not persisted | p50 | p99 | ack p99")
    assert lines[2] == (
        "| room100-afap | ours (daphne, sqlite+memory) | 1,000 | 0 | 0 | 0 | 12.0 ms | 2.50 s | 30.5 ms"
        " | 8.0 ms | 100 MiB | 0.50x | 0.10x |"
    )
    assert lines[4].endswith("| 5.00x | 1.00x |")
    assert lines[5].startswith("| rooms100x10 | raw_ws | 4,000 |") and lines[5].endswith("| — | 1.00x |")
    assert lines[6].startswith("| cluster2 | ours x2 behind nginx | not run: pass --cluster |")


def test_the_commit_probe_times_each_commit_it_makes_beside_a_sqlite_database(tmp_path):
    with CommitProbe(f"sqlite:///{tmp_path / 'bench.sqlite3'}", interval=0.005) as probe:
        time.sleep(0.3)
    summary = probe.summary()
    with contextlib.closing(sqlite3.connect(tmp_path / "commit-probe.sqlite3")) as db:
        stored = db.execute("SELECT COUNT(*) FROM commit_probe").fetchone()[0]
    assert summary["commits"] == stored == len(probe.seconds) > 5
    assert 0 < summary["commit_p50_ms"] <= summary["commit_max_ms"] == round(max(probe.seconds) * 1000, 2)
    assert summary["commits_over_20ms"] == sum(1 for seconds in probe.seconds if seconds > 0.02)


@pytest.mark.postgres
def test_the_commit_probe_commits_to_a_table_of_its_own_on_postgresql():
    import psycopg

    with postgres_database(os.environ["DATABASE_URL"]) as url:
        with CommitProbe(url, interval=0.005) as probe:
            time.sleep(0.3)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT COUNT(*) FROM bench_commit_probe").fetchone()[0]
    assert probe.summary()["commits"] == stored > 5


def test_the_disk_notes_list_the_probed_scenarios_only():
    run = load_bench_module()
    probed = {
        "scenario": "ack200",
        "server": "ours (daphne, sqlite+memory)",
        "commits": 480,
        "commit_p50_ms": 0.9,
        "commit_max_ms": 52.4,
        "commits_over_20ms": 3,
    }
    assert run.disk_notes([{"scenario": "room100-afap", "server": "raw_ws"}]) == []
    assert run.disk_notes([{"scenario": "room100-afap", "server": "raw_ws"}, probed])[1:] == [
        "- ack200 on ours (daphne, sqlite+memory): 0.9 ms, 52.4 ms, 3 of 480"
    ]


BURN = """
import sys, time
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("burned", flush=True)
sys.stdin.read()
"""


def test_cpu_seconds_counts_the_processes_below_the_one_named():
    wsbench = load_bench_module("wsbench")
    burner = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert burner.stdout.readline() == "burned\n"
        alone = wsbench.cpu_seconds([burner.pid])
        below_this_one = wsbench.cpu_seconds([os.getpid()]) - sum(os.times()[:2])
    finally:
        burner.communicate("")
    assert 0.29 <= alone < 1
    assert below_this_one >= alone - 0.02  # the burner is below this process: counted with it


def test_the_cluster_note_gives_the_ratio_and_the_cores_each_side_used():
    run = load_bench_module()
    one = {
        "scenario": "cluster2",
        "server": "ours x1",
        "deliveries_per_s": 50000.0,
        "server_cores": 0.98,
        "client_cores": 0.91,
    }
    two = {**one, "server": "ours x2", "deliveries_per_s": 60000.0, "server_cores": 1.05, "client_cores": 0.87}
    assert run.cluster_notes([one]) == []
    note = run.cluster_notes([one, two])[0]
    assert note.startswith("\ncluster2: 2 processes deliver 1.20x of what 1 process does")
    assert note.endswith(
        f"used 0.98 and 1.05 cores and the load client 0.91 and 0.87, of the machine's {os.cpu_count()}."
    )
