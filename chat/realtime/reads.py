"""What the delivery core reads from the database, each on the database thread: a joining
connection's replay, the messages a connection missed, and the ones the hub holds events for."""

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from chat import events, selectors
from chat.errors import Forbidden
from chat.serializers import message_data


def replay_state(user, slug: str, room_id: int, since: int | None, until: int | None, limit: int):
    """(messages after `since`, up to `until`, whether older ones were left out, the room's last id,
    its members' usernames). Raises unless the user is an active member of the room `slug` still names."""
    room, _membership = selectors.member_room_for_user(user, slug)
    if room.pk != room_id:  # the slug names another room now
        raise Forbidden(_("You are not a member of '%(slug)s': join it first."), slug=slug)
    if since is None:
        messages, gap = [], False
    else:
        rows, gap = selectors.messages_since(room_id, since, limit, until)
        messages = [message_data(m) for m in rows]
    last_id = messages[-1]["id"] if messages else selectors.last_message_id_for(room_id)
    return messages, gap, last_id, selectors.member_usernames(room_id)


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
