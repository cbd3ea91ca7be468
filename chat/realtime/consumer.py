"""The WebSocket consumer: a thin adapter from frames to services, and from events to frames.

One connection multiplexes every room its user belongs to. It never touches the ORM:
reads go through `chat.selectors` (`reads`), writes through `chat.services`, each in one
`events.run_sync` call (the database thread; the events a write publishes are sent from
the event loop once it returns); a `message.send` goes to the batch writer (`writer`).
Channel-layer events reach it through the process's hub (`chat.realtime.hub`), pre-encoded
(`chat.frame`); an event that needs nothing but a send is written at once (`deliver`), with no
database access, thread hop or task switch, when the transport allows it.

The order of delivery is decided by the connection's `RoomStream` (chat/realtime/stream.py,
where the rules are); this module carries its decisions out. A subscription (`_subscribe`) is
followed by a read that checks the membership (`_replay`; at connect, `room_summaries`): a
removal before that read leaves nothing subscribed, one after it arrives as an event (the
user's group is joined first) and unsubscribes.
"""
import asyncio
import contextlib
import functools
import logging
import time
import uuid

from django.conf import settings

from chat import events, metrics, protocol, selectors, services
from chat.errors import INFRASTRUCTURE, RETRY_AFTER_S, ChatError, Gone, NotFound, RateLimited
from chat.protocol import FrameError
from chat.serializers import message_data, user_data

from . import connections, presence, reads, writer
from .connection import Connection
from .hub import hub
from .stream import ACK, CATCH_UP, DROP, SEND, WAIT, RoomStream

logger = logging.getLogger(__name__)

# How long an acknowledgement waits for the connection's own event before reading its
# predecessors from the database instead (the event was lost with a Redis connection).
ACK_WAIT_S = 2.0

# Frames whose writes have a budget besides `message.send`: one accepted ends a run of `rate_limited`
# errors (CHAT_FLOOD_CLOSE_AFTER), as an accepted send does.
BUDGETED = {"join", "leave", "message.edit", "message.delete"}

_last_typing: dict[tuple[int, int], float] = {}  # (user_id, room_id) -> monotonic time


def db(fn):
    """`fn` on the database thread; see `events.run_sync`."""
    return events.run_sync(fn)


