"""The WebSocket consumer: a thin adapter from frames to services, and from events to frames.

One connection multiplexes every room its user belongs to. It never touches the ORM:
reads go through `chat.selectors`, writes through `chat.services`, each in one
`events.run_sync` call (the database thread; the events a write publishes are sent from
the event loop once it returns); a `message.send` goes to the batch writer (`writer`).
What is sent, and in which order, is `Delivery`'s (chat/realtime/delivery.py) and its
`RoomStream`'s; when a frame is answered, `Connection`'s (chat/realtime/connection.py).

Admission: the user's group is joined before the memberships are read, and each room's
subscription is followed by a read that checks the membership (`_replay`; at connect,
`room_summaries`): a removal before that read leaves nothing subscribed, one after it
arrives as an event and unsubscribes.
"""

import asyncio
import contextlib
import functools
import logging
import time
import uuid

from django.conf import settings
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.utils import translation

from chat import events, protocol, selectors, services
from chat.errors import INFRASTRUCTURE, RETRY_AFTER_S, ChatError, Gone, NotFound, RateLimited
from chat.protocol import FrameError
from chat.serializers import user_data

from . import connections, presence, writer
from .delivery import Delivery, db
from .hub import hub
from .stream import RoomStream

logger = logging.getLogger(__name__)

# Frames whose writes have a budget besides `message.send`: one accepted ends a run of `rate_limited`
# errors (CHAT_FLOOD_CLOSE_AFTER), as an accepted send does.
BUDGETED = {"join", "leave", "message.edit", "message.delete", "reaction.add", "reaction.remove"}

_last_typing: dict[tuple[int, int], float] = {}  # (user_id, room_id) -> monotonic time


def handshake_language(scope) -> str:
    """The connection's language, chosen as LocaleMiddleware chooses a page's: the `django_language`
    cookie (the switcher's), else the handshake's Accept-Language, else LANGUAGE_CODE."""
    headers = dict(scope.get("headers", []))
    request = HttpRequest()
    request.COOKIES = parse_cookie(headers.get(b"cookie", b"").decode("latin-1"))
    request.META["HTTP_ACCEPT_LANGUAGE"] = headers.get(b"accept-language", b"").decode("latin-1")
    return translation.get_language_from_request(request)


