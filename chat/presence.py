"""Who is online: a user is online while at least one of their connections is open, on any process.

With REDIS_URL set, each user has a sorted set `<REDIS_PREFIX>:presence:<user_id>` of connection ids
scored by expiry time. Every process refreshes its own connections each heartbeat, so the
entries of a crashed process expire within `ttl()` seconds. Without Redis, a dict in this
process holds the same. `connect`/`disconnect` report the first open and the last close
atomically (a Redis MULTI), so two processes never both announce the same transition.
"""
import asyncio
import logging
import time
import weakref

from django.conf import settings

logger = logging.getLogger(__name__)


def presence_key(user_id: int) -> str:
    return f"{settings.REDIS_PREFIX}:presence:{user_id}"


def ttl() -> int:
    """Seconds after which a connection that stopped being refreshed counts as gone."""
    return 3 * settings.CHAT_HEARTBEAT_S


class LocalPresence:
    """One process only: the in-memory channel layer cannot span processes anyway."""

    def __init__(self):
        self.conns: dict[int, set[str]] = {}

    async def connect(self, user_id: int, conn_id: str) -> bool:
        conns = self.conns.setdefault(user_id, set())
        conns.add(conn_id)
        return len(conns) == 1

    async def disconnect(self, user_id: int, conn_id: str) -> bool:
        conns = self.conns.get(user_id, set())
        if conn_id not in conns:
            return False
        conns.discard(conn_id)
        if not conns:
            del self.conns[user_id]
            return True
        return False

    async def count(self, user_id: int) -> int:
        return len(self.conns.get(user_id, ()))

    async def online(self, user_ids) -> set[int]:
        return self.online_sync(user_ids)

    def online_sync(self, user_ids) -> set[int]:
        return {uid for uid in user_ids if self.conns.get(uid)}


class RedisPresence:
    def __init__(self, url: str):
        self.url = url
        self.local: dict[str, int] = {}  # this process's connections: conn_id -> user_id
        self._clients = weakref.WeakKeyDictionary()  # event loop -> asyncio client
        self._sync_client = None
        self._refresher: asyncio.Task | None = None

    def _client(self):
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = redis.asyncio.Redis.from_url(self.url)
        return client

    async def connect(self, user_id: int, conn_id: str) -> bool:
        self.local[conn_id] = user_id
        self._ensure_refresher()
        now = time.time()
        async with self._client().pipeline(transaction=True) as pipe:
            key = presence_key(user_id)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {conn_id: now + ttl()})
            pipe.zcard(key)
            pipe.expire(key, ttl())
            _, _, count, _ = await pipe.execute()
        return count == 1

    async def disconnect(self, user_id: int, conn_id: str) -> bool:
        if self.local.pop(conn_id, None) is None:
            return False
        now = time.time()
        async with self._client().pipeline(transaction=True) as pipe:
            key = presence_key(user_id)
            pipe.zrem(key, conn_id)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zcard(key)
            removed, _, count = await pipe.execute()
        return bool(removed) and count == 0

    async def count(self, user_id: int) -> int:
        return await self._client().zcount(presence_key(user_id), time.time(), "+inf")

    async def online(self, user_ids) -> set[int]:
        user_ids = list(user_ids)
        if not user_ids:
            return set()
        now = time.time()
        async with self._client().pipeline(transaction=False) as pipe:
            for uid in user_ids:
                pipe.zcount(presence_key(uid), now, "+inf")
            counts = await pipe.execute()
        return {uid for uid, n in zip(user_ids, counts) if n}

    def online_sync(self, user_ids) -> set[int]:
        import redis

        user_ids = list(user_ids)
        if not user_ids:
            return set()
        if self._sync_client is None:
            self._sync_client = redis.Redis.from_url(self.url)
        now = time.time()
        with self._sync_client.pipeline(transaction=False) as pipe:
            for uid in user_ids:
                pipe.zcount(presence_key(uid), now, "+inf")
            counts = pipe.execute()
        return {uid for uid, n in zip(user_ids, counts) if n}

    def _ensure_refresher(self):
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self):
        """Push this process's connections' expiry forward, one pipeline per heartbeat."""
        while self.local:
            await asyncio.sleep(settings.CHAT_HEARTBEAT_S)
            expiry = time.time() + ttl()
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for conn_id, user_id in list(self.local.items()):
                        key = presence_key(user_id)
                        pipe.zadd(key, {conn_id: expiry})
                        pipe.expire(key, ttl())
                    await pipe.execute()
            except Exception:  # Redis away: retry next beat; entries outlive one miss (ttl = 3 beats)
                logger.warning("presence refresh failed", exc_info=True)


_backend = None


def backend():
    global _backend
    if _backend is None:
        _backend = RedisPresence(settings.REDIS_URL) if settings.REDIS_URL else LocalPresence()
    return _backend


def online_user_ids(user_ids) -> set[int]:
    """From synchronous code (REST views): which of `user_ids` are online now."""
    return backend().online_sync(user_ids)
