"""The WebSocket consumer: a thin adapter from frames to services, and from events to frames.

One connection multiplexes every room its user belongs to. It never touches the ORM:
reads go through `chat.selectors`, writes through `chat.services`, each in one
`events.run_sync` call (the database thread; the events a write publishes are sent from
the event loop once it returns). Channel-layer events reach it through the process's hub
(`chat.realtime.hub`), pre-encoded (`chat.frame`); an event that needs nothing but a send is written
at once (`deliver`), with no database access, thread hop or task switch.

Delivery without gap or duplicate, in id order, per room:
- A connection subscribes to a room's group *before* it reads the room's messages. A
  message committed before that read is in the replay; one committed after it is
  published after the subscription and arrives live.
- `self.rooms[room]` is the mark: every message of the room up to it has been sent to the
  client (or predates the connection). A live `message.new` at or below the mark is
  dropped. One whose predecessor (`prev_id`) is above the mark overtook another on its way
  from a different process: the consumer sends the missing ones from the database first.
  So the highest id a client holds, once its join's replay is in, is a safe `since`.
- The sender's acknowledgement is a `message.new` too, so it waits for its turn. It is put
  in `self.acks` as soon as the message is stored, before its event is published, and
  whichever comes first sends it in its place: the answer to the frame when nothing before
  it is missing, the connection's own event coming back from the layer behind the others,
  or a read of the messages before another one. No database read in the usual case.
- Client frames are answered in order (`_answer_frames`), but a `message.send` goes to the
  writer as soon as it is read: a client's sends in a row are stored in one batch. An ack
  whose own event comes back before the frames ahead of it are answered waits for its
  frame's turn (`_ack_due`), and holds the inbox meanwhile, so both orders hold.
- A subscription (`_group_add`) is followed by a read that checks the membership (`_replay`;
  at connect, `room_summaries`): a removal before that read leaves nothing subscribed, one
  after it arrives as an event (the user's group is joined first) and unsubscribes.
- `self.floors[room]` is the mark when the room was subscribed: a later `join since` on
  the same connection replays only up to the floor, since everything above came live.
"""
import asyncio
import collections
import contextlib
import functools
import logging
import time
import types
import uuid
from collections.abc import Callable, Mapping

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import events, metrics, protocol, selectors, services
from chat.errors import INFRASTRUCTURE, RETRY_AFTER_S, ChatError, Forbidden, Gone, NotFound, RateLimited
from chat.protocol import FrameError
from chat.serializers import message_data, user_data


from . import connections, presence, reads, transport, writer
from .hub import hub

logger = logging.getLogger(__name__)

# How long an acknowledgement waits for the connection's own event before reading its
# predecessors from the database instead (the event was lost with a Redis connection).
ACK_WAIT_S = 2.0
# Events waiting while the connection is busy (a handler or a database read); beyond it they are
# dropped and counted (chat_layer_drops), and the room's next message brings the gap back.
INBOX_CAPACITY = 10_000
# Client frames read and not yet answered; beyond it the connection stops reading its socket.
FRAMES_IN_FLIGHT = 64

# Frames whose writes have a budget besides `message.send`: one accepted ends a run of `rate_limited`
# errors (CHAT_FLOOD_CLOSE_AFTER), as an accepted send does.
BUDGETED = {"join", "leave", "message.edit", "message.delete"}

# What a `chat.frame` event needs (see `ChatConsumer._classify`).
DROP, SEND, CATCH_UP = "drop", "send", "catch_up"

_last_typing: dict[tuple[int, int], float] = {}  # (user_id, room_id) -> monotonic time


def db(fn):
    """`fn` on the database thread; see `events.run_sync`."""
    return events.run_sync(fn)


