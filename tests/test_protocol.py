"""protocol.parse_client_frame: every client frame type, and every way a frame can be wrong."""

import json

import pytest

from chat import protocol
from chat.protocol import FrameError, parse_client_frame


def parse(obj) -> protocol.ClientFrame:
    return parse_client_frame(json.dumps(obj))


def error_of(text: str) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse_client_frame(text)
    return info.value


@pytest.mark.parametrize("text", ["", "not json", "{", "{'type': 'ping'}", b"\xff\xfe"])
def test_not_json_is_bad_frame(text):
    err = error_of(text)
    assert (err.code, err.ref) == (protocol.BAD_FRAME, None)
    assert "JSON" in err.detail


@pytest.mark.parametrize("value", [[], ["ping"], "ping", 3, None, True])
def test_not_an_object_is_bad_frame(value):
    assert error_of(json.dumps(value)).code == protocol.BAD_FRAME


@pytest.mark.parametrize(
    "frame",
    [
        {},
        {"ref": "r1"},
        {"type": ""},
        {"type": None, "ref": "r1"},
        {"type": 5, "ref": "r1"},
        {"type": ["ping"], "ref": "r1"},
    ],
)
def test_missing_or_non_string_type_is_bad_frame(frame):
    err = error_of(json.dumps(frame))
    assert err.code == protocol.BAD_FRAME
    assert "type" in err.detail
    assert err.ref == frame.get("ref")


def test_unknown_type_echoes_ref_and_truncates_the_name():
    err = error_of(json.dumps({"type": "x" * 500, "ref": "r9"}))
    assert (err.code, err.ref) == (protocol.UNKNOWN_TYPE, "r9")
    assert "x" * 64 in err.detail and "x" * 65 not in err.detail


@pytest.mark.parametrize("kind", ["message", "Join", "chat.frame", "hello", "pong", "error"])
def test_server_and_internal_types_are_unknown_from_a_client(kind):
    assert error_of(json.dumps({"type": kind})).code == protocol.UNKNOWN_TYPE


@pytest.mark.parametrize(
    "frame, field",
    [
        ({"type": "join"}, "room"),
        ({"type": "join", "room": None}, "room"),
        ({"type": "leave"}, "room"),
        ({"type": "typing"}, "room"),
        ({"type": "read", "room": "general"}, "message_id"),
        ({"type": "read", "message_id": 3}, "room"),
        ({"type": "message.send", "room": "general"}, "body"),
        ({"type": "message.send", "room": "general", "body": None}, "body"),
        ({"type": "message.edit", "id": 1}, "body"),
        ({"type": "message.edit", "body": "x"}, "id"),
        ({"type": "message.delete"}, "id"),
    ],
)
def test_missing_field_is_invalid_and_named(frame, field):
    err = error_of(json.dumps({**frame, "ref": "abc"}))
    assert (err.code, err.ref) == (protocol.INVALID, "abc")
    assert err.detail.startswith(f"{field}:")
    assert "required" in err.detail


@pytest.mark.parametrize(
    "frame, field",
    [
        ({"type": "message.delete", "id": "12"}, "id"),
        ({"type": "message.delete", "id": True}, "id"),
        ({"type": "message.delete", "id": 1.5}, "id"),
        ({"type": "message.delete", "id": -1}, "id"),
        ({"type": "message.edit", "id": 1, "body": 5}, "body"),
        ({"type": "message.edit", "id": 1, "body": ["hi"]}, "body"),
        ({"type": "join", "room": "general", "since": -1}, "since"),
        ({"type": "join", "room": "general", "since": "10"}, "since"),
        ({"type": "join", "room": "general", "since": False}, "since"),
        ({"type": "join", "room": "General"}, "room"),
        ({"type": "join", "room": "a b"}, "room"),
        ({"type": "join", "room": ""}, "room"),
        ({"type": "join", "room": "x" * 51}, "room"),
        ({"type": "join", "room": "général"}, "room"),
        ({"type": "join", "room": "general\n"}, "room"),
        ({"type": "join", "room": 7}, "room"),
        ({"type": "read", "room": "general", "message_id": "3"}, "message_id"),
        ({"type": "read", "room": "general", "message_id": -3}, "message_id"),
        ({"type": "message.send", "room": "general", "body": "hi", "client_id": "c" * 65}, "client_id"),
        ({"type": "message.send", "room": "general", "body": "hi", "client_id": 5}, "client_id"),
        ({"type": "message.send", "to": "", "body": "hi"}, "to"),
        ({"type": "message.send", "to": "u" * 151, "body": "hi"}, "to"),
        ({"type": "message.send", "to": 7, "body": "hi"}, "to"),
    ],
)
def test_wrong_field_is_invalid_and_named(frame, field):
    err = error_of(json.dumps({**frame, "ref": "r"}))
    assert (err.code, err.ref) == (protocol.INVALID, "r")
    assert err.detail.startswith(f"{field}: must be")


