"""Redis, read from the environment: the channel layer's servers (one, shards, or Sentinel
masters), the process's own client, the key prefix, and the cache. Without REDIS_URL: the
in-memory layer and cache, for one process. Imported by settings.py."""

import os
import warnings

from django.core.exceptions import ImproperlyConfigured

from chatproject.env import env_int, env_list

# The channel layer may spread its groups over several Redis servers: REDIS_URLS lists the
# shards (every process must list the same ones in the same order, since a group's shard is a
# hash of its name modulo their number), or REDIS_SENTINEL_MASTERS names masters that the
# Sentinels at REDIS_SENTINELS find, one shard each. Presence, rate limits, the cache and
# the watchdog's own client stay on REDIS_URL, which defaults to the first shard.
REDIS_URLS = env_list("REDIS_URLS", "")
REDIS_SENTINELS = [
    (host, int(port)) for host, _, port in (item.rpartition(":") for item in env_list("REDIS_SENTINELS", ""))
]
REDIS_SENTINEL_MASTERS = env_list("REDIS_SENTINEL_MASTERS", "")
REDIS_URL = os.environ.get("REDIS_URL", "") or (REDIS_URLS[0] if REDIS_URLS else "")
if REDIS_SENTINEL_MASTERS:
    if not REDIS_SENTINELS or REDIS_URLS:
        raise ImproperlyConfigured(
            "REDIS_SENTINEL_MASTERS needs REDIS_SENTINELS (host:port,...) and excludes REDIS_URLS."
        )
    if not REDIS_URL:
        raise ImproperlyConfigured(
            "REDIS_SENTINEL_MASTERS sets the channel layer only: set REDIS_URL too, for "
            "presence, rate limits and the cache (see docs/deployment.md)."
        )
    CHAT_LAYER_HOSTS = [
        {"master_name": name, "sentinels": REDIS_SENTINELS, "db": env_int("REDIS_SENTINEL_DB", 0)}
        for name in REDIS_SENTINEL_MASTERS
    ]
else:
    CHAT_LAYER_HOSTS = [{"address": url} for url in REDIS_URLS or [REDIS_URL] if url]
# redis-py's asyncio pools refuse a connection beyond `max_connections` (100 by default)
# instead of waiting: a burst of publishes or connects must not reach that.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 1000)
for _host in CHAT_LAYER_HOSTS:
    _host["max_connections"] = REDIS_MAX_CONNECTIONS
# The process's own client (presence, the layer watchdog) makes short calls only, and waits
# for a free connection beyond this many. Its pool never closes a connection it opened: sized
# by the peak of a burst, it would keep a thousand idle sockets (and their 60,000 objects for
# every full garbage collection to walk) after a thousand clients connected at once.
REDIS_POOL_SIZE = env_int("REDIS_POOL_SIZE", 32)
# Namespaces this deployment's channel-layer, cache and presence keys: Redis pub/sub channels
# ignore the database number, so two deployments on one Redis need different prefixes.
# Letters, digits, hyphens: it starts channel names. A test run gets its own, so that runs
# sharing a Redis (pub/sub ignores database numbers) never see each other's events.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX") or (
    f"chattest{os.getpid()}" if os.environ.get("PYTEST_VERSION") else "chat"
)
CHAT_CHANNEL_LAYER = os.environ.get("CHAT_CHANNEL_LAYER", "pubsub")
if REDIS_URL:
    # The pub/sub layer publishes once per group instead of once per member, and never
    # drops on "over capacity"; messages missed while Redis is away are recovered with
    # `join since`, because history is persisted before it is published.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"
            if CHAT_CHANNEL_LAYER == "pubsub"
            else "channels_redis.core.RedisChannelLayer",
            # Each process receives every event of its connections on one channel (chat.realtime.hub):
            # RedisChannelLayer's default capacity of 100 would drop events in a burst.
            "CONFIG": {"hosts": CHAT_LAYER_HOSTS, "prefix": f"{REDIS_PREFIX}.", "capacity": 10000},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
        }
    }
else:
    # The default capacity (100 per channel) drops events for a client that falls behind a burst.
    CHANNEL_LAYERS = {"default": {"BACKEND": "chat.realtime.layers.LocalChannelLayer", "CONFIG": {"capacity": 10000}}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    if not os.environ.get("PYTEST_VERSION"):
        warnings.warn(
            "REDIS_URL is not set: using the in-memory channel layer and in-process presence. "
            "Only one server process can serve; set REDIS_URL to run several.",
            RuntimeWarning,
            stacklevel=1,
        )
