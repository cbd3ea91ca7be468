"""The channel layer of a single process without Redis (the embedded defaults)."""

import asyncio
import time

from channels.layers import InMemoryChannelLayer

from chat import metrics


class LocalChannelLayer(InMemoryChannelLayer):
    """Channels' in-memory layer with a fan-out that costs O(members) per `group_send`.

    The stock layer deep-copies the event and starts a task for every member, and before
    every `receive` and `group_send` scans every channel and group for expired entries:
    work in proportion to all connections, for each delivery. Chat events are never
    changed once published, so members share one copy, and the scan runs once a second,
    from `group_send`.
    An event for a member whose queue is full is counted in `chat_layer_drops`; the
    member's connection reads it from the database when the room's next message arrives.
    """

    _cleaned_at = 0.0

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._cleaned_at >= 1:
            self._cleaned_at = now
            super()._clean_expired()

    async def receive(self, channel):
        # The stock receive validates the name and drops the queue whenever it runs empty,
        # so a consumer that keeps up builds a new queue for every event.
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            return (await queue.get())[1]
        except asyncio.CancelledError:  # the consumer is gone
            if queue.empty():
                self.channels.pop(channel, None)
            raise

    async def group_send(self, group, message):
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        item = (time.time() + self.expiry, message)
        for channel in list(self.groups.get(group, ())):
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                metrics.LAYER_DROPS.inc()