class ChatConsumer(Connection):
    user = None
    online = False

    @functools.cached_property
    def stream(self) -> RoomStream:
        """The order of delivery of this connection's rooms; made as the connection opens."""
        return RoomStream(user_id=getattr(self.user, "pk", None), origin=self.channel_name)

    # The stream's marks and slugs, by the names a consumer's state had before RoomStream.
    rooms = property(lambda self: self.stream.marks, lambda self, marks: setattr(self.stream, "marks", marks))
    slugs = property(lambda self: self.stream.slugs, lambda self, slugs: setattr(self.stream, "slugs", slugs))

    async def __call__(self, scope, receive, send):
        self.channel_name = f"conn.{uuid.uuid4().hex}"  # names the connection; the hub holds the layer channel
        self.subscriptions: set[str] = set()
        self.ack_timers: dict[int, asyncio.TimerHandle] = {}  # message id -> when its ack stops waiting
        await super().__call__(scope, receive, send)

    # Lifecycle and admission

    async def connect(self):
        # Accept first: a handshake refused before acceptance reaches a browser as 1006,
        # with no code to act on.
        await self.accept()
        try:
            await self._open()
        except INFRASTRUCTURE:
            logger.warning("connect failed: database or Redis unavailable", exc_info=True)
            await self.close(protocol.CLOSE_TRY_AGAIN, "service unavailable: retry later")

    async def _open(self):
        self.user = self.scope.get("user")
        self.stream = RoomStream(user_id=getattr(self.user, "pk", None), origin=self.channel_name)
        self.bound_room: int | None = None
        self.flood_strikes = 0
        if self.scope.get("auth_error") or self.user is None or not self.user.is_authenticated:
            return await self.close(protocol.CLOSE_UNAUTHENTICATED, self.scope.get("auth_error") or "no credentials")
        if not self.user.is_active:
            return await self.close(protocol.CLOSE_FORBIDDEN, "inactive user")
        if connections.count() >= settings.CHAT_MAX_CONNECTIONS:
            return await self.close(protocol.CLOSE_TRY_AGAIN, "server at its connection limit")
        if await presence.backend().count(self.user.pk) >= settings.CHAT_MAX_CONNECTIONS_PER_USER:
            return await self.close(protocol.CLOSE_TRY_AGAIN, "too many connections for this user")
        connections.add(self)
        slug = self.scope["url_route"]["kwargs"].get("slug")
        if slug is not None and not protocol.SLUG_RE.fullmatch(slug):  # nor a query for text the database refuses
            return await self.close(protocol.CLOSE_NO_ROOM, "no such room: slugs are 1-50 lowercase letters, digits "
                                                            "or hyphens")
        # The user's group first: a removal committed after the memberships are read below
        # reaches this connection as `chat.unsubscribe`, handled once this is done.
        await self._join(events.user_group(self.user.pk))
        await self._join(events.everyone_group())
        try:
            room_ids = await db(self._open_session)(slug)
        except ChatError as exc:
            # Over the join budget is no refusal of the room: the client reconnects later and joins then.
            code = {Gone: protocol.CLOSE_ARCHIVED, NotFound: protocol.CLOSE_NO_ROOM,
                    RateLimited: protocol.CLOSE_TRY_AGAIN}.get(type(exc), protocol.CLOSE_FORBIDDEN)
            return await self.close(code, exc.detail)
        rooms = await self._subscribe_all(room_ids)
        self.online = True
        if await presence.backend().connect(self.user.pk, self.channel_name):
            await self._announce_presence("online")
        await self._send(protocol.hello(
            user=user_data(self.user), rooms=rooms, connection_id=self.channel_name,
            max_body=settings.CHAT_MAX_BODY, rate_per_10s=settings.CHAT_RATE_PER_10S,
        ))
        if slug is not None:
            self.bound_room = next((room_id for room_id, room_slug in room_ids if room_slug == slug), None)
            try:
                await self._replay(self.bound_room, slug, since=None, ref=None)
            except ChatError as exc:  # removed, or archived, since it was joined above
                code = protocol.CLOSE_ARCHIVED if isinstance(exc, Gone) else protocol.CLOSE_FORBIDDEN
                await self.close(code, exc.detail)

    def _open_session(self, slug):
        if slug is not None:
            services.room_join(user=self.user, slug=slug)
        return selectors.member_room_ids(self.user)

    async def _subscribe_all(self, room_ids: list[tuple[int, str]]) -> list[dict]:
        """Subscribe to the user's rooms, then read their summaries: a room archived (its
        `chat.archived` sent) before that read is not in it, and is left again."""
        for room_id, room_slug in room_ids:
            await self._subscribe(room_id, room_slug)
        rooms = await db(selectors.room_summaries)(self.user)
        ids = {room_slug: room_id for room_id, room_slug in room_ids}
        for room in rooms:
            if room["slug"] in ids:
                self.stream.opened(ids[room["slug"]], room["last_message_id"])
                hub().known(events.room_group(ids[room["slug"]]), room["last_message_id"] or 0)
        listed = {room["slug"] for room in rooms}
        for room_id, room_slug in room_ids:
            if room_slug not in listed:
                await self._unsubscribe(room_id)
        return rooms

    async def disconnect(self, code):
        connections.discard(self)
        for timer in self.ack_timers.values():
            timer.cancel()
        self.ack_timers.clear()
        if "stream" not in vars(self):
            return
        self.stream.acks.clear()
        if self.user is None or not getattr(self.user, "is_authenticated", False):
            return
        try:
            if self.online:
                self.online = False
                if await presence.backend().disconnect(self.user.pk, self.channel_name):
                    await self._announce_presence("offline")
            groups, self.subscriptions = self.subscriptions, set()
            await hub().leave(groups, self)
        except INFRASTRUCTURE:
            # Redis is away: its entries expire and the sweep announces the user offline.
            logger.warning("cleanup on disconnect failed: Redis unavailable")

    # Client frames

    async def receive(self, text_data=None, bytes_data=None):
        """Queue a client frame, answered in order. A `message.send` is handed to the writer at
        once, so that a client's sends in a row are written together."""
        if bytes_data is not None:
            text_data = bytes_data.decode("utf-8", "replace")
        if len(text_data) > settings.CHAT_MAX_FRAME_BYTES or len(text_data.encode()) > settings.CHAT_MAX_FRAME_BYTES:
            return await self.close(protocol.CLOSE_TOO_BIG, protocol.frame_too_big_reason(settings.CHAT_MAX_FRAME_BYTES))
        write = None
        try:
            frame = protocol.parse_client_frame(text_data)
        except FrameError as exc:
            frame = exc
        else:
            if frame.type == "message.send":
                write = writer.submit(dict(
                    user=self.user, slug=frame.get("room"), to=frame.get("to"), body=frame.get("body"),
                    client_id=frame.get("client_id", ""), origin=self.channel_name),
                    functools.partial(self._written, frame.ref, seq=self.received))
        await self.queue_frame(frame, write)

    async def answer(self, frame, write: asyncio.Future | None, received: float):
        ref = getattr(frame, "ref", None)
        try:
            if isinstance(frame, FrameError):
                raise frame
            if write is not None:
                await self._acknowledge(frame, write.result(), received)
            else:
                await getattr(self, "on_" + frame.type.replace(".", "_"))(frame)
                if frame.type in BUDGETED:
                    self.flood_strikes = 0
        except FrameError as exc:
            # One line, no traceback: a client's malformed or hostile input is not a server fault.
            logger.info("refused a frame from %s: %s %r", self.user, exc.code, exc.detail[:200])
            await self._send(protocol.error(exc.code, exc.detail, exc.ref))
        except INFRASTRUCTURE:
            logger.warning("frame failed: database or Redis unavailable", exc_info=True)
            await self._send(protocol.error(protocol.UNAVAILABLE, "The server cannot reach its database or Redis "
                                            "right now; nothing was changed: retry.", ref, RETRY_AFTER_S))
        except ChatError as exc:
            await self._send(protocol.error(exc.code, exc.detail, ref, exc.retry_after))
            if exc.code == protocol.RATE_LIMITED:
                self.flood_strikes += 1
                if self.flood_strikes >= settings.CHAT_FLOOD_CLOSE_AFTER:
                    await self.close(protocol.CLOSE_POLICY, "flooding after rate_limited errors")
        except Exception:
            incident = uuid.uuid4().hex[:12]
            logger.exception("internal error %s in %s", incident, self.user)
            await self.close(protocol.CLOSE_INTERNAL, f"internal error {incident}")

    async def on_join(self, frame):
        room, _, _ = await db(services.room_join)(user=self.user, slug=frame.get("room"))
        floor = self.stream.floors.get(room.pk)  # already subscribed: what is above the floor came, or comes, live
        await self._subscribe(room.pk, room.slug)
        await self._replay(room.pk, room.slug, since=frame.get("since"), ref=frame.ref, until=floor)

    async def on_leave(self, frame):
        room = await db(services.room_leave)(user=self.user, slug=frame.get("room"))
        await self._unsubscribe(room.pk)
        await self._send(protocol.reply(protocol.room_left(room.slug, "left"), frame.ref))

    async def on_message_edit(self, frame):
        message = await db(services.message_edit)(user=self.user, message_id=frame.get("id"), body=frame.get("body"),
                                                  origin=self.channel_name, source="websocket")
        await self._send(protocol.reply(protocol.message_updated(message_data(message)), frame.ref))

    async def on_message_delete(self, frame):
        message = await db(services.message_delete)(user=self.user, message_id=frame.get("id"), origin=self.channel_name,
                                                     source="websocket")
        await self._send(protocol.reply(protocol.message_deleted(message.room.slug, message.pk), frame.ref))

    async def on_typing(self, frame):
        room_id = self.stream.room_id(frame.get("room"))
        now = time.monotonic()
        key = (self.user.pk, room_id)
        if now - _last_typing.get(key, 0) < settings.CHAT_TYPING_INTERVAL_S:
            return
        _last_typing[key] = now
        event = events.frame_event(protocol.typing(frame.get("room"), user_data(self.user)), room_id=room_id,
                                   skip_user=self.user.pk)
        await events.send_async(events.room_group(room_id), event)

    async def on_read(self, frame):
        membership = await db(services.read_mark)(user=self.user, slug=frame.get("room"),
                                                  message_id=frame.get("message_id"), origin=self.channel_name)
        count = await db(selectors.unread_count)(membership)
        await self._send(protocol.reply(protocol.unread(frame.get("room"), count, membership.last_read_id), frame.ref))

    async def on_ping(self, frame):
        await self._send(protocol.reply(protocol.pong(), frame.ref))

    # Channel-layer events

    def deliver(self, event: dict, frame) -> None:
        """Take an event of one of this connection's groups, from the hub, in order.

        A `chat.frame` that needs nothing but a send is written at once, while nothing else
        of this connection is running or waiting; every other event waits its turn in the inbox.
        """
        if self.transport.direct and not self.queued and not self.turn.locked() and event["type"] == "chat.frame":
            action = self.stream.take(event)
            if action == SEND:
                if self.transport.write_shared(frame) and event.get("message_id"):
                    metrics.MESSAGES_DELIVERED.inc()
                return
            if action == ACK:  # its own message, with nothing missing before it: the ack goes in its place
                ack = self._take_ack(event["message_id"])
                if ack is not None and self.transport.write_text(ack):
                    metrics.MESSAGES_DELIVERED.inc()
                return
            if action == DROP:
                return
        self.wait_in_turn(event)

    async def chat_frame(self, event):
        action = self.stream.classify(event)
        if action == DROP:
            return
        if action == CATCH_UP:
            try:
                await self._catch_up(event["room_id"], event["message_id"], event.get("prev_id") or 0)
            except INFRASTRUCTURE:  # the gap cannot be read now: the client resumes it later
                return await self.close(protocol.CLOSE_SERVICE_RESTART, "service restart: reconnect and resume with since")
            if event.get("origin") == self.channel_name:
                return await self._send_ack(event["message_id"])
        self.stream.mark(event)
        await self.send(text_data=event["text"])
        if event.get("message_id") is not None:
            metrics.MESSAGES_DELIVERED.inc()

    async def chat_subscribe(self, event):
        if self.stream.subscribed(event["room_id"]):
            return
        await self._subscribe(event["room_id"], event["slug"])
        with contextlib.suppress(ChatError):  # removed again since: this event is stale
            await self._replay(event["room_id"], event["slug"], since=event["since"], ref=None)

    async def chat_unsubscribe(self, event):
        room_id = event["room_id"]
        if self.stream.subscribed(room_id):
            await self._unsubscribe(room_id)
            await self._send(protocol.room_left(event["slug"], event["reason"]))
        if room_id == self.bound_room and event["reason"] in ("kicked", "banned"):
            await self.close(protocol.CLOSE_FORBIDDEN, f"removed from the room ({event['reason']})")

    async def chat_close(self, event):
        if event.get("keep_session") and event["keep_session"] == self.scope.get("session_mark"):
            return
        await self.close(event["code"], event["reason"])

    async def chat_archived(self, event):
        room_id = event["room_id"]
        if self.stream.subscribed(room_id):
            await self.send(text_data=event["text"])
            await self._unsubscribe(room_id)
        if room_id == self.bound_room:
            await self.close(protocol.CLOSE_ARCHIVED, "the room was archived")

    # Carrying out the stream's decisions

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

    async def _replay(self, room_id: int, slug: str, *, since: int | None, ref: str | None, until: int | None = None):
        """Send `room.joined`, then every message after `since` (newest CHAT_REPLAY_LIMIT, after a `room.gap`).

        Must run after `_subscribe` so that nothing committed after the read is missed.
        `until` is the floor of a room this connection was already subscribed to: messages above
        it were sent live, so only those up to it are replayed, and the marks stay.
        The same read checks that the user is still an active member of the room, not archived:
        if not, the connection leaves the room's group and the refusal is raised, nothing sent.
        A removal committed after the read reaches the connection as an event after this.
        """
        limit = settings.CHAT_REPLAY_LIMIT
        try:
            messages, gap, last_id, members = await db(reads.replay_state)(self.user, slug, room_id, since, until, limit)
        except ChatError:
            await self._unsubscribe(room_id)
            raise
        online = await presence.backend().online(members)
        await self._send(protocol.reply(protocol.room_joined(slug, sorted(members[uid] for uid in online), last_id), ref))
        await self._send_messages(slug, messages, gap_after=since if gap else None)
        if until is None:
            hub().known(events.room_group(room_id), self.stream.replayed(room_id, last_id))

    async def _catch_up(self, room_id: int, message_id: int, prev_id: int) -> bool:
        """Move the room's mark to `message_id`, first sending the messages between the mark
        and it that have not come live yet. False if `message_id` was sent already."""
        if self.stream.sent_already(room_id, message_id):
            return False
        after = self.stream.read_from(room_id, prev_id)
        if after is not None:
            messages, gap = await db(reads.between)(room_id, after, message_id)
            metrics.LAYER_GAPS.inc(len(messages))
            await self._send_messages(self.stream.slugs[room_id], messages, gap_after=after if gap else None)
        self.stream.advance(room_id, message_id)
        return True

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

    async def _announce_presence(self, status: str):
        await presence.announce(self.user.pk, status, user=user_data(self.user), rooms=list(self.stream.slugs.items()))

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
        self.stream.register(message.pk, message.room_id, ack, seq)

    async def _acknowledge(self, frame, written, received: float):
        """Answer a `message.send` once written: `written` is (message, created), or the refusal."""
        if isinstance(written, Exception):
            raise written
        message, created = written
        if created:
            metrics.SEND_TO_PERSIST.observe(time.perf_counter() - received)
        self.flood_strikes = 0
        room_id = message.room_id
        if message.pk in self.stream.registered:  # its ack waits in the stream, or was sent from there
            if self.stream.reply_now(message.pk, room_id, message.prev_id):
                await self._send_ack(message.pk)
            # else others' messages before it are still on their way here; the ack follows them
            return
        ack = events.encode(protocol.reply(protocol.message_new(message_data(message), duplicate=not created), frame.ref))
        if not self.stream.subscribed(room_id):  # a new direct room: subscribe, nothing to replay before this
            await self._subscribe(room_id, message.room.slug)
            with contextlib.suppress(ChatError):  # removed since it was written: the ack is all it gets
                await self._replay(room_id, message.room.slug, since=message.pk, ref=None)
        elif not self.stream.sent_already(room_id, message.pk):
            # A duplicate's original may still be on its way here, behind others' messages:
            # its id is about to be the client's resume point, so send those first.
            await self._catch_up(room_id, message.pk, message.prev_id if created else message.pk)
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
                    ACK_WAIT_S, self._ack_overdue, message_id)
                return
            if action == CATCH_UP:
                try:
                    await self._catch_up(self.stream.acks[message_id][0], message_id, message_id)
                except INFRASTRUCTURE:
                    return await self.close(protocol.CLOSE_SERVICE_RESTART,
                                            "service restart: reconnect and resume with since")
            await self._send_ack(message_id)