class ChatConsumer(AsyncWebsocketConsumer):
    user = None
    transport = transport.PLAIN  # how frames reach the socket; set per connection in `__call__`
    online = False
    # Replies in frame order (see `_ack_due`); set per connection in `__call__`.
    ack_seqs: "Mapping[int, int]" = types.MappingProxyType({})  # message id -> number of the frame it answers
    reached = -1  # number of the frame being answered: every frame before it is answered
    held: int | None = None  # number of the frame whose reply the inbox waits for
    progressed: asyncio.Future | None = None  # set when `reached` grows, an ack goes or the inbox waits

    async def dispatch(self, message):
        # Channels closes stale database connections before every handler, through a hop to
        # the database thread: one per delivered event, all queued behind message writes.
        # Every database access here goes through `database_sync_to_async` (`db`), which does
        # that itself on the thread, so the delivery path stays on the event loop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if message["type"] == "websocket.receive":  # only queued here: answered in turn (`_answer_frames`)
            return await handler(message)
        async with self.turn:
            await handler(message)

    # Connection lifecycle

    async def __call__(self, scope, receive, send):
        """Channels' consumer loop, as one plain loop over client frames; channel-layer events
        come from the hub (`deliver`). The stock loop starts a task and an `asyncio.wait` for
        every message, a cost paid on every delivery. The tasks that answer frames and handle
        waiting events run only while there is something to do: an idle connection holds
        one task."""
        self.scope = scope
        self.base_send = send
        self.turn = asyncio.Lock()  # handlers and acknowledgement timers take turns
        self.acks: dict[int, tuple[int, str, asyncio.TimerHandle]] = {}  # message id -> (room id, frame, timer)
        self.registered: set[int] = set()  # ids whose ack went to `self.acks` and whose frame is not answered yet
        self.channel_name = f"conn.{uuid.uuid4().hex}"  # names the connection; the hub holds the layer channel
        self.subscriptions: set[str] = set()
        self.transport = transport.of(send)  # what `deliver` writes to directly, if it can
        self.inbox: collections.deque | None = None  # events that wait for this connection's turn
        self.queued = 0  # events in the inbox, and the one being handled from it
        self.draining: asyncio.Task | None = None  # handles the inbox
        self.frames: collections.deque | None = None  # client frames to answer, in order
        self.received = 0  # client frames read: the next one's number
        self.ack_seqs = {}
        self.frame_taken: asyncio.Future | None = None  # the reader waits on it while `frames` is full
        self.answering: asyncio.Task | None = None  # answers the frames
        self.failed = asyncio.get_running_loop().create_future()  # an unexpected error in those two tasks
        pumps = [asyncio.ensure_future(self._pump(receive)), self.failed]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in done:
                # The usual end, StopConsumer, is not raised here: raised, its traceback would
                # hold this frame, which holds the task that holds it, a cycle of about 50
                # objects per closed connection that only a full collection frees (one walks
                # the whole heap with the GIL held: 200 ms after 1,000 connections closed).
                if not isinstance(error := pump.exception(), StopConsumer | None):
                    raise error  # an unexpected error ends the connection, as in Channels
        except Exception:
            # The server closes the socket (1011) without a `websocket.disconnect`: leave the
            # registry, presence and groups as that would.
            await self.disconnect(protocol.CLOSE_INTERNAL)
            raise
        finally:
            pumps += [task for task in (self.draining, self.answering) if task is not None]
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, receive):
        while True:
            await self.dispatch(await receive())

    async def _drain(self):
        try:
            while self.inbox:
                event = self.inbox.popleft()
                try:
                    await self._await_reply_turn(event)
                    await self.dispatch(event)
                finally:
                    self.queued -= 1
            self.inbox = None
        except Exception as exc:
            self._fail(exc)
        finally:
            self.draining = None

    def _fail(self, exc: Exception) -> None:
        if not self.failed.done():
            self.failed.set_exception(exc)

    def deliver(self, event: dict, frame) -> None:
        """Take an event of one of this connection's groups, from the hub, in order.

        A `chat.frame` that needs nothing but a send is written at once, while nothing else
        of this connection is running or waiting; every other event waits its turn in the inbox.
        """
        if self.transport.direct and not self.queued and not self.turn.locked() and event["type"] == "chat.frame":
            action = self._classify(event)
            if action == DROP:
                return
            if action == SEND:
                self._mark(event)
                if self.transport.write_shared(frame) and event.get("message_id"):
                    metrics.MESSAGES_DELIVERED.inc()
                return
            if event.get("origin") == self.channel_name and (event.get("prev_id") or 0) <= self.rooms[event["room_id"]] \
                    and self._ack_due(event["message_id"]):
                # Its own message, with nothing missing before it: the acknowledgement goes in its place, now.
                self._mark(event)
                ack = self._take_ack(event["message_id"])
                if ack is not None and self.transport.write_text(ack):
                    metrics.MESSAGES_DELIVERED.inc()
                return
        if self.inbox is None:
            self.inbox = collections.deque()
        if len(self.inbox) >= INBOX_CAPACITY:
            metrics.LAYER_DROPS.inc()
            return
        self.inbox.append(event)
        self.queued += 1
        if self.draining is None:
            self.draining = asyncio.ensure_future(self._drain())

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
        self.rooms: dict[int, int] = {}  # room id -> mark (see the module docstring)
        self.floors: dict[int, int] = {}  # room id -> mark when subscribed
        self.slugs: dict[int, str] = {}
        self.bound_room: int | None = None
        self.flood_strikes = 0
        self.user = self.scope.get("user")
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
        for room_id, room_slug in room_ids:
            await self._group_add(room_id, room_slug)
        rooms = await db(selectors.room_summaries)(self.user)
        ids = {room_slug: room_id for room_id, room_slug in room_ids}
        for room in rooms:
            if room["slug"] in ids:
                self.rooms[ids[room["slug"]]] = self.floors[ids[room["slug"]]] = room["last_message_id"] or 0
                hub().known(events.room_group(ids[room["slug"]]), room["last_message_id"] or 0)
        # Read after subscribing: a room archived (its `chat.archived` sent) before then is not in it.
        listed = {room["slug"] for room in rooms}
        for room_id, room_slug in room_ids:
            if room_slug not in listed:
                await self._group_discard(room_id)
        self.online = True
        if await presence.backend().connect(self.user.pk, self.channel_name):
            await self._announce_presence("online")
        await self._send(protocol.hello(
            user=user_data(self.user), rooms=rooms, connection_id=self.channel_name,
            max_body=settings.CHAT_MAX_BODY, rate_per_10s=settings.CHAT_RATE_PER_10S,
        ))
        if slug is not None:
            self.bound_room = ids.get(slug)
            try:
                await self._replay(self.bound_room, slug, since=None, ref=None)
            except ChatError as exc:  # removed, or archived, since it was joined above
                code = protocol.CLOSE_ARCHIVED if isinstance(exc, Gone) else protocol.CLOSE_FORBIDDEN
                await self.close(code, exc.detail)

    def _open_session(self, slug):
        if slug is not None:
            services.room_join(user=self.user, slug=slug)
        return selectors.member_room_ids(self.user)

    async def disconnect(self, code):
        connections.discard(self)
        for _, _, timer in self.acks.values():
            timer.cancel()
        self.acks.clear()
        if self.user is None or not getattr(self.user, "is_authenticated", False) or not hasattr(self, "rooms"):
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
        """Queue a client frame; `_answer_frames` answers them in order. A `message.send` is
        handed to the writer at once, so that a client's sends in a row are written together."""
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
        seq, self.received = self.received, self.received + 1
        # Stop reading the socket until one is answered. The answerer may empty the queue, and
        # drop it (`frames` None), before this wakes up.
        while self.frames is not None and len(self.frames) >= FRAMES_IN_FLIGHT:
            self.frame_taken = asyncio.get_running_loop().create_future()
            await self.frame_taken
        if self.frames is None:
            self.frames = collections.deque()
        self.frames.append((frame, write, seq, time.perf_counter()))
        if self.answering is None:
            self.answering = asyncio.ensure_future(self._answer_frames())

    async def _answer_frames(self):
        try:
            while self.frames:
                frame, write, seq, received = self.frames.popleft()
                if self.frame_taken is not None and not self.frame_taken.done():
                    self.frame_taken.set_result(None)
                self.reached = seq
                self._progress()
                if write is not None:
                    await asyncio.wait([write])  # outside the turn: events go on being delivered meanwhile
                async with self.turn:
                    await self._answer(frame, write, received)
                if write is not None and isinstance(written := write.result(), tuple):
                    await self._ack_sent(written[0].pk)
            self.frames = None
        except Exception as exc:
            self._fail(exc)
        finally:
            self.answering = None

    async def _answer(self, frame, write: asyncio.Future | None, received: float):
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
        floor = self.floors.get(room.pk)  # already subscribed: what is above the floor came, or comes, live
        await self._group_add(room.pk, room.slug)
        await self._replay(room.pk, room.slug, since=frame.get("since"), ref=frame.ref, until=floor)

    async def on_leave(self, frame):
        room = await db(services.room_leave)(user=self.user, slug=frame.get("room"))
        await self._group_discard(room.pk)
        await self._send(protocol.reply(protocol.room_left(room.slug, "left"), frame.ref))

    def _written(self, ref: str | None, written, seq: int | None = None) -> None:
        """A new message of this connection is stored: its acknowledgement waits in `self.acks`
        from now on, before the message's event exists, so whichever comes first sends it in
        its place: the answer to the frame, the event, or a read of the messages before another.
        `seq` numbers the frame, whose reply never goes before the replies to those before it."""
        if not isinstance(written, tuple) or not written[1] or written[0].room_id not in self.rooms:
            return
        message = written[0]
        ack = events.encode(protocol.reply(protocol.message_new(message_data(message)), ref))
        timer = asyncio.get_running_loop().call_later(ACK_WAIT_S, self._ack_overdue, message.pk)
        self.acks[message.pk] = (message.room_id, ack, timer)
        self.registered.add(message.pk)
        if seq is not None:
            self.ack_seqs[message.pk] = seq

    def _ack_due(self, message_id: int) -> bool:
        """Whether the waiting ack of `message_id` may go: every frame before its own is answered.
        A client that sends frames without waiting for the replies gets them in its order."""
        return self.ack_seqs.get(message_id, -1) <= self.reached

    def _progress(self) -> None:
        if self.progressed is not None:
            if not self.progressed.done():
                self.progressed.set_result(None)
            self.progressed = None

    async def _progress_made(self) -> None:
        """Wait until the answerer reaches another frame, an ack goes, or the inbox starts to wait."""
        if self.progressed is None:
            self.progressed = asyncio.get_running_loop().create_future()
        await self.progressed

    async def _ack_sent(self, message_id: int) -> None:
        """Before the next frame is answered: this frame's ack, which waits for others' messages
        before it to be sent (row 3a of docs/guarantees.md), goes. If the inbox waits for a later
        frame meanwhile, those messages may be behind it there: read them instead."""
        while message_id in self.acks:
            if self.held is not None:
                return await self._flush_ack(message_id)
            await self._progress_made()

    async def _await_reply_turn(self, event: dict) -> None:
        """Hold the inbox at the connection's own message until its frame's turn to be answered
        (`_ack_due`), so that its ack, and every event after it, keep their order."""
        while event.get("origin") == self.channel_name and event.get("message_id") in self.acks \
                and not self._ack_due(event["message_id"]):
            self.held = self.ack_seqs[event["message_id"]]
            self._progress()
            await self._progress_made()
        self.held = None

    async def _acknowledge(self, frame, written, received: float):
        """Answer a `message.send` once written: `written` is (message, created), or the refusal."""
        if isinstance(written, Exception):
            raise written
        message, created = written
        if created:
            metrics.SEND_TO_PERSIST.observe(time.perf_counter() - received)
        self.flood_strikes = 0
        room_id = message.room_id
        if message.pk in self.registered:  # its ack waits in `self.acks`, or was sent from there
            self.registered.discard(message.pk)
            mark = self.rooms.get(room_id)
            if message.pk in self.acks and (mark is None or message.prev_id <= mark):
                if mark is not None:  # nothing before it is missing: it goes now
                    self.rooms[room_id] = max(mark, message.pk)
                await self._send_ack(message.pk)
            # else others' messages before it are still on their way here; the ack follows them
            return
        ack = events.encode(protocol.reply(protocol.message_new(message_data(message), duplicate=not created), frame.ref))
        if room_id not in self.rooms:  # a new direct room: subscribe, nothing to replay before this
            await self._group_add(room_id, message.room.slug)
            with contextlib.suppress(ChatError):  # removed since it was written: the ack is all it gets
                await self._replay(room_id, message.room.slug, since=message.pk, ref=None)
        elif message.pk > self.rooms[room_id]:
            # A duplicate's original may still be on its way here, behind others' messages:
            # its id is about to be the client's resume point, so send those first.
            await self._catch_up(room_id, message.pk, message.prev_id if created else message.pk)
        await self.send(text_data=ack)
        metrics.MESSAGES_DELIVERED.inc()

    async def on_message_edit(self, frame):
        message = await db(services.message_edit)(user=self.user, message_id=frame.get("id"), body=frame.get("body"),
                                                  origin=self.channel_name, source="websocket")
        await self._send(protocol.reply(protocol.message_updated(message_data(message)), frame.ref))

    async def on_message_delete(self, frame):
        message = await db(services.message_delete)(user=self.user, message_id=frame.get("id"), origin=self.channel_name,
                                                     source="websocket")
        await self._send(protocol.reply(protocol.message_deleted(message.room.slug, message.pk), frame.ref))

    async def on_typing(self, frame):
        room_id = self._subscribed(frame.get("room"))
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

    def _classify(self, event: dict) -> str:
        """What a `chat.frame` needs: DROP (not for this client, or sent already), CATCH_UP
        (messages before it have not come yet: read them first) or SEND. A frame this
        connection caused is its acknowledgement (`origin`), never a plain SEND."""
        if event.get("skip_user") == self.user.pk:
            return DROP
        message_id = event.get("message_id")
        if event.get("room_id") is not None and event["room_id"] not in self.rooms:
            return DROP  # a room this connection left, or was removed from, while the event was on its way
        if message_id is None:
            return DROP if event.get("origin") == self.channel_name else SEND
        mark = self.rooms.get(event["room_id"])
        if mark is None or message_id <= mark:
            return DROP
        if (event.get("prev_id") or 0) > mark:
            return CATCH_UP
        return CATCH_UP if event.get("origin") == self.channel_name else SEND

    def _mark(self, event: dict) -> None:
        if event.get("message_id") is not None:
            self.rooms[event["room_id"]] = event["message_id"]

    async def chat_frame(self, event):
        action = self._classify(event)
        if action == DROP:
            return
        if action == CATCH_UP:
            try:
                await self._catch_up(event["room_id"], event["message_id"], event.get("prev_id") or 0)
            except INFRASTRUCTURE:  # the gap cannot be read now: the client resumes it later
                return await self.close(protocol.CLOSE_SERVICE_RESTART, "service restart: reconnect and resume with since")
            if event.get("origin") == self.channel_name:
                return await self._send_ack(event["message_id"])
        self._mark(event)
        await self.send(text_data=event["text"])
        if event.get("message_id") is not None:
            metrics.MESSAGES_DELIVERED.inc()

    async def chat_subscribe(self, event):
        if event["room_id"] in self.rooms:
            return
        await self._group_add(event["room_id"], event["slug"])
        with contextlib.suppress(ChatError):  # removed again since: this event is stale
            await self._replay(event["room_id"], event["slug"], since=event["since"], ref=None)

    async def chat_unsubscribe(self, event):
        room_id = event["room_id"]
        if room_id in self.rooms:
            await self._group_discard(room_id)
            await self._send(protocol.room_left(event["slug"], event["reason"]))
        if room_id == self.bound_room and event["reason"] in ("kicked", "banned"):
            await self.close(protocol.CLOSE_FORBIDDEN, f"removed from the room ({event['reason']})")

    async def chat_close(self, event):
        if event.get("keep_session") and event["keep_session"] == self.scope.get("session_mark"):
            return
        await self.close(event["code"], event["reason"])

    async def chat_archived(self, event):
        room_id = event["room_id"]
        if room_id in self.rooms:
            await self.send(text_data=event["text"])
            await self._group_discard(room_id)
        if room_id == self.bound_room:
            await self.close(protocol.CLOSE_ARCHIVED, "the room was archived")

    # Helpers

    async def _send(self, frame: dict):
        await self.send(text_data=events.encode(frame))

    async def _join(self, group: str):
        await hub().join(group, self)
        self.subscriptions.add(group)

    async def _group_add(self, room_id: int, slug: str):
        if room_id not in self.rooms:
            self.rooms[room_id] = 0
            await self._join(events.room_group(room_id))
        self.slugs[room_id] = slug

    async def _group_discard(self, room_id: int):
        self.rooms.pop(room_id, None)
        self.floors.pop(room_id, None)
        self.slugs.pop(room_id, None)
        self.subscriptions.discard(events.room_group(room_id))
        await hub().leave([events.room_group(room_id)], self)

    def _subscribed(self, slug: str) -> int:
        for room_id, room_slug in self.slugs.items():
            if room_slug == slug:
                return room_id
        raise Forbidden(f"You have not joined '{slug}': join it first.")

    async def _replay(self, room_id: int, slug: str, *, since: int | None, ref: str | None, until: int | None = None):
        """Send `room.joined`, then every message after `since` (newest CHAT_REPLAY_LIMIT, after a `room.gap`).

        Must run after `_group_add` so that nothing committed after the read is missed.
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
            await self._group_discard(room_id)
            raise
        online = await presence.backend().online(members)
        await self._send(protocol.reply(protocol.room_joined(slug, sorted(members[uid] for uid in online), last_id), ref))
        await self._send_messages(slug, messages, gap_after=since if gap else None)
        if until is None:
            self.rooms[room_id] = self.floors[room_id] = max(self.rooms.get(room_id, 0), last_id or 0)
            hub().known(events.room_group(room_id), self.rooms[room_id])

    async def _catch_up(self, room_id: int, message_id: int, prev_id: int) -> bool:
        """Move the room's mark to `message_id`, first sending the messages between the mark
        and it that have not come live yet. False if `message_id` was sent already."""
        mark = self.rooms[room_id]
        if message_id <= mark:
            return False
        if prev_id > mark:
            messages, gap = await db(reads.between)(room_id, mark, message_id)
            metrics.LAYER_GAPS.inc(len(messages))
            await self._send_messages(self.slugs[room_id], messages, gap_after=mark if gap else None)
        self.rooms[room_id] = message_id
        return True

    async def _send_messages(self, slug: str, messages: list[dict], gap_after: int | None):
        """Send `message.new` frames (after a `room.gap` when older ones were left out)."""
        if gap_after is not None and messages:
            await self._send(protocol.room_gap(slug, gap_after, messages[0]["id"]))
        for message in messages:
            if message["id"] in self.acks and self._ack_due(message["id"]):
                await self._send_ack(message["id"])
            else:
                await self._send(protocol.message_new(message))
                metrics.MESSAGES_DELIVERED.inc()
            # Let daphne write between frames: a burst sent in one go waits whole in its buffer
            # and trips CHAT_MAX_SEND_BUFFER, dropping the client on every attempt to resume.
            await asyncio.sleep(0)

    async def _send_ack(self, message_id: int | None):
        """Send a waiting acknowledgement, now that every message before it has been sent."""
        ack = self._take_ack(message_id)
        if ack is not None:
            await self.send(text_data=ack)
            metrics.MESSAGES_DELIVERED.inc()

    def _take_ack(self, message_id: int | None) -> str | None:
        """The waiting acknowledgement of `message_id` (its timer stopped), or None."""
        pending = self.acks.pop(message_id, None)
        if pending is None:
            return None
        pending[2].cancel()
        if message_id in self.ack_seqs:
            del self.ack_seqs[message_id]
        self._progress()
        return pending[1]

    def _ack_overdue(self, message_id: int):
        asyncio.ensure_future(self._flush_ack(message_id))

    async def _flush_ack(self, message_id: int):
        """The connection's own event has not come back: read what precedes the message instead."""
        async with self.turn:
            if message_id not in self.acks:
                return
            room_id, ack, _ = self.acks[message_id]
            if not self._ack_due(message_id):  # the answer to its frame is not due yet: wait on
                self.acks[message_id] = (room_id, ack, asyncio.get_running_loop().call_later(
                    ACK_WAIT_S, self._ack_overdue, message_id))
                return
            try:
                if room_id in self.rooms and message_id > self.rooms[room_id]:
                    await self._catch_up(room_id, message_id, message_id)
            except INFRASTRUCTURE:
                return await self.close(protocol.CLOSE_SERVICE_RESTART, "service restart: reconnect and resume with since")
            await self._send_ack(message_id)

    async def _announce_presence(self, status: str):
        await presence.announce(self.user.pk, status, user=user_data(self.user), rooms=list(self.slugs.items()))
