"""Any burst is answered: however many frames arrive at once, each gets its reply, in order,
while the reader pauses at FRAMES_IN_FLIGHT and resumes. Through the test communicator and
through a real daphne.
"""

import json

import pytest
from channels.testing import WebsocketCommunicator

from chat.models import Message
from chat.realtime.connection import FRAMES_IN_FLIGHT
from chatproject.asgi import application
from tests.support import access_token, db, ws_connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]

BURST = 500


@pytest.fixture
def no_rate_limit(settings):
    settings.CHAT_RATE_PER_10S = 100_000


def burst(every_send: int) -> list[dict]:
    """BURST frames: a `message.send` every `every_send` frames (never, with 0), pings between."""
    return [
        {"type": "message.send", "room": "general", "body": f"m{i}", "client_id": f"c{i}", "ref": f"r{i}"}
        if every_send and i % every_send == 0
        else {"type": "ping", "ref": f"r{i}"}
        for i in range(BURST)
    ]


def replies_in(received: list[dict]) -> list[dict]:
    """The replies among frames received: others (the user's own presence) carry no `ref`."""
    assert not [frame for frame in received if "ref" not in frame and frame["type"] in ("pong", "error")], received
    return [frame for frame in received if "ref" in frame]


def check_replies(frames: list[dict], replies: list[dict]) -> None:
    """Each frame answered exactly once, in order, with what it asked for."""
    assert [reply.get("ref") for reply in replies] == [frame["ref"] for frame in frames]
    expected = ["message.new" if frame["type"] == "message.send" else "pong" for frame in frames]
    assert [reply["type"] for reply in replies] == expected
    sends = [frame for frame in frames if frame["type"] == "message.send"]
    assert [reply["message"]["body"] for reply in replies if reply["type"] == "message.new"] == [
        frame["body"] for frame in sends
    ]


@pytest.mark.parametrize("every_send", [0, 7], ids=["pings", "pings-and-sends"])
async def test_a_burst_through_the_communicator_is_answered_in_order(alice, general, no_rate_limit, every_send):
    assert BURST > FRAMES_IN_FLIGHT * 7
    comm = WebsocketCommunicator(application, f"/ws/chat/?token={access_token(alice)}")
    assert (await comm.connect())[0]
    assert json.loads((await comm.receive_output(5))["text"])["type"] == "hello"
    frames = burst(every_send)
    for frame in frames:  # all of them before reading any reply
        await comm.send_to(text_data=json.dumps(frame))
    replies = []
    while len(replies) < len(frames):
        out = await comm.receive_output(10)
        assert out["type"] == "websocket.send", f"after {len(replies)} replies: {out}"
        replies += replies_in([json.loads(out["text"])])
    check_replies(frames, replies)
    assert await comm.receive_nothing(0.2) or replies_in([json.loads((await comm.receive_output())["text"])]) == []
    assert await db(Message.objects.filter(room=general, author=alice).count)() == sum(
        frame["type"] == "message.send" for frame in frames
    )
    await comm.disconnect()


@pytest.mark.live
@pytest.mark.parametrize("every_send", [0, 7], ids=["pings", "pings-and-sends"])
async def test_a_burst_through_daphne_is_answered_in_order(daphne_a, alice, general, no_rate_limit, every_send):
    client = await ws_connect(daphne_a, alice)
    frames = burst(every_send)
    for frame in frames:  # written back to back, before reading any reply: they arrive in a few segments
        await client.send(**frame)
    replies = []
    while len(replies) < len(frames):
        replies += replies_in([await client.recv(10)])
    check_replies(frames, replies)
    assert replies_in(await client.drain(0.3)) == []
    await client.close()
