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
    """The async chain (an async view's requests) runs every middleware on the event loop. A
    sync-only middleware (WhiteNoise's own) would send the rest of the chain to a thread and back."""
    from django.core.handlers.asgi import ASGIHandler

    settings.DEBUG = True  # Django logs each adaptation then
    with caplog.at_level("DEBUG", logger="django.request"):
        ASGIHandler()
    assert not [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]


def asgi_get(path: str) -> tuple[int, bytes]:
    """Status and body of a GET through the server's Django handler, as daphne calls it."""
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator

    from chat.handlers import Handler

    async def get():
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
        }
        communicator = ApplicationCommunicator(Handler(), scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(5)
        body = b""
        while True:
            message = await communicator.receive_output(5)
            body += message.get("body", b"")
            if not message.get("more_body"):
                await communicator.wait(5)  # the response's close and `request_finished` too
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


@pytest.fixture
def thread_hops(monkeypatch):
    """The functions a request sent to a thread with asgiref's `sync_to_async`, in order."""
    from asgiref.sync import SyncToAsync

    hops = []
    original = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return hops


@pytest.mark.django_db
def test_a_sync_view_and_its_middleware_go_to_a_thread_once(thread_hops):
    """Django's async mode goes to a thread and back for each hook of each Django middleware."""
    assert asgi_get("/api/users/")[0] == 401  # a REST view, through every middleware
    assert thread_hops.count("BaseHandler.get_response") == 1
    assert len(thread_hops) <= 3, thread_hops  # request_started, the request, the response's close


@pytest.mark.django_db
def test_an_async_view_keeps_the_async_path(thread_hops):
    """An upload must not hold a thread while its body is read and stored."""
    assert asgi_get("/api/rooms/general/uploads/")[0] == 405  # the upload view answers a GET
    assert "BaseHandler.get_response" not in thread_hops


@pytest.mark.django_db
def test_a_sync_view_closes_its_response_on_the_thread_it_ran_on(monkeypatch):
    """`request_finished` returns the thread's database connection to the pool: it must run on
    the thread that took it, the request's one thread."""
    import threading

    from django.core.signals import request_finished
    from rest_framework.views import APIView

    seen = {}
    original = APIView.dispatch

    def dispatch(self, request, *args, **kwargs):
        seen["view"] = threading.get_ident()
        return original(self, request, *args, **kwargs)

    def finished(**kwargs):
        seen["finished"] = threading.get_ident()

    monkeypatch.setattr(APIView, "dispatch", dispatch)
    request_finished.connect(finished)
    try:
        assert asgi_get("/api/users/")[0] == 401
    finally:
        request_finished.disconnect(finished)
    assert seen["finished"] == seen["view"]
