"""The one path that inserts messages: the rooms locked, the ids drawn in commit order, and
`message.new` published on commit for each, naming the message before it, then its
`notification`s."""

from collections import Counter

from django.db import connection

from .. import events, sql
from ..models import Message, Room
from . import content, notify


def insert_message(
    *, room: Room, author, body: str, kind: str = Message.Kind.USER, client_id: str = "", origin: str | None = None
) -> Message:
    """Insert one message; see `insert_messages`. Call inside `transaction.atomic`."""
    draft = Message(room=room, author=author, body=body, kind=kind, client_id=client_id)
    content.render_into(draft)
    return insert_messages(room, [(draft, origin)])[0]


def insert_messages(room: Room, drafts: list[tuple[Message, str | None]]) -> list[Message]:
    """`insert_rooms_messages` for one room."""
    return insert_rooms_messages([(room, drafts)])[0]


def insert_rooms_messages(rooms: list[tuple[Room, list[tuple[Message, str | None]]]]) -> list[list[Message]]:
    """Insert the messages of each room in the given order, all in one INSERT, and publish
    `message.new` for each on commit. Each room appears once; `drafts` pairs each unsaved
    message with its `origin`. Returns each room's messages. Call inside `transaction.atomic`,
    or on PostgreSQL outside any, as one transaction of its own (see `batch._write_rooms`).

    Ids must grow in commit order within a room, so that "every message after id N" never
    misses one committed later with a smaller id. The rooms' row locks serialise inserts
    per room on PostgreSQL: the ids are drawn and the transaction commits while the locks
    are held, so no other writer to these rooms can interleave. SQLite allows one writer at
    a time, which gives the same order (and has no FOR UPDATE).

    Publishing happens after commit, so two processes' events can still reach Redis out of
    commit order. Each event therefore names the room's previous message (`prev_id`, also
    set on the returned instance), read under the same lock: a connection that receives
    a message whose predecessor it has not sent yet knows to fetch the gap first.

    The members to alert (`notify.audience`) are read in the same round trip, after the insert.
    """
    drafts = [draft for _, room_drafts in rooms for draft, _ in room_drafts]
    roots = Counter(draft.thread_id for draft in drafts if draft.thread_id is not None)
    last_ids, written_ids, _root_seqs, audience = sql.lock_rooms_and_insert(
        [room.pk for room, _ in rooms], drafts, dict(roots), then=notify.audience(drafts)
    )
    alerts = iter(notify.recipients(drafts, audience))
    for draft, (pk, seq) in zip(drafts, written_ids):
        # As the ORM marks a saved instance. `Message.from_db` would make new instances and drop
        # the room and author loaded on the drafts, which `message_data` reads.
        draft.pk, draft.seq = pk, seq
        draft._state.adding, draft._state.db = False, connection.alias
    if any(draft.mentions for draft in drafts):
        content.write_mentions(drafts)
    messages = iter(drafts)
    written = []
    for room, room_drafts in rooms:
        prev_id, room_messages = last_ids.get(room.pk) or 0, []
        for (_, origin), message in zip(room_drafts, messages):
            message.room, message.prev_id = room, prev_id
            events.publish(events.room_group(room.pk), events.message_event(message, prev_id=prev_id, origin=origin))
            notify.publish_alerts(message, next(alerts))
            prev_id = message.pk
            room_messages.append(message)
        written.append(room_messages)
    if roots:  # each root's new reply_count and seq, after its replies
        for root in Message.objects.select_related("room", "author").filter(pk__in=list(roots)).order_by("seq"):
            events.publish(events.room_group(root.room_id), events.change_event(root))
    return written
