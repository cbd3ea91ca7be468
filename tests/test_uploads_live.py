"""The upload size limit against a real daphne and raw sockets: refused while the body arrives,
answered before the client has sent it all, and nothing stored."""

import concurrent.futures
import json
import os
import socket
import uuid

import pytest

from chat import services
from tests.live import run_daphne
from tests.support import access_token
from tests.test_security_export import request_bytes, response_head, rss_kib

LIMIT = 1_000_000


def multipart(content: bytes, name: str) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return f"multipart/form-data; boundary={boundary}", head + content + f"\r\n--{boundary}--\r\n".encode()


def stored_files(media) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(media) for name in names]


@pytest.fixture
def server(alice, tmp_path):
    services.room_create(user=alice, name="General", slug="general")
    env = {
        "CHAT_MAX_UPLOAD_BYTES": str(LIMIT),
        "CHAT_MAX_REQUEST_BYTES": "100000",
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    with run_daphne(env) as server:
        server.media = tmp_path / "media"
        yield server


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_an_upload_over_the_requests_limit_but_within_the_uploads_is_stored(server, alice):
    content = os.urandom(900_000)  # over CHAT_MAX_REQUEST_BYTES (set to 100 kB), within LIMIT
    content_type, body = multipart(content, "noise.bin")
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        headers = {
            "Authorization": f"Bearer {access_token(alice)}",
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
        }
        client.sendall(request_bytes("POST", "/api/rooms/general/uploads/", server.port, headers, body))
        status, headers, rest = response_head(client, timeout=30)
        while len(rest) < int(headers["content-length"]):
            rest += client.recv(65536)
    assert status == 201, rest
    assert json.loads(rest)["size"] == len(content)
    assert len(stored_files(server.media)) == 1


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_content_length_over_the_limit_is_answered_413_before_the_body_is_sent(server, alice):
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        headers = {
            "Authorization": f"Bearer {access_token(alice)}",
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(LIMIT * 30),
        }
        client.sendall(request_bytes("POST", "/api/rooms/general/uploads/", server.port, headers, b"--x\r\n"))
        status, headers, rest = response_head(client)  # 30 MB announced, a few bytes sent
        while len(rest) < int(headers["content-length"]):
            rest += client.recv(65536)
    assert status == 413 and json.loads(rest)["code"] == "too_large"
    assert stored_files(server.media) == []


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_chunked_upload_is_refused_as_soon_as_it_passes_the_limit(server, alice):
    chunk = os.urandom(256 * 1024)
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        headers = {
            "Authorization": f"Bearer {access_token(alice)}",
            "Content-Type": "multipart/form-data; boundary=x",
            "Transfer-Encoding": "chunked",
        }
        client.sendall(request_bytes("POST", "/api/rooms/general/uploads/", server.port, headers))
        sent = 0
        while sent <= LIMIT + 64 * 1024:  # just past the limit, and far from the end of the body
            client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        status, headers, rest = response_head(client)  # the final chunk was never sent
    assert status == 413 and headers["connection"] == "close"
    assert stored_files(server.media) == []
    assert server.process.poll() is None


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_never_hold_their_bodies_in_the_servers_memory(alice, tmp_path):
    """Four 20 MB uploads at once: the server's RSS grows by a fraction of one body (Twisted's
    multipart parse and daphne's queue held each about eight times over)."""
    services.room_create(user=alice, name="General", slug="general")
    size, uploads = 20_000_000, 4
    env = {"CHAT_MAX_UPLOAD_BYTES": str(size + 1000), "MEDIA_ROOT": str(tmp_path / "media")}
    with run_daphne(env) as server:
        before = rss_kib(server.process.pid)
        content_type, body = multipart(os.urandom(size), "big.bin")
        headers = {
            "Authorization": f"Bearer {access_token(alice)}",
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
        }
        request = request_bytes("POST", "/api/rooms/general/uploads/", server.port, headers, body)
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(uploads)]
        peak = [before]
        with concurrent.futures.ThreadPoolExecutor(uploads) as pool:
            sent = [pool.submit(client.sendall, request) for client in clients]
            while not all(future.done() for future in sent):
                peak[0] = max(peak[0], rss_kib(server.process.pid))
            statuses = [response_head(client, timeout=60)[0] for client in clients]
        for client in clients:
            client.close()
        peak[0] = max(peak[0], rss_kib(server.process.pid))
        assert statuses == [201] * uploads, server.output()
    assert len(stored_files(tmp_path / "media")) == uploads
    assert (peak[0] - before) * 1024 < size, f"RSS grew by {(peak[0] - before) // 1024} MiB"
