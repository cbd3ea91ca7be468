"""This process's one subscription to the channel layer, shared by all of its connections.

Connections do not subscribe to groups themselves. The hub adds one channel per process to
each group that has a local member, and hands every event it receives to those members, in
the order received. So a group send costs the layer one delivery per process, not one per
member: `RedisChannelLayer` pushes once per process, the pub/sub and in-process layers fill
one queue. And the frame is encoded and framed once per process: under daphne each member
writes the same prepared WebSocket frame to its socket (`ChatConsumer.deliver`) without a
task switch per recipient.
"""

import asyncio
import logging
import time
import uuid
import weakref

from channels.layers import get_channel_layer

from chat import events, metrics

from . import reads, transport
from .transport import Frame

logger = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed receive (Redis away); the watchdog closes the sockets meanwhile
# How long a room's message that overtook its predecessor (published by another process)
# waits here for it. Beyond that the hub reads the missing messages from the database once,
# for all of its members (`Hub._fill`).
REORDER_WAIT_S = 0.05


class Hub:
    def __init__(self, layer, fill=None):
        self.id = uuid.uuid4().hex  # marks the events this process published (see `events.send_async`)
        self.layer = layer
        # async (room_id, after, until) -> the message events in between, or None if too many;
        # without it, held events go on alone and each connection reads its gap itself.
        self.fill = fill
        self.channel: str | None = None
        self.members: dict[str, set] = {}  # group -> local consumers in it
        self.changing: dict[str, asyncio.Future] = {}  # group -> its layer subscription being changed
        self.added_at: dict[str, float] = {}  # group -> when the layer membership was last (re)added
        self.last: dict[str, int] = {}  # group -> id of the last message dispatched to its members
        self.held: dict[str, dict[int, dict]] = {}  # group -> {prev_id: message event that overtook it}
        self.timers: dict[str, asyncio.TimerHandle] = {}  # group -> when its held events go on alone
        self.filling: dict[str, asyncio.Task] = {}  # group -> the read of the messages its held events miss
        self.reader: asyncio.Task | None = None
        self.starting = asyncio.Lock()  # concurrent first joins must share one channel
        self.refreshed = time.monotonic()
        self.gathered: list[dict] | None = None  # a bundle's events to deliver, while it is dispatched

    async def join(self, group: str, consumer) -> None:
        """Deliver `group`'s events to `consumer` from now on: once this returns, every
        event sent to the group afterwards reaches it."""
        while group not in self.members:
            if group in self.changing:
                await asyncio.shield(self.changing[group])
                continue
            await self._change(group, add=True)
        self.members[group].add(consumer)

    async def leave(self, groups, consumer) -> None:
        """Stop delivering `groups`' events to `consumer`, at once and for all of them, even if
        the layer then fails to drop a group that no local connection is in any more."""
        for group in groups:
            self.members.get(group, set()).discard(consumer)
        for group in groups:
            while group in self.changing:
                await asyncio.shield(self.changing[group])
            members = self.members.get(group)
            if members is not None and not members:  # nobody joined meanwhile
                await self._change(group, add=False)

    async def _change(self, group: str, *, add: bool) -> None:
        done = self.changing[group] = asyncio.get_running_loop().create_future()
        try:
            if add:
                await self._start()
                await self.layer.group_add(group, self.channel)
                self.members[group] = set()
                self.added_at[group] = time.monotonic()
            else:
                del self.members[group]
                self.added_at.pop(group, None)
                self.last.pop(group, None)
                self.held.pop(group, None)
                if group in self.timers:
                    self.timers.pop(group).cancel()
                if group in self.filling:
                    self.filling.pop(group).cancel()
                await self.layer.group_discard(group, self.channel)
        finally:
            del self.changing[group]
            done.set_result(None)

    async def _start(self) -> None:
        async with self.starting:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            if self.reader is None or self.reader.done():
                self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except Exception:
                logger.warning("channel layer receive failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_S)
                continue
            if event.get("hub") != self.id:  # this process's own events were dispatched when sent
                self.dispatch(event)
            self._refresh()

    def known(self, group: str, message_id: int) -> None:
        """A member read the group's messages up to `message_id` from the database on joining.
        Until the hub has handed out a message of the group, that is where its order starts:
        a first event that overtook its predecessor then waits for it like any other."""
        if group in self.members and group not in self.last:
            self.last[group] = message_id

    def dispatch(self, event: dict) -> None:
        """Hand `event` to the group's local members. A room's message events go in `prev_id`
        order: one that overtook its predecessor on the way from another process waits for it
        (up to REORDER_WAIT_S), so that the connections need not read the gap each."""
        group = event.get("group")
        if event["type"] == "chat.bundle":  # several events to the group, sent as one (`events._bundled`)
            self.gathered = []
            try:
                for each in event["events"]:
                    self.dispatch({**each, "group": group})
            finally:
                gathered, self.gathered = self.gathered, None
            with transport.batch():  # and written to each socket at once
                self._deliver_all(group, gathered)
            return
        if event.get("message_id") is None or group not in self.members:
            return self._deliver(group, event)
        last = self.last.get(group)
        if group in self.filling or (last is not None and (event.get("prev_id") or 0) > last):
            self.held.setdefault(group, {})[event.get("prev_id") or 0] = event
            if group not in self.timers and group not in self.filling:
                self.timers[group] = asyncio.get_running_loop().call_later(REORDER_WAIT_S, self._release, group)
            return
        self.last[group] = max(last or 0, event["message_id"])
        self._deliver(group, event)
        self._follow(group)

    def _follow(self, group: str) -> None:
        """Deliver the held events that now follow the last one delivered."""
        held = self.held.get(group)
        while held and (follower := held.pop(self.last[group], None)) is not None:
            self.last[group] = follower["message_id"]
            self._deliver(group, follower)
        if not held:
            self.held.pop(group, None)
            if group in self.timers:
                self.timers.pop(group).cancel()

    def _release(self, group: str) -> None:
        """The held events' predecessors did not come in time: read them from the database."""
        self.timers.pop(group, None)
        if self.fill is not None and self.held.get(group):
            self.filling[group] = asyncio.ensure_future(self._fill(group, self.held[group]))
        else:
            self._deliver_held(group)

    async def _fill(self, group: str, held: dict[int, dict]) -> None:
        """Deliver every message between the last one delivered and the newest held one, as
        read from the database: one read for all of the group's members, where each
        connection would otherwise read the same gap. Events arriving meanwhile are held."""
        room_id = next(iter(held.values()))["room_id"]
        until = max(event["message_id"] for event in held.values())
        try:
            events = await self.fill(room_id, self.last[group], until)
        except Exception:  # the database is away: each connection reads its gap itself, or is closed
            logger.warning("reading %s's missing messages failed", group, exc_info=True)
            events = None
        if self.held.get(group) is not held:  # the group was left (and maybe joined again) meanwhile
            return
        del self.filling[group]
        if events is None:  # too many to read at once: each connection reads its own gap, with room.gap
            return self._deliver_held(group)
        arrived = {event["message_id"]: event for event in held.values()}
        metrics.LAYER_GAPS.inc(sum(1 for event in events if event["message_id"] not in arrived))
        for event in events:
            if event["message_id"] > self.last[group]:
                self.last[group] = event["message_id"]
                # One that arrived is sent as it came: it names the connection that sent it (`origin`).
                self._deliver(group, arrived.get(event["message_id"]) or {**event, "group": group})
        for prev_id in [prev_id for prev_id, event in held.items() if event["message_id"] <= self.last[group]]:
            del held[prev_id]  # read above
        self._follow(group)
        if held and group not in self.timers:  # still missing some: wait for them again
            self.timers[group] = asyncio.get_running_loop().call_later(REORDER_WAIT_S, self._release, group)

    def _deliver_held(self, group: str) -> None:
        """The held events go on alone, in id order; each connection reads what it misses."""
        for event in sorted(self.held.pop(group, {}).values(), key=lambda event: event["message_id"]):
            self.last[group] = max(self.last.get(group, 0), event["message_id"])
            self._deliver(group, event)

    def _deliver(self, group: str, event: dict) -> None:
        if self.gathered is not None:  # a bundle's: delivered with the others (`dispatch`)
            self.gathered.append(event)
        else:
            self._deliver_all(group, [event])

    def _deliver_all(self, group: str, events: list[dict]) -> None:
        """Hand `events` to the group's members, each member all of them in order. The members
        that sent one of them go first: the copy of its own message is its acknowledgement,
        which its client is waiting for, and which the others' copies would otherwise delay."""
        members = self.members.get(group)
        if not members or not events:
            return
        frames = [
            (event, Frame(event["text"]) if "text" in event else None, _only(event.get("notify_users")))
            for event in events
        ]
        origins = {event["origin"] for event in events if event.get("origin")}
        if origins:  # a stable sort: the others keep their order
            members = sorted(members, key=lambda consumer: consumer.channel_name not in origins)
        else:
            members = list(members)  # a copy: a member may leave meanwhile
        written = 0
        for consumer in members:
            for event, frame, only in frames:
                if only is not None and consumer.user_id not in only:
                    continue  # a `notification` for other users: most of the room's connections
                try:
                    if consumer.deliver(event, frame):
                        written += 1
                except Exception:  # one broken connection must not stop the others' events
                    logger.exception("delivering %s failed", event.get("type"))
        if written:
            metrics.MESSAGES_DELIVERED.inc(written)

    def _refresh(self) -> None:
        """Re-add groups before a layer with membership expiry (RedisChannelLayer's
        `group_expiry`, a day by default) forgets this process in a long-lived room."""
        expiry = getattr(self.layer, "group_expiry", None)
        now = time.monotonic()
        if not expiry or now - self.refreshed < 60:
            return
        self.refreshed = now
        stale = now - expiry / 2
        for group, added in list(self.added_at.items()):
            if added < stale and group not in self.changing:
                self.added_at[group] = now
                asyncio.ensure_future(self.layer.group_add(group, self.channel))


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (one per process under daphne)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub(get_channel_layer(), fill=reads.message_events)
    return _hubs[loop]


def running_hub() -> Hub | None:
    """The running event loop's hub if it has one (a process serving connections)."""
    try:
        return _hubs.get(asyncio.get_running_loop())
    except RuntimeError:  # no running loop
        return None


events.register_local_hub(running_hub)


def _only(user_ids: list[int] | None) -> frozenset[int] | None:
    """The users an event names as its only recipients (`notify_users`), or None for everyone."""
    return None if user_ids is None else frozenset(user_ids)
