"""Delivery: a connection that carries out its RoomStream's decisions through its transport.

The order of delivery is decided by the connection's `RoomStream` (chat/realtime/stream.py,
where the rules are). This sends what it decides: events written at once when the transport
allows it (`deliver`: no database access, thread hop or task switch), the others in turn
(`chat_frame`); a room's replay on subscribing (`_replay`) and the messages an event overtook
(`_catch_up`), read from the database; and each `message.send`'s acknowledgement, registered as
soon as the message is stored (`_written`) and sent in its place in the room and among the
replies (`_acknowledge`, `after_answer`, `event_turn`), or after ACK_WAIT_S if its own event is lost.
"""

import asyncio
import contextlib
import functools
import time
import uuid

from django.conf import settings

from chat import events, metrics, protocol
from chat.errors import INFRASTRUCTURE, ChatError
from chat.serializers import message_data

from . import presence, reads
from .connection import Connection
from .hub import hub
from .stream import ACK, CATCH_UP, DROP, SEND, WAIT, RoomStream

# How long an acknowledgement waits for the connection's own event before reading its
# predecessors from the database instead (the event was lost with a Redis connection).
ACK_WAIT_S = 2.0


def db(fn):
    """`fn` on the database thread; see `events.run_sync`."""
    return events.run_sync(fn)


