"""Writes to daphne's sockets from the hub (chatproject.daphne_patches)."""
import socket

import pytest
from twisted.internet import tcp

from chatproject.daphne_patches import _write


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
