"""Hostile input over WebSocket (security review, findings 3 and 11), through the full ASGI stack:
a poisoned send among others written in the same batch fails alone, and hostile JSON gets an
`error` frame, one log line and no traceback, while every socket stays open.
"""

import asyncio
import json
import logging
import threading
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model

from chat import protocol, services
from chat.models import Message
from chat.realtime import consumer
from chat.realtime import writer as batch_writer
from tests.support import connect, db

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]

NUL, SURROGATE = "\\u0000", "\\ud800"  # as a client writes them in JSON


@pytest.fixture
def held_writer(monkeypatch):
    """Holds the first batch on the database thread until `release()`, so that the sends
    arriving meanwhile are written together, as the next batch; records each batch's size."""
    batches, gate, write = [], threading.Event(), services.message_send_batch

    def held(requests):
        batches.append(len(requests))
        if len(batches) == 1:
            gate.wait(10)
        return write(requests)

    monkeypatch.setattr(services, "message_send_batch", held)

    async def until(condition):
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)

    async def hold():
        """Until the first batch is on the database thread."""
        await until(lambda: batches)

    async def queued(count: int):
        """Until `count` sends wait behind the held batch."""
        await until(lambda: len(batch_writer._sends().waiting) >= count)

    yield SimpleNamespace(batches=batches, hold=hold, queued=queued, release=gate.set)
    gate.set()  # a test that failed before its release must not leave the database thread held


