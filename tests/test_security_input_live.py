"""Hostile input against a real daphne (security review, findings 3 and 11): while four users send
as fast as they can, one of them mixes poisoned and hostile frames into their sends. Those get
their `error` frames; every other send is stored and acknowledged, no socket closes, and the
server logs no traceback.
"""

import asyncio
import json

import pytest

from chat.models import Message
from tests.support import db, ws_connect

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SENDS = 25

HOSTILE = [  # (raw frame, the error code it gets)
    ('{"type": "message.send", "room": "general", "body": "bad \\ud800", "ref": "h0"}', "invalid"),
    ('{"type": "message.send", "room": "general", "body": "bad", "client_id": "\\u0000", "ref": "h1"}', "invalid"),
    ('{"type": "message.send", "room": "general", "body": "bad", "client_id": "c\\udc00", "ref": "h2"}', "invalid"),
    ('{"type": "message.send", "to": "bob\\ud800", "body": "bad", "ref": "h3"}', "invalid"),
    ('{"type": "message.send", "room": "general", "body": "bad", "ref": "\\ud800"}', "invalid"),
    ('{"type": "ping\\ud800", "ref": "h5"}', "invalid"),
    ("[" * 2000 + "]" * 2000, "bad_frame"),
    ('{"type": "join", "room": "general", "since": ' + "9" * 5000 + "}", "bad_frame"),
    ('{"type": "message.delete", "id": %d, "ref": "h8"}' % 2**64, "invalid"),
]


async def test_hostile_frames_among_concurrent_sends_fail_alone(daphne_a, general_of_four, alice, bob, carol, dave):
    users = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
    clients = {name: await ws_connect(daphne_a, user) for name, user in users.items()}

    async def sender(name):
        client = clients[name]
        for i in range(SENDS):
            await client.send(
                type="message.send", room="general", body=f"{name} {i}", client_id=f"{name}-{i}", ref=f"{name}-{i}"
            )
            if name == "carol" and i < len(HOSTILE):
                await client.send_raw(HOSTILE[i][0])

    async def reader(name):
        """Every reply to this client's own frames: acks by ref, and errors."""
        acks, errors = set(), []
        async with asyncio.timeout(30):
            while len(acks) < SENDS or (name == "carol" and len(errors) < len(HOSTILE)):
                frame = await clients[name].recv(timeout=30)
                if frame["type"] == "message.new" and frame.get("ref"):
                    acks.add(frame["ref"])
                elif frame["type"] == "error":
                    errors.append(frame)
        return acks, errors

    readers = [asyncio.create_task(reader(name)) for name in users]
    await asyncio.gather(*(sender(name) for name in users))
    results = dict(zip(users, await asyncio.gather(*readers)))

    for name, (acks, errors) in results.items():
        assert acks == {f"{name}-{i}" for i in range(SENDS)}
        assert errors == [] if name != "carol" else [error["code"] for error in errors] == [c for _, c in HOSTILE]
    for client in clients.values():  # every socket is still open
        await client.send(type="ping", ref="p")
        assert (await client.expect("pong"))["ref"] == "p"
        await client.close()
    bodies = await db(lambda: set(Message.objects.filter(kind="user").values_list("body", flat=True)))()
    assert bodies == {f"{name} {i}" for name in users for i in range(SENDS)}
    log = daphne_a.output()
    assert "Traceback" not in log and "internal error" not in log
    assert json.dumps(log).count("refused a frame from carol") == len(HOSTILE)  # one line each
