"""Hostile input to the services and in client frames (security review, findings 3 and 11): text
that no database stores (NUL, unpaired surrogates), JSON nested without end, ids past a bigint.
Each is refused with a clear error by itself, changes nothing, and never fails anyone else's send.

Runs on both databases: SQLite refuses surrogates when encoding, PostgreSQL NUL as well.
"""

import json

import pytest

from chat import protocol, services
from chat.errors import Invalid
from tests.support import db_state, frames, user_bodies

MAX_ID = 2**63 - 1  # ids are bigints
UNSTORABLE = "must not contain NUL (U+0000) or unpaired surrogates (U+D800-U+DFFF): send valid Unicode text"
NUL, SURROGATE = "\x00", "\ud800"
POISONS = [NUL, SURROGATE, f"ok{SURROGATE}ok", "\udfff"]


# The batch: a bad send fails alone


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("field", ["body", "client_id", "slug", "to"])
def test_a_poisoned_send_in_a_batch_fails_alone(
    alice, bob, carol, general_with_bob_and_carol, published, committed, field, poison
):
    """One send with unstorable text in any field, among good ones: it is refused `invalid`
    before anything is read or written; every other send is stored and published."""
    bad = dict(user=bob, slug="general", body="bad", client_id="b-1")
    if field == "to":
        del bad["slug"]
    bad[field] = bad[field] + poison if field != "to" else poison
    requests = [
        dict(user=alice, slug="general", body="one", client_id="a-1"),
        bad,
        dict(user=carol, slug="general", body="two", client_id="c-1"),
        dict(user=alice, slug="general", body="three", client_id="a-2"),
    ]
    with committed():
        results = services.message_send_batch(requests)
    assert isinstance(results[1], Invalid) and "NUL (U+0000) or unpaired surrogates" in results[1].detail
    assert [(r[0].body, r[1]) for i, r in enumerate(results) if i != 1] == [
        ("one", True),
        ("two", True),
        ("three", True),
    ]
    assert user_bodies() == ["one", "two", "three"]
    assert [f["message"]["body"] for f in frames(published, "message.new")] == ["one", "two", "three"]


def test_a_send_the_database_refuses_fails_alone_even_past_a_missing_check(
    alice, bob, carol, general_with_bob_and_carol, published, committed, monkeypatch
):
    """Defence in depth: with the text rule switched off, the database itself refuses the poisoned
    send (its lookup, then its insert). The batch is retried send by send: that one fails,
    `invalid`, and the others are stored."""
    monkeypatch.setattr(services._common, "storable", lambda field, text: text)
    requests = [
        dict(user=alice, slug="general", body="one", client_id="a-1"),
        dict(user=bob, slug="general", body="fine", client_id=f"b{SURROGATE}"),  # breaks the lookup
        dict(user=carol, slug="general", body=f"bad{SURROGATE}", client_id="c-1"),  # breaks the insert
        dict(user=alice, slug="general", body="two", client_id="a-2"),
        dict(user=bob, slug="general", body="three"),
    ]
    with committed():
        results = services.message_send_batch(requests)
    assert [type(r) if isinstance(r, Exception) else r[0].body for r in results] == [
        "one",
        Invalid,
        Invalid,
        "two",
        "three",
    ]
    assert user_bodies() == ["one", "two", "three"]
    assert [f["message"]["body"] for f in frames(published, "message.new")] == ["one", "two", "three"]


@pytest.mark.parametrize("poison", [NUL, SURROGATE])
def test_every_text_a_service_stores_or_sends_refuses_unstorable_text(alice, bob, general_with_bob_and_carol, poison):
    """The services' own rule (`_storable`), for callers that bypass the frame and REST checks:
    the admin, management commands."""
    message = services.message_send(user=bob, slug="general", body="fine")[0]
    calls = [
        lambda: services.message_send(user=alice, slug="general", body="hi", client_id=f"x{poison}"),
        lambda: services.message_edit(user=bob, message_id=message.pk, body=f"x{poison}"),
        lambda: services.room_create(user=alice, name=f"Bad{poison}"),
        lambda: services.room_update(user=alice, slug="general", topic=f"t{poison}"),
        lambda: services.member_ban(actor=alice, slug="general", username="bob", reason=f"r{poison}"),
        lambda: services.message_report(user=alice, message_id=message.pk, reason=f"r{poison}"),
        lambda: services.notice_send(text=f"n{poison}"),
    ]
    before = db_state()
    for call in calls:
        with pytest.raises(Invalid, match="NUL"):
            call()
    assert db_state() == before


