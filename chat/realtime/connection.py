"""Connection: a WebSocket consumer that answers its client's frames in order and takes its
events in turn, one at a time.

Channels' own loop starts a task and an `asyncio.wait` for every message, a cost paid on every
delivery. Here client frames come through one plain loop and are answered in order by one task
(`_answer_frames`); events come from the process's hub (`deliver`) and, unless they can be
written at once, wait in an inbox handled by another (`_drain`). Those two run only while there
is something to do: an idle connection holds one task. Handlers and timers take turns (`turn`).
`ChatConsumer` fills in what a frame and an event mean.
"""

import asyncio
import collections
import time

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import metrics, protocol

from . import transport

# Events waiting while the connection is busy (a handler or a database read); beyond it they are
# dropped and counted (chat_layer_drops), and the room's next message brings the gap back.
INBOX_CAPACITY = 10_000
# Client frames read and not yet answered; beyond it the connection stops reading its socket.
FRAMES_IN_FLIGHT = 64


class Connection(AsyncWebsocketConsumer):
    transport = transport.PLAIN  # how frames reach the socket; set per connection in `__call__`
    progressed: asyncio.Future | None = None  # set when a frame's turn comes, an ack goes or the inbox waits

    async def dispatch(self, message):
        # Channels closes stale database connections before every handler, through a hop to
        # the database thread: one per delivered event, all queued behind message writes.
        # Every database access here goes through `database_sync_to_async`, which does that
        # itself on the thread, so the delivery path stays on the event loop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if message["type"] == "websocket.receive":  # only queued here: answered in turn (`_answer_frames`)
            return await handler(message)
        async with self.turn:
            await handler(message)

    async def __call__(self, scope, receive, send):
        self.scope = scope
        self.base_send = send
        self.transport = transport.of(send)
        self.turn = asyncio.Lock()  # handlers and timers take turns
        self.inbox: collections.deque | None = None  # events that wait for this connection's turn
        self.queued = 0  # events in the inbox, and the one being handled from it
        self.draining: asyncio.Task | None = None  # handles the inbox
        self.frames: collections.deque | None = None  # client frames to answer, in order
        self.received = 0  # client frames read: the next one's number
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

    def _fail(self, exc: Exception) -> None:
        if not self.failed.done():
            self.failed.set_exception(exc)

    # Events

    def wait_in_turn(self, event: dict) -> None:
        """Queue an event behind everything else of this connection."""
        if self.inbox is None:
            self.inbox = collections.deque()
        if len(self.inbox) >= INBOX_CAPACITY:
            metrics.LAYER_DROPS.inc()
            return
        self.inbox.append(event)
        self.queued += 1
        if self.draining is None:
            self.draining = asyncio.ensure_future(self._drain())

    async def _drain(self):
        try:
            while self.inbox:
                event = self.inbox.popleft()
                try:
                    await self.event_turn(event)
                    await self.dispatch(event)
                finally:
                    self.queued -= 1
            self.inbox = None
        except Exception as exc:
            self._fail(exc)
        finally:
            self.draining = None

    async def event_turn(self, event: dict) -> None:
        """Return when `event` may be handled (at once, unless a subclass holds it)."""

    # Client frames

    async def queue_frame(self, frame, write: asyncio.Future | None) -> None:
        """Queue a client frame (numbered `self.received`) for its answer, in order; `write` is
        what was started for it at once. Stops reading while FRAMES_IN_FLIGHT wait."""
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
                self.frame_turn(seq)
                self.progress()
                if write is not None:
                    await asyncio.wait([write])  # outside the turn: events go on being delivered meanwhile
                async with self.turn:
                    await self.answer(frame, write, received)
                if write is not None:
                    await self.after_answer(write.result())
            self.frames = None
        except Exception as exc:
            self._fail(exc)
        finally:
            self.answering = None

    def frame_turn(self, seq: int) -> None:
        """The frame numbered `seq` is about to be answered."""

    async def answer(self, frame, write: asyncio.Future | None, received: float) -> None:
        raise NotImplementedError

    async def after_answer(self, written) -> None:
        """After a frame with a write is answered, before the next one, outside the turn."""

    # Progress: what waits for the answerer or the inbox to move on

    def progress(self) -> None:
        if self.progressed is not None:
            if not self.progressed.done():
                self.progressed.set_result(None)
            self.progressed = None

    async def progress_made(self) -> None:
        """Wait until the answerer reaches another frame, an ack goes, or the inbox starts to wait."""
        if self.progressed is None:
            self.progressed = asyncio.get_running_loop().create_future()
        await self.progressed
