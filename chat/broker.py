"""This process's Redis clients (when REDIS_URL is set): one asyncio client per event loop, one sync client.

The channel layer keeps its own connections; these serve presence and the layer watchdog,
which also needs a client for each further Redis the layer uses (REDIS_URLS shards or
Sentinel-managed masters, see settings).
"""

import asyncio
import weakref

import redis
import redis.asyncio
from channels_redis.utils import create_pool
from django.conf import settings

# Errors that mean "Redis is unreachable right now", as opposed to a bug.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, TimeoutError)

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis]" = (
    weakref.WeakKeyDictionary()
)
_sync_client: redis.Redis | None = None
_layer_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[redis.asyncio.Redis]]" = (
    weakref.WeakKeyDictionary()
)


def async_client() -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A blocking pool waits for a free connection, where the default pool raises at its
        # size: a burst of connects (a reconnect storm after a restart) would fail with 1013.
        # Its calls are short, so a small pool serves a burst (see REDIS_POOL_SIZE).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_POOL_SIZE,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
        )
        client = _async_clients[loop] = redis.asyncio.Redis(connection_pool=pool)
    return client


def sync_client() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    return _sync_client


def layer_clients() -> list[redis.asyncio.Redis]:
    """Clients for the channel layer's Redis servers other than REDIS_URL's, in settings order.

    Empty unless the layer is sharded or behind Sentinel: by default the layer is on REDIS_URL.
    """
    loop = asyncio.get_running_loop()
    clients = _layer_clients.get(loop)
    if clients is None:
        timeouts = {"socket_connect_timeout": 2, "socket_timeout": 5}
        clients = _layer_clients[loop] = [
            redis.asyncio.Redis(
                connection_pool=create_pool(
                    {**timeouts, **host, "sentinel_kwargs": timeouts} if "sentinels" in host else {**timeouts, **host}
                )
            )
            for host in settings.CHAT_LAYER_HOSTS
            if host.get("address") != settings.REDIS_URL
        ]
    return clients