# Frames

FIELDS = {  # every text field of every client frame, and a frame that holds it
    "type": {"type": "ping"},
    "ref": {"type": "ping", "ref": "r"},
    "room": {"type": "join", "room": "general"},
    "to": {"type": "message.send", "to": "bob", "body": "x"},
    "body": {"type": "message.send", "room": "general", "body": "x"},
    "client_id": {"type": "message.send", "room": "general", "body": "x", "client_id": "c"},
    "extra": {"type": "ping", "extra": ["a", {"b": "c"}]},
}


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("field", list(FIELDS))
def test_unstorable_text_anywhere_in_a_frame_is_invalid(field, poison):
    frame = json.loads(json.dumps(FIELDS[field]))
    if field == "extra":
        frame["extra"][1]["b"] += poison
    else:
        frame[field] += poison
    with pytest.raises(protocol.FrameError) as info:
        protocol.parse_client_frame(json.dumps(frame))  # escaped: \u0000, \ud800
    assert info.value.code == protocol.INVALID
    assert "NUL (U+0000) or unpaired surrogates" in info.value.detail
    info.value.detail.encode()  # the reply can be encoded
    assert info.value.ref is None


def test_a_field_name_with_unstorable_text_is_invalid_and_valid_text_is_not():
    with pytest.raises(protocol.FrameError) as info:
        protocol.parse_client_frame('{"type": "ping", "ref": "r", "x\\u0000": 1}')
    assert (info.value.code, info.value.ref) == (protocol.INVALID, "r")
    send = '{"type": "message.send", "room": "g", "body": "%s"}'
    for escaped, text in (("\\ud83d\\ude00", "\U0001f600"), ("C:\\\\u0000", "C:\\u0000"), ("é", "é")):
        assert protocol.parse_client_frame(send % escaped).get("body") == text


DEEP = "JSON nested more than 32 levels deep"


@pytest.mark.parametrize(
    "text, why",
    [
        ("[" * 2000 + "]" * 2000, DEEP),
        ('{"type": "ping", "x": ' + "[" * 2000 + "]" * 2000 + "}", DEEP),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, DEEP),
        ("[" * 100_000, DEEP),
        ('{"type": "ping", "x": ' + "[" * 33 + "]" * 33 + "}", DEEP),
        (
            '{"type": "join", "room": "general", "since": ' + "9" * 5000 + "}",
            "JSON numbers may have at most 4300 digits",
        ),
        ('{"type": "ping", "x": NaN}', "NaN is not JSON"),
        ('{"type": "ping", "x": -Infinity}', "-Infinity is not JSON"),
    ],
)
def test_hostile_json_is_a_bad_frame_that_says_why(text, why):
    with pytest.raises(protocol.FrameError) as info:
        protocol.parse_client_frame(text)
    assert info.value.code == protocol.BAD_FRAME
    assert info.value.detail.startswith(f"Frames must be JSON objects: {why}")


@pytest.mark.parametrize("value", ["1e400", "-1e400", str(MAX_ID + 1), str(2**64), str(10**4000), "1.5"])
@pytest.mark.parametrize("field", ["since", "id", "message_id"])
def test_ids_beyond_a_bigint_are_invalid(field, value):
    frame = {
        "since": '{"type": "join", "room": "g", "since": %s}',
        "id": '{"type": "message.delete", "id": %s}',
        "message_id": '{"type": "read", "room": "g", "message_id": %s}',
    }[field] % value
    with pytest.raises(protocol.FrameError) as info:
        protocol.parse_client_frame(frame)
    assert info.value.code == protocol.INVALID and f"to {MAX_ID}" in info.value.detail
    assert protocol.parse_client_frame(frame.replace(value, str(MAX_ID))).get(field) == MAX_ID


def test_unstorable_text_is_a_clear_detail_not_an_echo():
    """The detail names the field; it never repeats the text, which could not be encoded."""
    with pytest.raises(protocol.FrameError) as info:
        protocol.parse_client_frame('{"type": "dance\\ud800"}')
    assert info.value.detail == "type: " + UNSTORABLE + "."
