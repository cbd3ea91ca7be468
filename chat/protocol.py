"""The WebSocket wire contract: every frame type in both directions, error and close codes.

`parse_client_frame` turns raw text into a validated `ClientFrame` or raises `FrameError`;
the consumer never indexes raw JSON itself. Server frames are built by the functions at
the bottom (room and message events are built by the services that publish them).
"""

import json
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.utils.translation import gettext_lazy as _

from .errors import TranslatedError, interpolate_lazy
from .models import MAX_ID
from .serializers import timestamp

# Error codes (the `code` of an `error` frame).
BAD_FRAME = "bad_frame"
UNKNOWN_TYPE = "unknown_type"
INVALID = "invalid"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
MUTED = "muted"
ROOM_LOCKED = "room_locked"
TOO_LARGE = "too_large"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"  # the database or Redis failed; retry after `retry_after` seconds

# Close codes.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN = 1013
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NO_ROOM = 4404
CLOSE_ARCHIVED = 4410


def frame_too_big_reason(limit: int) -> str:
    """The reason of a 1009 close: the consumer's, and the server's when it refuses a frame from its header.
    Close reasons are for protocol and logs, in English: only `error` frames' `detail` is translated."""
    return f"frame over {limit} bytes"


SLUG_RE = re.compile(r"[a-z0-9-]{1,50}")
MAX_REF = 64
MAX_DEPTH = 32  # JSON nesting, far beyond any frame or request body this server reads

# Text that neither database stores, nor UTF-8 encodes: NUL (PostgreSQL refuses it) and the
# unpaired surrogates a JSON `\ud800` escape produces. The one rule for every text input:
# frames here, REST bodies in `chat.api.parsers`, URLs in `chat.middleware`, and services' `_storable`.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE = _(
    "%(field)s: must not contain NUL (U+0000) or unpaired surrogates (U+D800-U+DFFF): send valid Unicode text."
)


