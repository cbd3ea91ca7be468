"""The process settings of the ASGI entry point (chatproject/asgi.py), in a fresh process as daphne starts one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("configured, interval", [(None, 0.001), ("2.5", 0.0025)])
def test_a_server_process_hands_the_gil_over_within_its_switch_interval(configured, interval):
    """Python's default 5 ms would let the busy event loop keep the database thread waiting
    that long after every round trip (CHAT_SWITCH_INTERVAL_MS)."""
    env = {k: v for k, v in os.environ.items() if k != "CHAT_SWITCH_INTERVAL_MS"}
    if configured:
        env["CHAT_SWITCH_INTERVAL_MS"] = configured
    shown = subprocess.run(
        [sys.executable, "-c", "import sys, chatproject.asgi; print(sys.getswitchinterval())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert float(shown.stdout) == pytest.approx(interval)


def test_no_middleware_sends_a_request_through_a_thread_and_back(caplog, settings):
    """Under daphne every middleware runs on the event loop; only the view goes to a thread. A
    sync-only middleware (WhiteNoise's own) would cost each request two more thread switches."""
    from django.core.handlers.asgi import ASGIHandler

    settings.DEBUG = True  # Django logs each adaptation then
    with caplog.at_level("DEBUG", logger="django.request"):
        ASGIHandler()
    assert not [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]


def asgi_get(path: str) -> tuple[int, bytes]:
    """Status and body of a GET through Django's ASGI handler, as daphne calls it."""
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator
    from django.core.handlers.asgi import ASGIHandler

    async def get():
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
        }
        communicator = ApplicationCommunicator(ASGIHandler(), scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(5)
        body = b""
        while True:
            message = await communicator.receive_output(5)
            body += message.get("body", b"")
            if not message.get("more_body"):
                return start["status"], body

    return async_to_sync(get)()


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
@pytest.mark.parametrize("debug", [False, True], ids=["files-listed-at-start", "development-looks-on-disk"])
def test_static_files_are_served_on_both_paths(client, settings, debug):
    settings.DEBUG = debug  # WhiteNoise's autorefresh follows it
    assert client.get("/static/chat/js/room.js").status_code == 200  # the test client's sync path
    status, body = asgi_get("/static/chat/js/room.js")
    assert status == 200
    assert b"connection" in body
    assert asgi_get("/static/chat/js/none.js")[0] == 404
    assert asgi_get("/healthz")[0] == 200  # everything else goes on to Django
