"""What the delivery core reads from the database, each on the database thread: a joining
connection's replay, the messages a connection missed, and the ones the hub holds events for."""

import contextlib
from typing import NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from chat import events, selectors, sql
from chat.errors import Forbidden
from chat.serializers import message_data


class Replay(NamedTuple):
    messages: list[dict]  # after `since`, ascending by id
    gap: bool  # older ones were left out
    last_id: int | None  # the room's newest message
    members: dict[int, str]  # the members' usernames
    changes: list[dict]  # messages up to `since` changed after `changes_since`, in seq order
    changes_gap: bool  # more changes than the limit: none are sent, the client reloads
    seq: int  # the room's change sequence value that all this reflects


def replay_state(
    user,
    slug: str,
    room_id: int,
    since: int | None,
    until: int | None,
    limit: int,
    changes_since: int | None = None,
    until_seq: int | None = None,
) -> Replay:
    """What a join replays: messages after `since` (up to `until`), and with `changes_since` the
    changes to the messages up to `since` after it (up to `until_seq`). Raises unless the user is an
    active member of the room `slug` still names.

    With changes to replay, everything is read in one snapshot (`sql.snapshot`), so every change
    up to the room's change sequence value read is in what is sent. Without, the messages are one
    statement, and the snapshot's transaction would only add round trips to every join."""
    replaying_changes = since is not None and changes_since is not None
    with sql.snapshot() if replaying_changes else contextlib.nullcontext():
        return _replay_state(user, slug, room_id, since, until, limit, changes_since, until_seq)


def _replay_state(user, slug, room_id, since, until, limit, changes_since, until_seq) -> Replay:
    room, _membership = selectors.member_room_for_user(user, slug)
    if room.pk != room_id:  # the slug names another room now
        raise Forbidden(_("You are not a member of '%(slug)s': join it first."), slug=slug)
    changes, changes_gap = [], False
    if since is not None and changes_since is not None:
        rows, changes_gap = selectors.changes_since(room_id, changes_since, since, limit, until_seq)
        changes = [] if changes_gap else [message_data(m) for m in rows]
    if since is None:
        messages, gap = [], False
    else:
        rows, gap = selectors.messages_since(room_id, since, limit, until)
        messages = [message_data(m) for m in rows]
    last_id = messages[-1]["id"] if messages else selectors.last_message_id_for(room_id)
    seq = max([room.change_seq] + [m["seq"] for m in changes + messages])  # the room's, outside a snapshot
    return Replay(messages, gap, last_id, selectors.member_usernames(room_id), changes, changes_gap, seq)


def changed_since(room_id: int, seq: int) -> tuple[list[dict], bool]:
    """The room's messages changed (or written) after change `seq`, in seq order, read at once (one
    statement: whatever committed before it, every change up to the last `seq` read is in it);
    beyond CHAT_REPLAY_LIMIT, the first ones and True."""
    rows, gap = selectors.changed_since(room_id, seq, settings.CHAT_REPLAY_LIMIT)
    return [message_data(m) for m in rows], gap


def between(room_id: int, after: int, before: int) -> tuple[list[dict], bool]:
    """The room's messages after `after` and before `before` (the newest CHAT_REPLAY_LIMIT), and
    whether older ones were left out."""
    rows, gap = selectors.messages_since(room_id, after, settings.CHAT_REPLAY_LIMIT, until=before - 1)
    return [message_data(m) for m in rows], gap


async def message_events(room_id: int, after: int, until: int) -> list[dict] | None:
    """The events of the room's messages after `after` up to `until`, read from the database, in
    order; None if there are more than CHAT_REPLAY_LIMIT (see `Hub._fill`)."""
    return await database_sync_to_async(_message_events)(room_id, after, until)


def _message_events(room_id: int, after: int, until: int) -> list[dict] | None:
    rows, gap = selectors.messages_since(room_id, after, settings.CHAT_REPLAY_LIMIT, until=until)
    if gap:
        return None
    prev_ids = [after] + [message.pk for message in rows]
    return [events.message_event(message, prev_id=prev_id) for message, prev_id in zip(rows, prev_ids)]