class ChatConsumer(Delivery):
    online = False
    language = settings.LANGUAGE_CODE

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
        self.language = handshake_language(self.scope)
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
            return await self.close(
                protocol.CLOSE_NO_ROOM, "no such room: slugs are 1-50 lowercase letters, digits or hyphens"
            )
        # The user's group first: a removal committed after the memberships are read below
        # reaches this connection as `chat.unsubscribe`, handled once this is done.
        await self._join(events.user_group(self.user.pk))
        await self._join(events.everyone_group())
        try:
            room_ids = await db(self._open_session)(slug)
        except ChatError as exc:
            # Over the join budget is no refusal of the room: the client reconnects later and joins then.
            code = {
                Gone: protocol.CLOSE_ARCHIVED,
                NotFound: protocol.CLOSE_NO_ROOM,
                RateLimited: protocol.CLOSE_TRY_AGAIN,
            }.get(type(exc), protocol.CLOSE_FORBIDDEN)
            return await self.close(code, exc.reason)
        rooms = await self._subscribe_all(room_ids)
        self.online = True
        if await presence.backend().connect(self.user.pk, self.channel_name):
            await self._announce_presence("online")
        await self._send(
            protocol.hello(
                user=user_data(self.user),
                rooms=[{key: value for key, value in room.items() if key != "seq"} for room in rooms],
                connection_id=self.channel_name,
                max_body=settings.CHAT_MAX_BODY,
                rate_per_10s=settings.CHAT_RATE_PER_10S,
            )
        )
        if slug is not None:
            self.bound_room = next((room_id for room_id, room_slug in room_ids if room_slug == slug), None)
            try:
                await self._replay(self.bound_room, slug, since=None, ref=None)
            except ChatError as exc:  # removed, or archived, since it was joined above
                code = protocol.CLOSE_ARCHIVED if isinstance(exc, Gone) else protocol.CLOSE_FORBIDDEN
                await self.close(code, exc.reason)

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
                self.stream.opened(ids[room["slug"]], room["last_message_id"], room["seq"])
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
            return await self.close(
                protocol.CLOSE_TOO_BIG, protocol.frame_too_big_reason(settings.CHAT_MAX_FRAME_BYTES)
            )
        write = None
        try:
            frame = protocol.parse_client_frame(text_data)
        except FrameError as exc:
            frame = exc
        else:
            if frame.type == "message.send":
                write = writer.submit(
                    dict(
                        user=self.user,
                        slug=frame.get("room"),
                        to=frame.get("to"),
                        body=frame.get("body"),
                        client_id=frame.get("client_id", ""),
                        reply_to=frame.get("reply_to"),
                        attachments=frame.get("attachments"),
                        origin=self.channel_name,
                    ),
                    functools.partial(self._written, frame.ref, seq=self.received),
                )
        await self.queue_frame(frame, write)

    async def answer(self, frame, write: asyncio.Future | None, received: float):
        # Errors are rendered here (`detail` is lazy), in the handshake's language.
        with translation.override(self.language):
            await self._answer(frame, write, received)

    async def _answer(self, frame, write: asyncio.Future | None, received: float):
        ref = getattr(frame, "ref", None)
        try:
            if isinstance(frame, FrameError):
                raise frame
            if write is not None:
                await self._acknowledge(frame, write.result(), received)
                self.flood_strikes = 0
            else:
                await getattr(self, "on_" + frame.type.replace(".", "_"))(frame)
                if frame.type in BUDGETED:
                    self.flood_strikes = 0
        except FrameError as exc:
            # One line, no traceback: a client's malformed or hostile input is not a server fault.
            logger.info("refused a frame from %s: %s %r", self.user, exc.code, exc.reason[:200])
            await self._send(protocol.error(exc.code, exc.detail, exc.ref))
        except INFRASTRUCTURE:
            logger.warning("frame failed: database or Redis unavailable", exc_info=True)
            detail = translation.gettext(
                "The server cannot reach its database or Redis right now; nothing was changed: retry."
            )
            await self._send(protocol.error(protocol.UNAVAILABLE, detail, ref, RETRY_AFTER_S))
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
        # Already subscribed: what is above the floors came, or comes, live.
        floors = self.stream.floors.get(room.pk), self.stream.change_floors.get(room.pk)
        await self._subscribe(room.pk, room.slug)
        await self._replay(
            room.pk,
            room.slug,
            since=frame.get("since"),
            changes_since=frame.get("changes_since"),
            ref=frame.ref,
            until=floors,
        )

    async def on_leave(self, frame):
        room = await db(services.room_leave)(user=self.user, slug=frame.get("room"))
        await self._unsubscribe(room.pk)
        await self._send(protocol.reply(protocol.room_left(room.slug, "left"), frame.ref))

    async def on_message_edit(self, frame):
        message = await db(services.message_edit)(
            user=self.user,
            message_id=frame.get("id"),
            body=frame.get("body"),
            origin=self.channel_name,
            source="websocket",
        )
        await self._send_change(message, frame.ref)

    async def on_message_delete(self, frame):
        message = await db(services.message_delete)(
            user=self.user, message_id=frame.get("id"), origin=self.channel_name, source="websocket"
        )
        await self._send(protocol.reply(protocol.message_deleted(message.room.slug, message.pk), frame.ref))

    async def on_reaction_add(self, frame):
        await self._react(services.reaction_add, frame)

    async def on_reaction_remove(self, frame):
        await self._react(services.reaction_remove, frame)

    async def _react(self, service, frame):
        message = await db(service)(
            user=self.user,
            message_id=frame.get("id"),
            emoji=frame.get("emoji"),
            origin=self.channel_name,
            source="websocket",
        )
        await self._send_change(message, frame.ref)

    async def on_typing(self, frame):
        room_id = self.stream.room_id(frame.get("room"))
        now = time.monotonic()
        key = (self.user.pk, room_id)
        if now - _last_typing.get(key, 0) < settings.CHAT_TYPING_INTERVAL_S:
            return
        _last_typing[key] = now
        event = events.frame_event(
            protocol.typing(frame.get("room"), user_data(self.user)), room_id=room_id, skip_user=self.user.pk
        )
        await events.send_async(events.room_group(room_id), event)

    async def on_read(self, frame):
        membership = await db(services.read_mark)(
            user=self.user, slug=frame.get("room"), message_id=frame.get("message_id"), origin=self.channel_name
        )
        count, mentions = await db(selectors.unread_counts)(membership)
        unread = protocol.unread(frame.get("room"), count, membership.last_read_id, mentions)
        await self._send(protocol.reply(unread, frame.ref))

    async def on_ping(self, frame):
        await self._send(protocol.reply(protocol.pong(), frame.ref))

    # Channel-layer events (`chat_frame`: see Delivery)

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

    async def _announce_presence(self, status: str):
        await presence.announce(self.user.pk, status, user=user_data(self.user), rooms=list(self.stream.slugs.items()))
