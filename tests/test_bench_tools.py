"""The benchmark tools in bench/, on a small scale: what they report is what happened.

bench/idle.py runs as a subprocess against a live daphne; bench/history.py's seeding,
query counting and timing run on the test database.
"""

import json
import subprocess
import sys

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from bench import history
from bench import search as search_bench
from chat import search
from chat.models import Message
from tests.live import BASE_DIR, run_daphne

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

# Fifty connections over two accounts, and logins as fast as the tool makes them.
IDLE_ENV = {"CHAT_MAX_CONNECTIONS_PER_USER": "100", "CHAT_LOGIN_RATE": "1000/min", "CHAT_REGISTER_RATE": "1000/min"}


def run_idle(server, *args) -> dict:
    """Run bench/idle.py against `server`; its JSON line, decoded."""
    completed = subprocess.run(
        [
            sys.executable,
            "bench/idle.py",
            "--url",
            server.url,
            "--pid",
            str(server.process.pid),
            "--accounts",
            "2",
            "--warmup",
            "5",
            "--settle",
            "0.5",
            *args,
        ],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert completed.returncode == 0 and lines, f"idle.py failed:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(lines[0])


def test_idle_gets_hello_on_every_connection_and_reports_memory_per_connection():
    with run_daphne(IDLE_ENV) as server:
        result = run_idle(server, "--connections", "50")
    assert result["opened"] == result["hello"] == 50
    assert result["failed"] == 0
    assert result["rss_after_kib"] > result["rss_before_kib"]
    assert result["kib_per_connection"] > 0


def test_idle_churn_reopens_connections_and_samples_memory():
    with run_daphne(IDLE_ENV) as server:
        result = run_idle(
            server, "--connections", "20", "--churn-seconds", "2", "--churn-per-second", "5", "--sample-every", "1"
        )
    churn = result["churn"]
    assert churn["failed"] == 0
    assert churn["reopened"] >= 5
    assert len(churn["samples"]) >= 2
    assert churn["rss_max_kib"] >= max(churn["rss_start_kib"], churn["rss_end_kib"])


def test_history_seeds_once_and_counts_the_same_queries_for_newest_and_deep_pages():
    room, author, added = history.bench_room(300)
    assert added == 300
    assert history.bench_room(300)[2] == 0  # already seeded: nothing added
    assert Message.objects.filter(room=room).count() == 300

    paths = history.page_paths(room, limit=20)
    newest, _ = history.count_queries(author, paths["newest"])
    deep, _ = history.count_queries(author, paths["deep"])
    assert newest == deep > 0


def test_history_times_both_pages_through_a_live_server():
    room, author, _ = history.bench_room(300)
    paths = history.page_paths(room, limit=20)
    first = Message.objects.filter(room=room).order_by("id").first()
    assert paths["deep"].endswith(f"before={first.pk + 40}")
    with run_daphne() as server:
        timings = {
            page: history.time_requests(
                server.port, str(AccessToken.for_user(author)), path, count=5, limit=20, warmup=1
            )
            for page, path in paths.items()
        }
    for timing in timings.values():
        assert timing["requests"] == 5
        assert 0 < timing["p50_ms"] <= timing["p99_ms"] <= timing["max_ms"]


def test_search_bench_seeds_the_mix_once_and_its_queries_find_it():
    room, author, added = search_bench.bench_room(300)
    assert added == 300 and search_bench.bench_room(300)[2] == 0
    bodies = list(Message.objects.filter(room=room).order_by("id").values_list("body", flat=True))
    assert bodies[0] == "我们明天开会讨论中文消息的搜索 1" and "zebra 大熊猫" in bodies[76]
    found = {label: len(search.search_messages(author, q, limit=200)[0]) for label, q in search_bench.QUERIES.items()}
    assert found["common word"] == 90 and found["rare word"] == 1 and found["Chinese, 2 chars, rare"] == 1
    assert found["two that never meet"] == 0 and found["rare phrase"] == 1
    queries, _ = history.count_queries(author, "/api/search/?q=meeting&limit=20")
    assert queries > 0