def unstorable(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


class _NotJSON(ValueError):
    pass


def _refuse_constant(name):
    raise _NotJSON(interpolate_lazy(_("%(name)s is not JSON (numbers must be finite)"), {"name": name}))


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def decode_json(text: str):
    """`json.loads`, raising ValueError with a message a client can act on for anything it
    cannot read: malformed JSON, NaN and Infinity, integers past Python's digit limit, and
    nesting past MAX_DEPTH (deeper than the parser's recursion limit, too, which raises
    RecursionError instead)."""
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise ValueError(_too_deep()) from None
    except _NotJSON:
        raise
    except json.JSONDecodeError:
        raise ValueError(_("not valid JSON")) from None
    except ValueError:  # Python's int-from-string digit limit
        raise ValueError(
            interpolate_lazy(
                _("JSON numbers may have at most %(digits)s digits"), {"digits": sys.get_int_max_str_digits()}
            )
        ) from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_over(data, MAX_DEPTH):
        raise ValueError(_too_deep())
    return data


def _too_deep():
    return interpolate_lazy(_("JSON nested more than %(depth)s levels deep"), {"depth": MAX_DEPTH})


def _depth_over(data, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def unstorable_field(data, text: str | None = None) -> str | None:
    """The name (`a.b[2]`) of the first string in `data`, key or value at any depth, that
    breaks the text rule; None if there is none. `text` is the JSON `data` was decoded from, if
    any: ASCII without a `\\u` escape holds no such string, and needs no walk (the usual frame).
    Expects `decode_json`'s bounded depth."""
    if text is not None and "\\u" not in text and text.isascii():
        return None
    stack = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if unstorable(value):
                return _field_name(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and unstorable(key):
                    return _field_name((*path, "(a field name)"))
                stack.append(((*path, key), item))
        elif isinstance(value, list | tuple):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
    return None


def _field_name(path: tuple) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f".{part[:64]}" if name else part[:64]
    return name or "value"


class FrameError(TranslatedError):
    """A client frame that cannot be acted on; answered with an `error` frame whose `detail` is in
    the connection's language (`code` is the stable part)."""

    def __init__(self, code: str, message, ref: str | None = None, **params):
        super().__init__(message, **params)
        self.code, self.ref = code, ref


def _slug(value):
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value):
        raise ValueError(_("a room slug (1-50 lowercase letters, digits or hyphens)"))
    return value


def _id(value):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise ValueError(interpolate_lazy(_("an integer from 0 to %(max)s"), {"max": MAX_ID}))
    return value


def _text(value):
    if not isinstance(value, str):
        raise ValueError(_("a string"))
    return value


def _ids(value):
    if not isinstance(value, list) or len(value) > 10 or not all(_is_id(item) for item in value):
        raise ValueError(_("a list of at most 10 upload ids"))
    return value


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _client_id(value):
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(_("a string of at most 64 characters"))
    return value


def _username(value):
    if not isinstance(value, str) or not 1 <= len(value) <= 150:
        raise ValueError(_("a username"))
    return value


# type -> {field: (validator, required)}
CLIENT_FRAMES: dict[str, dict[str, tuple]] = {
    "join": {"room": (_slug, True), "since": (_id, False), "changes_since": (_id, False)},
    "leave": {"room": (_slug, True)},
    "message.send": {
        "room": (_slug, False),
        "to": (_username, False),
        "body": (_text, True),
        "client_id": (_client_id, False),
        "reply_to": (_id, False),
        "attachments": (_ids, False),
    },
    "message.edit": {"id": (_id, True), "body": (_text, True)},
    "message.delete": {"id": (_id, True)},
    # `emoji` is checked by the service (chat/services/reactions.py), as REST's is.
    "reaction.add": {"id": (_id, True), "emoji": (_text, True)},
    "reaction.remove": {"id": (_id, True), "emoji": (_text, True)},
    "typing": {"room": (_slug, True)},
    "read": {"room": (_slug, True), "message_id": (_id, True)},
    "ping": {},
}


@dataclass(frozen=True)
class ClientFrame:
    type: str
    ref: str | None = None
    fields: dict = field(default_factory=dict)

    def get(self, name, default=None):
        return self.fields.get(name, default)


def parse_client_frame(text: str) -> ClientFrame:
    """Validate one client frame. Unknown extra fields are ignored, for forward compatibility."""
    try:
        data = decode_json(text)
    except (ValueError, TypeError) as exc:
        raise FrameError(BAD_FRAME, _("Frames must be JSON objects: %(problem)s."), problem=exc) from None
    if not isinstance(data, dict):
        raise FrameError(BAD_FRAME, _("Frames must be JSON objects."))
    ref = data.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF or unstorable(ref)):
        raise FrameError(
            INVALID,
            _(
                "ref: a string of at most %(max)s characters, without NUL (U+0000) "
                "or unpaired surrogates (U+D800-U+DFFF)."
            ),
            max=MAX_REF,
        )
    if (bad := unstorable_field(data, text)) is not None:
        raise FrameError(INVALID, UNSTORABLE, ref, field=bad)
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise FrameError(BAD_FRAME, _("Every frame needs a string `type`."), ref)
    spec = CLIENT_FRAMES.get(kind)
    if spec is None:
        raise FrameError(UNKNOWN_TYPE, _("Unknown frame type '%(type)s'."), ref, type=kind[:64])
    fields = {}
    for name, (check, required) in spec.items():
        if name not in data or data[name] is None:
            if required:
                raise FrameError(
                    INVALID, _("%(field)s: this field is required for '%(type)s'."), ref, field=name, type=kind
                )
            continue
        try:
            fields[name] = check(data[name])
        except ValueError as exc:
            raise FrameError(INVALID, _("%(field)s: must be %(expected)s."), ref, field=name, expected=exc) from None
    if kind == "message.send" and ("room" in fields) == ("to" in fields):
        raise FrameError(INVALID, _("message.send: give exactly one of `room` or `to`."), ref)
    return ClientFrame(kind, ref, fields)


def now_iso() -> str:
    return timestamp(datetime.now(UTC))


def error(code: str, detail: str, ref: str | None = None, retry_after: int | None = None) -> dict:
    frame = {"type": "error", "code": code, "detail": detail}
    if ref is not None:
        frame["ref"] = ref
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def reply(frame: dict, ref: str | None) -> dict:
    """`frame` with the client's `ref` echoed, when it sent one."""
    return frame if ref is None else {**frame, "ref": ref}


def hello(*, user: dict, rooms: list[dict], connection_id: str, max_body: int, rate_per_10s: int) -> dict:
    return {
        "type": "hello",
        "user": user,
        "rooms": rooms,
        "connection_id": connection_id,
        "server_time": now_iso(),
        "limits": {"max_body": max_body, "rate_per_10s": rate_per_10s},
    }


def room_joined(room: str, online: list[str], last_message_id: int | None, seq: int) -> dict:
    return {"type": "room.joined", "room": room, "online": online, "last_message_id": last_message_id, "seq": seq}


def room_left(room: str, reason: str = "left") -> dict:
    return {"type": "room.left", "room": room, "reason": reason}


def room_gap(room: str, after: int, before: int, *, changes: bool = False) -> dict:
    """Messages between `after` and `before` were left out; with `changes`, changes to the messages
    before `before` were: the client reloads the room's history over REST."""
    frame = {"type": "room.gap", "room": room, "after": after, "before": before}
    return {**frame, "changes": True} if changes else frame


def message_new(message: dict, duplicate: bool = False) -> dict:
    frame = {"type": "message.new", "room": message["room"], "message": message}
    if duplicate:
        frame["duplicate"] = True
    return frame


def message_updated(message: dict) -> dict:
    return {"type": "message.updated", "room": message["room"], "message": message}


def message_deleted(room: str, message_id: int) -> dict:
    return {"type": "message.deleted", "room": room, "id": message_id}


def unread(room: str, count: int, last_read_id: int | None, mentions: int) -> dict:
    """`count` unread messages after `last_read_id`, `mentions` of them mentioning the member."""
    return {"type": "unread", "room": room, "count": count, "last_read_id": last_read_id, "mentions": mentions}


def notification(room: str, message: dict, reason: str) -> dict:
    """To the connections of a member alerted of `message` (see `chat.services.notify`)."""
    return {"type": "notification", "room": room, "message": message, "reason": reason}


def presence(room: str, user: dict, status: str) -> dict:
    return {"type": "presence", "room": room, "user": user, "status": status}


def typing(room: str, user: dict) -> dict:
    return {"type": "typing", "room": room, "user": user}


def pong() -> dict:
    return {"type": "pong", "server_time": now_iso()}


def membership_updated(room: str, muted_until: str | None) -> dict:
    """To the member's own connections: they were muted until `muted_until`, or unmuted (None)."""
    return {"type": "membership.updated", "room": room, "muted_until": muted_until}


def room_updated(*, room: str, name: str, topic: str, locked: bool, archived: bool) -> dict:
    return {"type": "room.updated", "room": room, "name": name, "topic": topic, "locked": locked, "archived": archived}


def member_joined(room: str, user: dict) -> dict:
    return {"type": "member.joined", "room": room, "user": user}


def member_left(room: str, user: dict) -> dict:
    return {"type": "member.left", "room": room, "user": user}


def notice(level: str, text: str, room: str | None = None) -> dict:
    """A staff notice, to every connection or (with `room`) to those subscribed to the room."""
    frame = {"type": "notice", "level": level, "text": text}
    if room is not None:
        frame["room"] = room
    return frame
