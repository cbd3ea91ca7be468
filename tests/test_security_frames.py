"""RFC 6455 violations sent as raw frames to a real daphne: each is answered with a close frame
(1002, 1007, 1009), never a TCP reset (chat/realtime/daphne/, `_websocket_limits`)."""

import base64
import os
import socket
import struct

import pytest
from django.conf import settings

from tests.support import access_token

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


def frame(payload: bytes, *, opcode: int = TEXT, rsv: int = 0, fin: bool = True) -> bytes:
    """A client frame: masked, as RFC 6455 requires of clients. `rsv` sets the reserved bits (0-7)."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A WebSocket client on a bare TCP socket, which sends whatever bytes a test gives it."""

    def __init__(self, port: int, token: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws/chat/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self) -> None:
        chunk = self.sock.recv(65536)  # a reset raises ConnectionResetError here
        assert chunk, "the server closed the TCP connection without a close frame"
        self.buffer += chunk

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._read()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def next_frame(self) -> tuple[int, bytes]:
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        return first & 0x0F, self._take(length)

    def close_frame(self) -> tuple[int, str]:
        """(code, reason) of the server's close frame, skipping the frames before it; answers it."""
        while True:
            opcode, payload = self.next_frame()
            if opcode == CLOSE:
                self.sock.sendall(frame(payload[:2], opcode=CLOSE))
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


@pytest.fixture
def client(daphne_a, alice, general):
    raw = RawSocket(daphne_a.port, access_token(alice))
    opcode, hello = raw.next_frame()
    assert opcode == TEXT and b'"hello"' in hello
    yield raw
    raw.sock.close()


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits_close_with_1002(client, rsv):
    client.sock.sendall(frame(b'{"type": "ping"}', rsv=rsv))
    assert client.close_frame()[0] == 1002


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_an_unknown_opcode_closes_with_1002(client, opcode):
    client.sock.sendall(frame(b"x", opcode=opcode))
    assert client.close_frame()[0] == 1002


def test_a_fragmented_control_frame_closes_with_1002(client):
    client.sock.sendall(frame(b"", opcode=0x9, fin=False))  # a ping must not be fragmented
    assert client.close_frame()[0] == 1002


def test_an_unmasked_client_frame_closes_with_1002(client):
    client.sock.sendall(bytes([0x80 | TEXT, len(b'{"type": "ping"}')]) + b'{"type": "ping"}')
    assert client.close_frame()[0] == 1002


def test_invalid_utf8_in_a_text_frame_closes_with_1007(client):
    client.sock.sendall(frame(b'{"type": "ping", "ref": "\xff\xfe"}'))
    assert client.close_frame()[0] == 1007


def test_a_frame_over_the_limit_closes_with_1009_from_its_header(client):
    limit = settings.CHAT_MAX_FRAME_BYTES
    client.sock.sendall(frame(b"x" * (2 * 1024 * 1024), opcode=BINARY))  # over daphne's own 1 MiB too
    assert client.close_frame() == (1009, f"frame over {limit} bytes")


def test_a_message_over_the_limit_in_small_fragments_closes_with_1009(client):
    client.sock.sendall(frame(b'{"type": "ping", "ref": "r"}'))  # a well-formed frame is answered as ever
    while (reply := client.next_frame()) and b'"pong"' not in reply[1]:
        assert reply[0] == TEXT  # presence and the like, then the pong
    limit = settings.CHAT_MAX_FRAME_BYTES
    piece = b"x" * (limit // 4)
    client.sock.sendall(frame(piece, fin=False) + b"".join(frame(piece, opcode=0, fin=False) for _ in range(4)))
    assert client.close_frame() == (1009, f"frame over {limit} bytes")