@pytest.mark.parametrize("ref", ["r" * 65, 5, ["r"], {"a": 1}, True])
def test_bad_ref_is_invalid_and_not_echoed(ref):
    err = error_of(json.dumps({"type": "ping", "ref": ref}))
    assert (err.code, err.ref) == (protocol.INVALID, None)
    assert err.detail.startswith("ref:")


def test_ref_of_64_characters_is_accepted():
    assert parse({"type": "ping", "ref": "r" * 64}).ref == "r" * 64


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message.send", "body": "hi"},
        {"type": "message.send", "body": "hi", "room": None, "to": None},
        {"type": "message.send", "body": "hi", "room": "general", "to": "bob"},
    ],
)
def test_message_send_needs_exactly_one_of_room_or_to(frame):
    err = error_of(json.dumps({**frame, "ref": "s1"}))
    assert (err.code, err.ref) == (protocol.INVALID, "s1")
    assert "exactly one of `room` or `to`" in err.detail


@pytest.mark.parametrize(
    "frame, fields",
    [
        ({"type": "join", "room": "general"}, {"room": "general"}),
        ({"type": "join", "room": "dm-1-2", "since": 0}, {"room": "dm-1-2", "since": 0}),
        ({"type": "join", "room": "a" * 50, "since": 41}, {"room": "a" * 50, "since": 41}),
        ({"type": "leave", "room": "general"}, {"room": "general"}),
        ({"type": "message.send", "room": "general", "body": "hi"}, {"room": "general", "body": "hi"}),
        (
            {"type": "message.send", "to": "bob.b@x", "body": "", "client_id": "c-1"},
            {"to": "bob.b@x", "body": "", "client_id": "c-1"},
        ),
        ({"type": "message.edit", "id": 12, "body": "fixed"}, {"id": 12, "body": "fixed"}),
        ({"type": "message.delete", "id": 12}, {"id": 12}),
        ({"type": "reaction.add", "id": 12, "emoji": "👍"}, {"id": 12, "emoji": "👍"}),
        ({"type": "reaction.remove", "id": 12, "emoji": ":+1:"}, {"id": 12, "emoji": ":+1:"}),
        ({"type": "typing", "room": "general"}, {"room": "general"}),
        ({"type": "read", "room": "general", "message_id": 0}, {"room": "general", "message_id": 0}),
        ({"type": "ping"}, {}),
    ],
)
def test_valid_frames_of_every_type(frame, fields):
    parsed = parse({**frame, "ref": "ok", "extra": "ignored"})
    assert (parsed.type, parsed.ref, parsed.fields) == (frame["type"], "ok", fields)
    assert parse(frame).ref is None


def test_every_client_frame_type_is_covered():
    assert set(protocol.CLIENT_FRAMES) == {
        "join",
        "leave",
        "message.send",
        "message.edit",
        "message.delete",
        "reaction.add",
        "reaction.remove",
        "typing",
        "read",
        "ping",
    }


def test_client_frame_get_defaults():
    frame = parse({"type": "join", "room": "general"})
    assert frame.get("room") == "general"
    assert frame.get("since") is None
    assert frame.get("since", 0) == 0


def test_error_frame_shape():
    assert protocol.error("rate_limited", "Slow down.", ref="r", retry_after=3) == {
        "type": "error",
        "code": "rate_limited",
        "detail": "Slow down.",
        "ref": "r",
        "retry_after": 3,
    }
    assert protocol.error("invalid", "x") == {"type": "error", "code": "invalid", "detail": "x"}
