"""This process's open WebSocket connections, and the watchdog over the channel layer.

A channel layer delivers at most once: while this process's Redis subscription is broken,
events published for its sockets are lost for good. They are in the database, but a client
cannot tell that it missed them. So when the watchdog finds Redis unreachable, or restarted
(its `run_id` changed, which drops every subscription and group), it closes every local
socket with 1012; clients reconnect and resume each room with `join since`.
"""

import asyncio
import logging

from django.conf import settings

from chat import broker, metrics, protocol

logger = logging.getLogger(__name__)

_open: set = set()  # consumers with an accepted, counted connection
_watchdog: asyncio.Task | None = None
_run_id: str | None = None


def count() -> int:
    return len(_open)


def count_direct() -> int:
    """Open connections whose transport writes at once (see chat/realtime/transport.py)."""
    return sum(1 for consumer in _open if consumer.transport.direct)


metrics.OPEN_CONNECTIONS.set_function(count)
metrics.DIRECT_CONNECTIONS.set_function(count_direct)


def add(consumer) -> None:
    _open.add(consumer)
    if settings.REDIS_URL:
        _ensure_watchdog()


def discard(consumer) -> None:
    _open.discard(consumer)


async def close_all(code: int, reason: str) -> int:
    """Close every local socket; returns how many."""
    closing = list(_open)
    _open.clear()
    for consumer in closing:
        await consumer.close(code, reason)
    return len(closing)


def _ensure_watchdog() -> None:
    global _watchdog
    if _watchdog is None or _watchdog.done():
        _watchdog = asyncio.get_running_loop().create_task(_watch())


async def check_layer() -> bool:
    """True if Redis answers with the same run_id as last time (or for the first time).

    With a sharded layer every shard must: one restarted shard drops the subscriptions of
    every group that hashes to it. `_run_id` then joins the run_ids of REDIS_URL and the shards.
    """
    global _run_id
    try:
        run_id = ",".join(
            [(await client.info("server"))["run_id"] for client in (broker.async_client(), *broker.layer_clients())]
        )
    except broker.UNAVAILABLE:
        return False
    previous, _run_id = _run_id, run_id
    return previous is None or previous == run_id


async def _watch() -> None:
    while _open:
        if not await check_layer():
            closed = await close_all(protocol.CLOSE_SERVICE_RESTART, "service restart: reconnect and resume with since")
            metrics.LAYER_RESETS.inc()
            logger.warning("Redis was unreachable or restarted: closed %d sockets for them to resume", closed)
        await asyncio.sleep(settings.CHAT_LAYER_CHECK_S)
