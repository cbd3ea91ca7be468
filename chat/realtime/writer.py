"""The batch writer: the `message.send` frames of every connection of this process, written in batches.

While one batch is on the database thread, the sends that arrive meanwhile gather and go next,
as one `services.message_send_batch` call: one room lock, insert and commit per room for all of
them. An idle server writes each send at once, alone.
"""

import asyncio
import weakref
from collections.abc import Callable

from chat import events, markup, services

# Sends per database call: a batch is one INSERT, whose parameters both databases cap (SQLite
# at 32,766); and a bounded batch keeps the sends behind it waiting a bounded time.
MAX_BATCH = 500


class _Sends:
    def __init__(self):
        self.waiting: list[tuple[dict, asyncio.Future, Callable]] = []  # (request, result, written)
        self.writer: asyncio.Task | None = None

    def submit(self, request: dict, written) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        markup.parse_ahead(request.get("body"))
        self.waiting.append((request, future, written))
        if self.writer is None:
            self.writer = asyncio.ensure_future(self._write())
        return future

    async def _write(self):
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]

                def settle(results):
                    for (_, future, written), result in zip(batch, results):  # noqa: B023 (called before the loop moves on)
                        if not future.done():  # its connection may have gone
                            try:
                                written(result)
                            except Exception as exc:  # that send fails alone, not the rest of the batch
                                result = exc
                            future.set_result(result)

                try:
                    await events.run_sync(services.message_send_batch, then=settle)([item[0] for item in batch])
                except Exception as exc:  # the database or the thread failed: every send in the batch
                    settle([exc] * len(batch))
        finally:
            self.writer = None


_sends_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sends]" = weakref.WeakKeyDictionary()


def _sends() -> _Sends:
    loop = asyncio.get_running_loop()
    if loop not in _sends_by_loop:
        _sends_by_loop[loop] = _Sends()
    return _sends_by_loop[loop]


def submit(request: dict, written: Callable) -> asyncio.Future:
    """Queue a send (the keyword arguments of one `message_send_batch` request) for the next batch.
    The future's result is (message, created), or the exception that refused the send;
    `written(result)` is called with it first, before the batch's events are published."""
    return _sends().submit(request, written)
