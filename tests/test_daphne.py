"""Writes to daphne's sockets from the hub (chat/realtime/daphne.py)."""
import socket

import pytest
from twisted.internet import tcp

from chat.realtime.daphne import _write, corked


class Transport(tcp.Connection):
    """A Twisted TCP connection on one end of a socket pair, recording what goes through
    Twisted's buffered `write` instead of straight to the socket."""

    def __init__(self, sock):
        self.socket, self.connected, self.disconnecting, self._writeDisconnected = sock, 1, False, False
        self.dataBuffer, self.offset, self._tempDataBuffer, self._tempDataLen = b"", 0, [], 0
        self.buffered = []

    def write(self, data):
        self.buffered.append(bytes(data))


def pair(sndbuf=None):
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    if sndbuf:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return ours, peer


def received(peer, size):
    data = b""
    peer.settimeout(1)
    while len(data) < size:
        data += peer.recv(1 << 20)
    return data


def test_a_frame_goes_straight_to_an_idle_socket():
    ours, peer = pair()
    transport = Transport(ours)
    _write(transport, b"frame")
    assert transport.buffered == [] and received(peer, 5) == b"frame"


def test_what_the_kernel_does_not_take_waits_in_twisteds_buffer_in_order():
    ours, peer = pair(sndbuf=4096)
    transport = Transport(ours)
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes at once
    _write(transport, payload)
    assert transport.buffered and len(transport.buffered[0]) < len(payload)
    assert received(peer, len(payload) - len(transport.buffered[0])) + transport.buffered[0] == payload


def test_behind_buffered_data_a_frame_waits_its_turn():
    ours, peer = pair()
    transport = Transport(ours)
    transport._tempDataBuffer, transport._tempDataLen = [b"earlier"], 7
    _write(transport, b"later")
    assert transport.buffered == [b"later"]
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing was sent around the buffer
        peer.recv(10)


def test_frames_written_while_corked_go_to_each_socket_in_one_send(monkeypatch):
    (ours1, peer1), (ours2, peer2) = pair(), pair()
    first, second = Transport(ours1), Transport(ours2)
    sends = []
    for transport in (first, second):
        monkeypatch.setattr(transport, "socket", Recorder(transport.socket, sends))
    with corked():
        _write(first, b"a1")
        _write(second, b"b1")
        with corked():  # nested: the outer one sends
            _write(first, b"a2")
        peer1.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing is sent before the end
            peer1.recv(10)
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
