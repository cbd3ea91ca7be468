"""Exports and request bodies against clients that hold the server's memory: flow control end to
end (chat/realtime/daphne/), export slots (chat/export.py) and the request body limit."""

import json
import socket
import time

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import override_settings

from chat import export, services
from chat.models import Message
from tests.live import run_daphne
from tests.support import access_token

BODY = "x" * 4000  # CHAT_MAX_BODY: the largest message a user can send
MESSAGES = 6000  # a 24 MB export: many times what the kernel buffers for a socket
STALLED = 10


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


def request_bytes(method: str, path: str, port: int, headers: dict | None = None, body: bytes = b"") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def stalled_client(port: int, request: bytes) -> socket.socket:
    """A socket that sends `request` and never reads: its receive buffer stays small and fills."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def response_head(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """(status, headers, what followed them) of the response on `sock`."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, rest


def big_room(alice):
    room = services.room_create(user=alice, name="General", slug="general")
    Message.objects.bulk_create([Message(room=room, author=alice, body=BODY) for _ in range(MESSAGES)], batch_size=1000)
    return room


# Flow control


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_stalled_export_clients_keep_the_servers_memory_flat(alice):
    big_room(alice)
    request = request_bytes(
        "GET", "/api/rooms/general/export/?format=ndjson", 0, {"Authorization": f"Bearer {access_token(alice)}"}
    )
    env = {"CHAT_EXPORTS_PER_USER": str(STALLED), "CHAT_EXPORTS_PER_PROCESS": str(STALLED)}
    with run_daphne(env) as server:
        request = request.replace(b"127.0.0.1:0", f"127.0.0.1:{server.port}".encode())
        with socket.create_connection(("127.0.0.1", server.port)) as reader:  # one export read whole: warm
            reader.sendall(request.replace(b"HTTP/1.1", b"HTTP/1.0"))
            reader.settimeout(60)
            read = 0
            while chunk := reader.recv(1 << 20):
                read += len(chunk)
            assert read > MESSAGES * len(BODY)
        before = rss_kib(server.process.pid)
        clients = [stalled_client(server.port, request) for _ in range(STALLED)]
        peak = before
        for _ in range(40):  # 10 s: unpaced, the server makes the ten files in about 3
            time.sleep(0.25)
            peak = max(peak, rss_kib(server.process.pid))
        growth_mib = (peak - before) / 1024
        print(f"RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB: +{growth_mib:.1f} MiB")
        assert growth_mib < 30
        for client in clients:
            client.close()
        # the stalled exports gave their slots back: the process serves another one
        time.sleep(1)
        with socket.create_connection(("127.0.0.1", server.port)) as again:
            again.sendall(request)
            status, _, _ = response_head(again)
        assert status == 200, server.output()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_client_that_reads_nothing_is_dropped_after_the_send_timeout(alice):
    big_room(alice)
    with run_daphne({"CHAT_HTTP_SEND_TIMEOUT_S": "1"}) as server:
        client = stalled_client(
            server.port,
            request_bytes(
                "GET", "/api/rooms/general/export/", server.port, {"Authorization": f"Bearer {access_token(alice)}"}
            ),
        )
        time.sleep(4)  # the send timeout, and then some
        client.settimeout(10)
        received = b""
        with pytest.raises(ConnectionResetError):  # the server aborted it
            while chunk := client.recv(1 << 20):
                received += chunk
        assert len(received) < MESSAGES * len(BODY) / 4
        client.close()
        assert "read nothing for 1.0 s" in server.output()


# Export slots


def export_of(api, user):
    return api(user).get("/api/rooms/general/export/?format=ndjson")


def close(response) -> None:
    """End a response as the server does, keeping the test's database connection (as the test client does)."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


@pytest.fixture
def general_with_a_message(general_with_bob, alice):
    services.message_send(user=alice, slug="general", body="hello")


@override_settings(CHAT_EXPORTS_PER_USER=2, CHAT_EXPORTS_PER_PROCESS=10)
def test_a_user_over_their_export_limit_gets_429_with_retry_after(api, alice, bob, general_with_a_message):
    running = [export_of(api, alice) for _ in range(2)]
    assert [r.status_code for r in running] == [200, 200]
    refused = export_of(api, alice)
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(export.EXPORT_RETRY_AFTER_S)
    assert refused.json()["code"] == "rate_limited" and "2 exports running" in refused.json()["detail"]
    other = export_of(api, bob)  # another user is not affected
    assert other.status_code == 200
    b"".join(running[0].streaming_content)  # a finished export gives its slot back
    again = export_of(api, alice)
    assert again.status_code == 200
    for response in (running[1], other, again):
        close(response)


@override_settings(CHAT_EXPORTS_PER_USER=5, CHAT_EXPORTS_PER_PROCESS=2)
def test_the_process_export_limit_refuses_everyone_until_one_ends(api, alice, bob, general_with_a_message):
    running = [export_of(api, alice), export_of(api, bob)]
    refused = export_of(api, bob)
    assert refused.status_code == 429 and refused["Retry-After"] == str(export.EXPORT_RETRY_AFTER_S)
    close(running[0])  # closed unread: the slot comes back all the same
    again = export_of(api, bob)
    assert again.status_code == 200 and b'"hello"' in b"".join(again.streaming_content)
    close(running[1])


# Request bodies


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_body_over_the_limit_is_refused_from_its_content_length_before_it_is_read(alice):
    with (
        run_daphne({"CHAT_MAX_REQUEST_BYTES": "100000"}) as server,
        socket.create_connection(("127.0.0.1", server.port)) as within,
        socket.create_connection(("127.0.0.1", server.port)) as client,
    ):
        body = json.dumps({"username": "alice", "password": "wrong" * 19000}).encode()  # 95 kB: the app answers
        within.sendall(
            request_bytes(
                "POST",
                "/api/auth/token/",
                server.port,
                {"Content-Type": "application/json", "Content-Length": str(len(body))},
                body,
            )
        )
        assert response_head(within)[0] == 401
        client.sendall(
            request_bytes(
                "POST",
                "/api/auth/token/",
                server.port,
                {"Content-Type": "application/json", "Content-Length": "500000000"},
                b"{",
            )
        )
        status, headers, rest = response_head(client)  # at once: the server does not wait for 500 MB
        assert status == 413 and headers["connection"] == "close"
        while len(rest) < int(headers["content-length"]):
            rest += client.recv(65536)
        assert json.loads(rest) == {
            "detail": "Request bodies are limited to 100000 bytes: send less.",
            "code": "too_large",
        }
        assert client.recv(65536) == b""  # and closes the connection


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_is_refused_once_it_passes_the_limit():
    chunk = b"x" * 50000
    with (
        run_daphne({"CHAT_MAX_REQUEST_BYTES": "100000"}) as server,
        socket.create_connection(("127.0.0.1", server.port)) as client,
    ):
        client.sendall(
            request_bytes(
                "POST",
                "/api/auth/token/",
                server.port,
                {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            )
        )
        for _ in range(3):
            client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        client.sendall(b"0\r\n\r\n")
        status, headers, _ = response_head(client)
        assert status == 413 and headers["connection"] == "close"