class Delivery(Connection):
    user = None

    @functools.cached_property
    def stream(self) -> RoomStream:
        """The order of delivery of this connection's rooms; made anew as the connection opens."""
        return RoomStream(user_id=getattr(self.user, "pk", None), origin=self.channel_name)

    @property
    def user_id(self) -> int | None:
        return self.stream.user_id

    # The stream's marks and slugs under the consumer's names: a test of a bare consumer sets them
    # (test_security_access.py::test_room_events_on_their_way_after_leaving_are_dropped).
    rooms = property(lambda self: self.stream.marks, lambda self, marks: setattr(self.stream, "marks", marks))
    slugs = property(lambda self: self.stream.slugs, lambda self, slugs: setattr(self.stream, "slugs", slugs))

    async def __call__(self, scope, receive, send):
        self.channel_name = f"conn.{uuid.uuid4().hex}"  # names the connection; the hub holds the layer channel
        self.subscriptions: set[str] = set()
        self.ack_timers: dict[int, asyncio.TimerHandle] = {}  # message id -> when its ack stops waiting
        await super().__call__(scope, receive, send)

    # Events

    def deliver(self, event: dict, frame) -> bool:
        """Take an event of one of this connection's groups, from the hub, in order; True if a
        message's frame was written now (the hub counts them, in one metrics update per event).

        A `chat.frame` that needs nothing but a send is written at once, while nothing else
        of this connection is running or waiting; every other event waits its turn in the inbox.
        """
        if self.transport.direct and not self.queued and not self.turn.locked() and event["type"] == "chat.frame":
            action = self.stream.take(event)
            if action == SEND:
                return self.transport.write_shared(frame) and bool(event.get("message_id"))
            if action == ACK:  # its own message, with nothing missing before it: the ack goes in its place
                ack = self._take_ack(event["message_id"])
                return ack is not None and self.transport.write_text(ack)
            if action == DROP:
                return False
        self.wait_in_turn(event)
        return False

    async def chat_frame(self, event):
        action = self.stream.classify(event)
        if action == DROP:
            return
        if action == CATCH_UP:
            try:
                if event.get("message_id") is None:  # a change: the read brings it, or a later one
                    return await self._catch_up_changes(event["room_id"])
                if await self._catch_up(
                    event["room_id"], event["message_id"], event.get("prev_id") or 0, event.get("seq")
                ):
                    return  # the read brought it (or its ack, in its place)
            except INFRASTRUCTURE:  # the gap cannot be read now: the client resumes it later
                return await self.close(
                    protocol.CLOSE_SERVICE_RESTART, "service restart: reconnect and resume with since"
                )
            if event.get("origin") == self.channel_name:
                return await self._send_ack(event["message_id"])
        self.stream.mark(event)
        await self.send(text_data=event["text"])
        if event.get("message_id") is not None:
            metrics.MESSAGES_DELIVERED.inc()

    # Subscriptions and reads

    async def _send(self, frame: dict):
        await self.send(text_data=events.encode(frame))

    async def _join(self, group: str):
        await hub().join(group, self)
        self.subscriptions.add(group)

    async def _subscribe(self, room_id: int, slug: str):
        if self.stream.subscribe(room_id, slug):
            await self._join(events.room_group(room_id))

    async def _unsubscribe(self, room_id: int):
        self.stream.unsubscribe(room_id)
        self.subscriptions.discard(events.room_group(room_id))
        await hub().leave([events.room_group(room_id)], self)

    async def _replay(
        self,
        room_id: int,
        slug: str,
        *,
        since: int | None,
        ref: str | None,
        until: tuple[int | None, int | None] = (None, None),
        changes_since: int | None = None,
    ):
        """Send `room.joined`, then with `changes_since` every change after it to the messages up
        to `since`, in seq order (a `room.gap` with `changes` instead beyond CHAT_REPLAY_LIMIT), then
        every message after `since` (newest CHAT_REPLAY_LIMIT, after a `room.gap`).

        Must run after `_subscribe` so that nothing committed after the read is missed.
        `until` holds the floors (id, seq) of a room this connection was already subscribed to:
        what is above them was sent live, so only what is up to them is replayed, and the marks stay.
        The same read checks that the user is still an active member of the room, not archived:
        if not, the connection leaves the room's group and the refusal is raised, nothing sent.
        A removal committed after the read reaches the connection as an event after this.
        """
        until_id, until_seq = until
        try:
            replay = await db(reads.replay_state)(
                self.user, slug, room_id, since, until_id, settings.CHAT_REPLAY_LIMIT, changes_since, until_seq
            )
        except ChatError:
            await self._unsubscribe(room_id)
            raise
        seq = replay.seq if until_id is None else self.stream.changes.get(room_id, replay.seq)
        online = await presence.backend().online(replay.members)
        joined = protocol.room_joined(slug, sorted(replay.members[uid] for uid in online), replay.last_id, seq)
        await self._send(protocol.reply(joined, ref))
        if replay.changes_gap:
            await self._send(protocol.room_gap(slug, 0, since + 1, changes=True))
        for message in replay.changes:
            await self._send(protocol.message_updated(message))
            await asyncio.sleep(0)
        await self._send_messages(slug, replay.messages, gap_after=since if replay.gap else None)
        if until_id is None:
            hub().known(events.room_group(room_id), self.stream.replayed(room_id, replay.last_id, seq))

    async def _catch_up(self, room_id: int, message_id: int, prev_id: int, seq: int | None = None) -> bool:
        """Move the room's mark to `message_id`, first sending the messages between the mark
        and it that have not come live yet; when changes before `seq` have not come either,
        everything the room's change mark lacks, this message included (then True: it was sent)."""
        if self.stream.changes_missing(room_id, seq):
            await self._catch_up_changes(room_id, before=message_id)
            return self.stream.sent_already(room_id, message_id)
        if self.stream.sent_already(room_id, message_id):
            return False
        after = self.stream.read_from(room_id, prev_id)
        if after is not None:
            messages, gap = await db(reads.between)(room_id, after, message_id)
            metrics.LAYER_GAPS.inc(len(messages))
            await self._send_messages(self.stream.slugs[room_id], messages, gap_after=after if gap else None)
        self.stream.advance(room_id, message_id)
        return False

    async def _catch_up_changes(self, room_id: int, before: int = 0) -> None:
        """Send everything of the room changed after its change mark, read at once from the database:
        the messages already sent as `message.updated` (in seq order), then those not sent yet as
        `message.new` (in id order, in their current state). Beyond CHAT_REPLAY_LIMIT, a `room.gap`
        with `changes` first: the client reloads the room up to the newest message read (or up to
        `before`, the message about to be sent), and the mark moves there."""
        slug, mark = self.stream.slugs[room_id], self.stream.marks[room_id]
        rows, gap = await db(reads.changed_since)(room_id, self.stream.changes[room_id])
        if not rows:
            return
        metrics.LAYER_GAPS.inc(len(rows))
        news = sorted((message for message in rows if message["id"] > mark), key=lambda message: message["id"])
        if gap:
            until = max([before] + [message["id"] + 1 for message in rows])
            await self._send(protocol.room_gap(slug, mark, until, changes=True))
            self.stream.advance(room_id, max(mark, until - 1))
        for message in rows:
            if message["id"] <= mark:
                await self._send(protocol.message_updated(message))
                await asyncio.sleep(0)
        await self._send_messages(slug, news, gap_after=None)
        if news:
            self.stream.advance(room_id, max(self.stream.marks[room_id], news[-1]["id"]))
        self.stream.reached_change(room_id, rows[-1]["seq"])

    async def _send_change(self, message, ref: str | None) -> None:
        """Answer a frame that changed `message` (an edit, a reaction) with the whole message,
        after the changes before it that have not been sent."""
        room_id = message.room_id
        if self.stream.subscribed(room_id) and self.stream.changes_missing(room_id, message.seq):
            await self._catch_up_changes(room_id)
        await self._send(protocol.reply(protocol.message_updated(message_data(message)), ref))
        self.stream.changed(room_id, message.seq)

    async def _send_messages(self, slug: str, messages: list[dict], gap_after: int | None):
        """Send `message.new` frames (after a `room.gap` when older ones were left out)."""
        if gap_after is not None and messages:
            await self._send(protocol.room_gap(slug, gap_after, messages[0]["id"]))
        for message in messages:
            if self.stream.ack_in_place(message["id"]):
                await self._send_ack(message["id"])
            else:
                await self._send(protocol.message_new(message))
                metrics.MESSAGES_DELIVERED.inc()
            # Let daphne write between frames: a burst sent in one go waits whole in its buffer
            # and trips CHAT_MAX_SEND_BUFFER, dropping the client on every attempt to resume.
            await asyncio.sleep(0)

    # Acknowledgements

    def _written(self, ref: str | None, written, seq: int | None = None) -> None:
        """A new message of this connection is stored: its acknowledgement waits from now on,
        before the message's event exists, so whichever comes first sends it in its place: the
        answer to the frame, the event, or a read of the messages before another (RoomStream).
        `seq` numbers the frame, whose reply never goes before the replies to those before it."""
        if not isinstance(written, tuple) or not written[1] or not self.stream.subscribed(written[0].room_id):
            return
        message = written[0]
        ack = events.encode(protocol.reply(protocol.message_new(message_data(message)), ref))
        self.ack_timers[message.pk] = asyncio.get_running_loop().call_later(ACK_WAIT_S, self._ack_overdue, message.pk)
        self.stream.register(message.pk, message.room_id, ack, seq, message.seq)

    async def _acknowledge(self, frame, written, received: float):
        """Answer a `message.send` once written: `written` is (message, created), or the refusal."""
        if isinstance(written, Exception):
            raise written
        message, created = written
        if created:
            metrics.SEND_TO_PERSIST.observe(time.perf_counter() - received)
        room_id = message.room_id
        if message.pk in self.stream.registered:  # its ack waits in the stream, or was sent from there
            if self.stream.reply_now(message.pk, room_id, message.prev_id):
                await self._send_ack(message.pk)
            # else others' messages before it are still on their way here; the ack follows them
            return
        ack = events.encode(
            protocol.reply(protocol.message_new(message_data(message), duplicate=not created), frame.ref)
        )
        if not self.stream.subscribed(room_id):  # a new direct room: subscribe, nothing to replay before this
            await self._subscribe(room_id, message.room.slug)
            with contextlib.suppress(ChatError):  # removed since it was written: the ack is all it gets
                await self._replay(room_id, message.room.slug, since=message.pk, ref=None)
        elif not self.stream.sent_already(room_id, message.pk):
            # A duplicate's original may still be on its way here, behind others' messages:
            # its id is about to be the client's resume point, so send those first.
            await self._catch_up(room_id, message.pk, message.prev_id if created else message.pk, message.seq)
        await self.send(text_data=ack)
        metrics.MESSAGES_DELIVERED.inc()

    async def after_answer(self, written) -> None:
        """Before the next frame is answered: this frame's ack, which waits for others' messages
        before it to be sent (row 3a of docs/guarantees.md), goes. If the inbox waits for a later
        frame meanwhile, those messages may be behind it there: read them instead."""
        if not isinstance(written, tuple):
            return
        message_id = written[0].pk
        while message_id in self.stream.acks:
            if self.stream.held is not None:
                return await self._flush_ack(message_id)
            await self.progress_made()

    def frame_turn(self, seq: int) -> None:
        self.stream.answering(seq)

    async def event_turn(self, event: dict) -> None:
        """Hold the inbox at the connection's own message until its frame's turn to be answered,
        so that its ack, and every event after it, keep their order."""
        while self.stream.hold_for(event):
            self.progress()
            await self.progress_made()

    async def _send_ack(self, message_id: int | None):
        """Send a waiting acknowledgement, now that every message before it has been sent."""
        ack = self._take_ack(message_id)
        if ack is not None:
            await self.send(text_data=ack)
            metrics.MESSAGES_DELIVERED.inc()

    def _take_ack(self, message_id: int | None) -> str | None:
        ack = self.stream.take_ack(message_id)
        if ack is not None:
            timer = self.ack_timers.pop(message_id, None)
            if timer is not None:
                timer.cancel()
            self.progress()
        return ack

    def _ack_overdue(self, message_id: int):
        asyncio.ensure_future(self._flush_ack(message_id))

    async def _flush_ack(self, message_id: int):
        """The connection's own event has not come back: read what precedes the message instead."""
        async with self.turn:
            action = self.stream.overdue(message_id)
            if action == DROP:
                return
            if action == WAIT:  # the answer to its frame is not due yet: wait on
                self.ack_timers[message_id] = asyncio.get_running_loop().call_later(
                    ACK_WAIT_S, self._ack_overdue, message_id
                )
                return
            if action == CATCH_UP:
                try:
                    room_id = self.stream.acks[message_id][0]
                    await self._catch_up(room_id, message_id, message_id, self.stream.ack_changes.get(message_id))
                except INFRASTRUCTURE:
                    return await self.close(
                        protocol.CLOSE_SERVICE_RESTART, "service restart: reconnect and resume with since"
                    )
            await self._send_ack(message_id)
