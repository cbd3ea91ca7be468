"""Who is alerted of a message (the `notification` frame), and why.

Each member's effective `notify` (`Membership.effective_notify`) decides: `all`, every message;
`mentions`, the messages that name them or the room; `none`, nothing. The reason is `mention`
(named), else `room_mention` (`@room`, `@all`), else `direct`: the member follows every message
(`all`, the default in a direct room). Never the author, nor a banned member or an inactive
user; system messages alert nobody. Once per message: an edit alerts only the members that no
version of it named before (see `edit_recipients`, `earlier_mentions`).

The members to alert are read with one statement per batch of messages, in the round trip that
writes it (`audience`, `sql.alert_members`), and each message's alerts
go to its room's group as one event per reason, naming their users (`events.notification_event`):
each connection of the room delivers it only to its own user, where an event per member would
cost a layer send each on the hot path of every send.
"""

from .. import events, sql
from ..models import Membership, Message, Room, effective_notify
from ..serializers import message_data

MENTION, ROOM_MENTION, DIRECT = "mention", "room_mention", "direct"
ALERTING_KINDS = (Message.Kind.USER, Message.Kind.EMOTE)

Recipients = dict[int, str]  # user id -> reason


def reason(message: Message, user_id: int, notify: str, named: set[int]) -> str | None:
    """Why the member (`user_id`, with effective `notify`) is alerted of `message`, or None
    (`named`: the ids the message names)."""
    if notify == Membership.Notify.NONE or user_id == message.author_id:
        return None
    if user_id in named:
        return MENTION
    if message.mentions_room:
        return ROOM_MENTION
    return DIRECT if notify == Membership.Notify.ALL else None


def _alerting(message: Message) -> bool:
    return message.kind in ALERTING_KINDS and message.author_id is not None


def _named(message: Message) -> set[int]:
    return {mentioned["id"] for mentioned in message.mentions}


def audience(messages: list[Message]) -> sql.Statement | None:
    """The statement reading the members who may be alerted of one of the messages (their
    `room` loaded, saved or not), for `recipients`; None when none alerts anyone.

    In a room mentioned as a whole, every active member whose setting is not `none`; elsewhere
    those who follow every message and those named. So a plain message in a group room where
    nobody chose `all` reads no row. It runs in the batch's write round trip (`sql.alert_members`).
    """
    alerting = [message for message in messages if _alerting(message)]
    if not alerting:
        return None
    rooms = {message.room_id: message.room for message in alerting}
    whole = {message.room_id for message in alerting if message.mentions_room}
    direct = [pk for pk, room in rooms.items() if pk not in whole and room.kind == Room.Kind.DIRECT]
    group = [pk for pk, room in rooms.items() if pk not in whole and room.kind != Room.Kind.DIRECT]
    named = set().union(*(_named(message) for message in alerting))
    return sql.alert_members(whole=sorted(whole), direct=direct, group=group, named=sorted(named))


def recipients(messages: list[Message], rows: list[tuple] | None) -> list[Recipients]:
    """Whom each message alerts, and why, from the rows of its `audience` statement."""
    kinds = {message.room_id: message.room.kind for message in messages}
    members: dict[int, list[tuple[int, str]]] = {}
    for room_id, user_id, notify in rows or ():
        members.setdefault(room_id, []).append((user_id, effective_notify(notify, kinds[room_id])))
    return [
        _recipients(message, members.get(message.room_id, ())) if _alerting(message) else {} for message in messages
    ]


def _recipients(message: Message, members) -> Recipients:
    names = _named(message)
    pairs = ((user_id, reason(message, user_id, notify, names)) for user_id, notify in members)
    return {user_id: why for user_id, why in pairs if why is not None}


def publish_alerts(message: Message, alerted: Recipients) -> None:
    """Publish the message's `notification`s (after its `message.new` or `message.updated`):
    one event per reason. Call in the transaction that wrote it."""
    if not alerted:
        return
    by_reason: dict[str, list[int]] = {}
    for user_id, why in alerted.items():
        by_reason.setdefault(why, []).append(user_id)
    data = message_data(message)
    for why, user_ids in by_reason.items():
        events.publish(events.room_group(message.room_id), events.notification_event(message, data, why, user_ids))


def earlier_mentions(message: Message) -> dict:
    """Whom the message and its earlier versions named, before it is edited again
    (`Message.earlier_mentions`)."""
    earlier = message.earlier_mentions or {}
    return {
        "users": sorted(set(earlier.get("users", ())) | _named(message)),
        "room": bool(earlier.get("room")) or message.mentions_room,
    }


def edit_recipients(message: Message, *, named_before: set[int], room_before: bool) -> Recipients:
    """Whom an edit alerts (`message` rendered anew; `named_before` and `room_before` the mentions
    of every version before, `earlier_mentions`): the members it newly mentions (named now and not before, or all of them when `@room`
    is new) whose setting is `mentions`. A member following every message was alerted when it was
    sent, and the members mentioned before were alerted then."""
    if not _alerting(message) or room_before or not (_named(message) - named_before or message.mentions_room):
        return {}
    [rows] = sql.fetch_all([audience([message])])
    members = [(user_id, effective_notify(notify, message.room.kind)) for _room_id, user_id, notify in rows]
    return _recipients(
        message,
        [
            (user_id, notify)
            for user_id, notify in members
            if notify == Membership.Notify.MENTIONS and user_id not in named_before
        ],
    )