@pytest.mark.parametrize(
    "rule, field, poison",
    [
        ("on", "body", NUL),
        ("on", "body", SURROGATE),
        ("on", "client_id", NUL),
        ("on", "client_id", SURROGATE),
        ("on", "to", SURROGATE),
        ("on", "ref", SURROGATE),
        # Defence in depth: the frame rule and the services' checks switched off, the database refuses it.
        ("off", "body", SURROGATE),
        ("off", "client_id", SURROGATE),
    ],
)
async def test_a_poisoned_send_among_concurrent_sends_fails_alone(
    general_of_four, alice, bob, carol, held_writer, monkeypatch, caplog, rule, field, poison
):
    writer = held_writer
    if rule == "off":
        monkeypatch.setattr(protocol, "unstorable_field", lambda data, text=None: None, raising=False)
        monkeypatch.setattr(services._common, "storable", lambda name, text: text)
    dave = await db(lambda: get_user_model().objects.get(username="dave"))()
    clients = {user.username: await connect(user) for user in (alice, bob, carol, dave)}
    await clients["alice"].send(type="message.send", room="general", body="first", ref="a0")
    await writer.hold()
    for name in ("bob", "carol", "dave", "alice"):
        frame = {
            "type": "message.send",
            "room": "general",
            "body": f"from {name}",
            "client_id": f"{name}-1",
            "ref": f"{name}-ref",
        }
        if name == "carol":
            if field == "to":
                del frame["room"]
                frame["to"] = "bob<>"
            else:
                frame[field] += "<>"
        await clients[name].send_raw(json.dumps(frame).replace("<>", poison))
    await writer.queued(4 if rule == "off" else 3)
    writer.release()

    for name in ("alice", "bob", "dave"):
        ack = await clients[name].expect("message.new", ref=f"{name}-ref")
        assert ack["message"]["body"] == f"from {name}"
    error = await clients["carol"].expect("error")
    assert error["code"] == "invalid"
    assert ("NUL (U+0000) or unpaired surrogates" if rule == "on" else "database could not store") in error["detail"]
    assert error.get("ref") == (None if field == "ref" else "carol-ref")
    assert writer.batches[1] == (4 if rule == "off" else 3)  # the poisoned send, if it got that far, with the good ones
    for name, client in clients.items():  # every socket is still open
        await client.send(type="ping", ref="p")
        assert (await client.expect("pong"))["ref"] == "p"
        await client.close()
    bodies = await db(lambda: list(Message.objects.filter(kind="user").order_by("id").values_list("body", flat=True)))()
    assert bodies[0] == "first" and sorted(bodies[1:]) == ["from alice", "from bob", "from dave"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


HOSTILE = [
    ("[" * 2000 + "]" * 2000, "bad_frame"),
    ('{"type": "ping", "ref": "r", "x": ' + "[" * 2000 + "]" * 2000 + "}", "bad_frame"),
    ("[" * 100_000 + "]" * 100_000, "bad_frame"),
    ('{"type": "join", "room": "general", "since": 1e400}', "invalid"),
    ('{"type": "join", "room": "general", "since": ' + "9" * 5000 + "}", "bad_frame"),
    ('{"type": "message.delete", "id": %d}' % 2**64, "invalid"),
    ('{"type": "read", "room": "general", "message_id": %d}' % 2**63, "invalid"),
    ('{"type": "ping", "ref": "r\\ud800"}', "invalid"),
    ('{"type": "ping\\ud800"}', "invalid"),
    ('{"type": "message.send", "to": "bob\\ud800", "body": "x"}', "invalid"),
    ('{"type": "message.send", "to": "bob\\u0000", "body": "x"}', "invalid"),
    ('{"type": "message.send", "room": "general", "body": "x", "client_id": "c\\ud800"}', "invalid"),
    ('{"type": "message.edit", "id": 1, "body": "x\\udfff"}', "invalid"),
]


async def test_hostile_frames_get_an_error_one_log_line_and_the_socket_stays_open(
    general_of_four, alice, settings, caplog
):
    settings.CHAT_MAX_FRAME_BYTES = 300_000  # 100,000 levels of nesting fit in a frame
    caplog.set_level(logging.INFO)
    a = await connect(alice)
    await a.drain()
    for text, code in HOSTILE:
        caplog.clear()
        await a.send_raw(text)
        error = await a.expect("error")
        assert error["code"] == code, (text[:80], error)
        assert "\\u" not in json.dumps(error), error  # nothing unencodable echoed
        await a.send(type="ping", ref="p")
        assert (await a.expect("pong"))["ref"] == "p"
        assert [r.levelno for r in caplog.records if r.name.startswith("chat")] == [logging.INFO]
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert await db(Message.objects.filter(kind="user").count)() == 0
    await a.close()


@pytest.mark.parametrize("slug", ["\x00", "\ud800", "a\x00b"])
async def test_a_room_url_with_unstorable_text_is_no_such_room(general_of_four, alice, slug, caplog):
    a = await connect(alice, path=f"/ws/chat/{slug}/", hello=False)
    assert await a.closed() == protocol.CLOSE_NO_ROOM
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_send_whose_acknowledgement_cannot_be_built_fails_alone(
    general_of_four, alice, bob, carol, held_writer, monkeypatch
):
    """Defence in depth: when taking one stored send's result fails on its connection (here a bug
    injected for bob), that send alone fails (its socket closes 1011, as any internal error);
    the sends after it in the batch are acknowledged."""
    writer, written = held_writer, consumer.ChatConsumer._written

    def broken(self, ref, result, *args, **kwargs):
        if self.user.username == "bob":
            raise RuntimeError("injected")
        return written(self, ref, result, *args, **kwargs)

    monkeypatch.setattr(consumer.ChatConsumer, "_written", broken)
    dave = await db(lambda: get_user_model().objects.get(username="dave"))()
    clients = {user.username: await connect(user) for user in (alice, bob, carol, dave)}
    await clients["alice"].send(type="message.send", room="general", body="first", ref="a0")
    await writer.hold()
    for count, name in enumerate(("bob", "carol", "dave"), 1):  # in this order in the next batch
        await clients[name].send(type="message.send", room="general", body=f"from {name}", ref=f"{name}-ref")
        await writer.queued(count)
    writer.release()
    for name in ("carol", "dave"):
        assert (await clients[name].expect("message.new", ref=f"{name}-ref"))["message"]["body"] == f"from {name}"
    assert writer.batches[1] == 3
    assert await clients["bob"].closed() == protocol.CLOSE_INTERNAL
    for name in ("alice", "carol", "dave"):
        await clients[name].send(type="ping", ref="p")
        assert (await clients[name].expect("pong"))["ref"] == "p"
        await clients[name].close()
