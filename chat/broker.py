"""This process's Redis clients (when REDIS_URL is set): one asyncio client per event loop, one sync client.

The channel layer keeps its own connections; these serve presence and the layer watchdog.
"""
import asyncio
import weakref

import redis
import redis.asyncio
from django.conf import settings

# Errors that mean "Redis is unreachable right now", as opposed to a bug.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, TimeoutError)

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis]" = weakref.WeakKeyDictionary()
_sync_client: redis.Redis | None = None


def async_client() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5
        )
    return client


def sync_client() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    return _sync_client
