"""Daphne's direct writes (chat/realtime/daphne/), against real Twisted TCP connections.

Each connection is Twisted's own `tcp.Server` on one end of a socket pair; no event loop runs,
so what Twisted buffers stays buffered until the test calls `doWrite`, as the reactor would.
"""

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from chat.realtime.daphne import _write, corked, unsent_bytes, writes_straight_through


class Reactor:
    """The reactor's part of a connection: which sockets Twisted asks it to watch."""

    def __init__(self):
        self.writers = set()

    def addWriter(self, writer):
        self.writers.add(writer)

    def removeWriter(self, writer):
        self.writers.discard(writer)

    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass


def connection(sndbuf=None):
    """(a real Twisted TCP connection on our end of a socket pair, the peer's socket)."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    if sndbuf:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return tcp.Server(ours, Protocol(), ("127.0.0.1", 1), None, 1, Reactor()), peer


def received(peer, size, conn=None):
    """`size` bytes from the peer; with `conn`, Twisted's buffer is flushed meanwhile, as the reactor would."""
    data = b""
    peer.settimeout(1)
    while len(data) < size:
        if conn is not None and unsent_bytes(conn):
            conn.doWrite()
        data += peer.recv(1 << 20)
    return data


def nothing_received(peer) -> bool:
    peer.setblocking(False)
    try:
        peer.recv(10)
    except BlockingIOError:
        return True
    return False


def test_unsent_bytes_counts_what_twisted_holds_until_the_kernel_takes_it():
    conn, peer = connection(sndbuf=4096)
    assert unsent_bytes(conn) == 0 and writes_straight_through(conn)
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes at once
    conn.write(payload)  # Twisted's own write: held until the reactor's next pass
    assert unsent_bytes(conn) == len(payload) and not writes_straight_through(conn)
    conn.doWrite()  # the pass: the kernel takes what it can
    taken = len(payload) - unsent_bytes(conn)
    assert 0 < taken < len(payload)
    assert received(peer, len(payload), conn) == payload
    assert unsent_bytes(conn) == 0


def test_a_frame_goes_straight_to_an_idle_socket():
    conn, peer = connection()
    _write(conn, b"frame")
    assert unsent_bytes(conn) == 0 and not conn.reactor.writers  # never handed to the reactor
    assert received(peer, 5) == b"frame"


def test_what_the_kernel_does_not_take_waits_in_twisteds_buffer_in_order():
    conn, peer = connection(sndbuf=4096)
    payload = bytes(range(256)) * 4096
    _write(conn, payload)
    assert 0 < unsent_bytes(conn) < len(payload) and conn.reactor.writers
    assert received(peer, len(payload), conn) == payload


def test_behind_buffered_data_a_frame_waits_its_turn():
    conn, peer = connection()
    conn.write(b"earlier")  # waiting in Twisted's buffer
    _write(conn, b"later")
    assert unsent_bytes(conn) == 12
    assert nothing_received(peer)  # nothing was sent around the buffer
    conn.doWrite()
    assert received(peer, 12) == b"earlierlater"


def test_a_closing_connection_is_written_through_twisted():
    conn, _ = connection()
    conn.disconnecting = True  # as `loseConnection` leaves it
    assert not writes_straight_through(conn)


def test_frames_written_while_corked_go_to_each_socket_in_one_send(monkeypatch):
    (first, peer1), (second, peer2) = connection(), connection()
    sends = []
    for conn in (first, second):
        monkeypatch.setattr(conn, "socket", Recorder(conn.socket, sends))
    with corked():
        _write(first, b"a1")
        _write(second, b"b1")
        with corked():  # nested: the outer one sends
            _write(first, b"a2")
        assert nothing_received(peer1)  # nothing is sent before the end
    assert sends == [b"a1a2", b"b1"]
    assert received(peer1, 4) == b"a1a2" and received(peer2, 2) == b"b1"
    _write(first, b"a3")  # uncorked again
    assert received(peer1, 2) == b"a3"


class Recorder:
    """A socket whose sends are recorded."""

    def __init__(self, sock, sends):
        self.sock, self.sends = sock, sends

    def send(self, data):
        self.sends.append(bytes(data))
        return self.sock.send(data)

    def fileno(self):
        return self.sock.fileno()
