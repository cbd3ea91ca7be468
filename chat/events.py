"""Channel-layer group names and publishing.

Every event is `{"type": "chat.<kind>", ...}` holding primitives only. Frames are JSON-encoded
once per publish, not once per recipient. Publishing from a service is scheduled with
`transaction.on_commit`, so no client ever sees a change that a rollback could undo.
"""

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from . import metrics, protocol
from .serializers import message_data

logger = logging.getLogger(__name__)

# Set while `run_sync` runs a function: its publishes are collected, then sent from the loop.
_collected: ContextVar[list | None] = ContextVar("chat_collected_events", default=None)

# Finds the running loop's hub, if this process serves connections. The hub registers it
# (`register_local_hub`), so that this module, below the delivery core, imports none of it.
_local_hub: Callable[[], object | None] = lambda: None


def register_local_hub(find: Callable[[], object | None]) -> None:
    """`send_async` hands events to `find()`'s `dispatch` at once, when it returns a hub."""
    global _local_hub
    _local_hub = find


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def everyone_group() -> str:
    """Every open connection, on every process: the audience of a site-wide `notice`."""
    return "everyone"


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def frame_event(
    frame: dict,
    *,
    room_id: int | None = None,
    message_id: int | None = None,
    prev_id: int | None = None,
    seq: int | None = None,
    changed_id: int | None = None,
    skip_user: int | None = None,
    notify_users: list[int] | None = None,
    origin: str | None = None,
) -> dict:
    """A `chat.frame` event: the consumer forwards `text` to its client, except

    - a `message.new` (`message_id`, with `prev_id` the room's message before it) that the
      connection already sent; the consumer delivers those in id order (see consumers),
    - to `skip_user` (typing is not echoed to the typist),
    - with `notify_users` (a `notification`), to any user not listed,
    - to `origin`, the connection that caused the event and already got it as its reply,
    - a change (`seq`, the room's change sequence value; `changed_id` the message changed) that
      the connection already sent.
    """
    return {
        "type": "chat.frame",
        "text": encode(frame),
        "room_id": room_id,
        "message_id": message_id,
        "prev_id": prev_id,
        "seq": seq,
        "changed_id": changed_id,
        "skip_user": skip_user,
        **({"notify_users": notify_users} if notify_users is not None else {}),
        "origin": origin,
    }


def message_event(message, *, prev_id: int, origin: str | None = None) -> dict:
    """The `chat.frame` event of a stored message (its room loaded), `prev_id` the room's message before it."""
    return frame_event(
        protocol.message_new(message_data(message)),
        room_id=message.room_id,
        message_id=message.pk,
        prev_id=prev_id,
        seq=message.seq,
        origin=origin,
    )


def change_event(message, *, origin: str | None = None) -> dict:
    """The `chat.frame` event of a change to a stored message (its room and author loaded):
    `message.updated` with the whole message and its new `seq`."""
    return frame_event(
        protocol.message_updated(message_data(message)),
        room_id=message.room_id,
        seq=message.seq,
        changed_id=message.pk,
        origin=origin,
    )


def notification_event(message, data: dict, reason: str, user_ids: list[int]) -> dict:
    """The `chat.frame` event alerting `user_ids` of a stored message (`data`: its `message_data`)
    for `reason`. It carries no id or seq: it never moves a connection's marks. The ids go
    sorted (`RoomStream.classify` bisects them)."""
    return frame_event(
        protocol.notification(data["room"], data, reason), room_id=message.room_id, notify_users=sorted(user_ids)
    )


def publish(group: str, event: dict) -> None:
    """Send `event` to `group` once the current transaction commits (at once outside one).

    A publish that fails (broker down) is logged, not raised: the change is already
    committed, and clients recover it with `join since`.
    """
    collected = _collected.get()
    if collected is not None:
        transaction.on_commit(lambda: collected.append((group, event)))
    else:
        transaction.on_commit(lambda: send(group, event), robust=True)


def run_sync(fn, then=None):
    """`database_sync_to_async(fn)`, except that the events `fn` publishes are sent from the
    event loop once it returns (after its commits), after `then(result)` if given.

    A publish from the database thread would block that thread until the loop runs it, and
    under load the loop has a backlog of deliveries to work through first: every write of
    the process would queue behind the fan-out of the one before.
    """
    call = database_sync_to_async(fn)

    async def run(*args, **kwargs):
        collected = []
        token = _collected.set(collected)
        try:
            result = await call(*args, **kwargs)
            if then is not None:
                then(result)
            return result
        finally:
            _collected.reset(token)
            for group, event in _bundled(collected):
                try:
                    await send_async(group, event)
                except Exception:  # counted by send_async; the write stands (see `publish`)
                    logger.exception("publish to %s failed after commit", group)

    return run


def _bundled(collected: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Each run of events to the same group as one `chat.bundle` event, in order: a batch of
    messages to a room costs one layer send, not one per message (`Hub.dispatch` unpacks it)."""
    runs: list[tuple[str, list[dict]]] = []
    for group, event in collected:
        if runs and runs[-1][0] == group:
            runs[-1][1].append(event)
        else:
            runs.append((group, [event]))
    return [(group, run[0] if len(run) == 1 else {"type": "chat.bundle", "events": run}) for group, run in runs]


def send(group: str, event: dict) -> None:
    """Send now, from synchronous code (a service after commit, a command, a thread), through
    the layer only: what this process's connections start on the way would run inside the
    caller's `async_to_sync`, which is gone by then."""
    async_to_sync(send_async)(group, event, direct=False)


async def send_async(group: str, event: dict, *, direct: bool = True) -> None:
    """Send now, from the event loop. A failure is counted in chat_publish_failures and raised.

    With `direct`, this process's own connections get the event at once from its hub,
    without the round trip through Redis; the hub skips the copy that comes back.
    """
    event = {**event, "group": group}  # each process's hub routes by it (`chat.realtime.hub`)
    local = _local_hub() if direct else None
    if local is not None:
        event["hub"] = local.id
        local.dispatch(event)
    try:
        await get_channel_layer().group_send(group, event)
    except Exception:
        metrics.PUBLISH_FAILURES.inc()
        raise


# The channel-layer events the services send to a user's connections (handled by the consumer's
# `chat_<kind>` methods), built here so that each shape is written once.


def subscribe_event(room_id: int, slug: str, *, since: int) -> dict:
    """Subscribe the user's connections to the room, replaying its messages after `since`."""
    return {"type": "chat.subscribe", "room_id": room_id, "slug": slug, "since": since}


def unsubscribe_event(room_id: int, slug: str, *, reason: str) -> dict:
    """Unsubscribe the user's connections from the room; they answer `room.left` with `reason`."""
    return {"type": "chat.unsubscribe", "room_id": room_id, "slug": slug, "reason": reason}


def close_event(code: int, reason: str, **detail) -> dict:
    """Close the user's connections with `code` and `reason`; `keep_session` spares that session's."""
    return {"type": "chat.close", "code": code, "reason": reason, **detail}


def archived_event(room_id: int, frame: dict) -> dict:
    """The room is archived: its connections send `frame` (`room.updated`) and leave it."""
    return {"type": "chat.archived", "room_id": room_id, "text": encode(frame)}
