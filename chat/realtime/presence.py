"""Who is online: a user is online while at least one of their connections is open, on any process.

With REDIS_URL set, each user has a sorted set `<prefix>:presence:<user_id>` of connection
ids scored by expiry time, and `<prefix>:presence:users` scores each user by their latest
expiry. Every process refreshes its own connections each heartbeat (CHAT_HEARTBEAT_S), so
the entries of a process that died expire `ttl()` seconds (3 beats) after its last refresh.
Each beat every process also sweeps users whose entries all expired and announces them
offline; a script makes the sweep atomic, so exactly one process announces each. A dead
process's users are therefore announced offline within 4 beats.

`connect`/`disconnect` report the first open and the last close atomically, so two
processes never both announce the same transition. Without Redis, a dict in this process
holds the same (the in-memory channel layer cannot span processes anyway).
"""

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from django.conf import settings

from chat import broker, events, protocol, selectors

logger = logging.getLogger(__name__)


def ttl() -> int:
    """Seconds after which a connection that stopped being refreshed counts as gone."""
    return 3 * settings.CHAT_HEARTBEAT_S


def presence_key(user_id) -> str:
    return f"{settings.REDIS_PREFIX}:presence:{user_id}"


def users_key() -> str:
    return f"{settings.REDIS_PREFIX}:presence:users"


class LocalPresence:
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


# KEYS: the user's connection set, the users set. ARGV: connection id (or ""), now, user id.
# Removes the connection and expired ones; when none is left, drops the user from the users
# set and returns 1 (this caller announces "offline"), else refreshes the user's score.
_LEAVE = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 then
  return redis.call('ZREM', KEYS[2], ARGV[3])
end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[2], newest[2], ARGV[3])
return 0
"""


class RedisPresence:
    def __init__(self):
        self.local: dict[str, int] = {}  # this process's connections: conn_id -> user_id
        self._refresher: asyncio.Task | None = None

    def _leave(self, client):
        return client.register_script(_LEAVE)

    async def connect(self, user_id: int, conn_id: str) -> bool:
        self.local[conn_id] = user_id
        self._ensure_refresher()
        now = time.time()
        async with broker.async_client().pipeline(transaction=True) as pipe:
            key = presence_key(user_id)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {conn_id: now + ttl()})
            pipe.zcard(key)
            pipe.expire(key, ttl())
            pipe.zadd(users_key(), {str(user_id): now + ttl()}, gt=True)
            _, _, count, _, _ = await pipe.execute()
        return count == 1

    async def disconnect(self, user_id: int, conn_id: str) -> bool:
        if self.local.pop(conn_id, None) is None:
            return False
        client = broker.async_client()
        last = await self._leave(client)(
            keys=[presence_key(user_id), users_key()], args=[conn_id, time.time(), str(user_id)]
        )
        return bool(last)

    async def count(self, user_id: int) -> int:
        return await broker.async_client().zcount(presence_key(user_id), time.time(), "+inf")

    async def online(self, user_ids) -> set[int]:
        user_ids = list(user_ids)
        if not user_ids:
            return set()
        now = time.time()
        async with broker.async_client().pipeline(transaction=False) as pipe:
            for uid in user_ids:
                pipe.zcount(presence_key(uid), now, "+inf")
            counts = await pipe.execute()
        return {uid for uid, n in zip(user_ids, counts) if n}

    def online_sync(self, user_ids) -> set[int]:
        user_ids = list(user_ids)
        if not user_ids:
            return set()
        now = time.time()
        with broker.sync_client().pipeline(transaction=False) as pipe:
            for uid in user_ids:
                pipe.zcount(presence_key(uid), now, "+inf")
            counts = pipe.execute()
        return {uid for uid, n in zip(user_ids, counts) if n}

    def _ensure_refresher(self):
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._beat_forever())

    async def _beat_forever(self):
        while self.local:
            await asyncio.sleep(settings.CHAT_HEARTBEAT_S)
            try:
                await self.refresh()
                await self.sweep()
            except broker.UNAVAILABLE:  # Redis away: retry next beat; entries outlive two misses
                logger.warning("presence heartbeat failed: Redis unavailable")
            except Exception:
                logger.exception("presence heartbeat failed")

    async def refresh(self):
        """Push this process's connections' expiry forward (re-creating them after a Redis restart)."""
        expiry = time.time() + ttl()
        async with broker.async_client().pipeline(transaction=False) as pipe:
            for conn_id, user_id in list(self.local.items()):
                key = presence_key(user_id)
                pipe.zadd(key, {conn_id: expiry})
                pipe.expire(key, ttl())
                pipe.zadd(users_key(), {str(user_id): expiry}, gt=True)
            await pipe.execute()

    async def sweep(self) -> list[int]:
        """Announce offline every user whose connections all expired (a process died)."""
        client = broker.async_client()
        now = time.time()
        gone = []
        for raw in await client.zrangebyscore(users_key(), "-inf", now):
            user_id = int(raw)
            if await self._leave(client)(keys=[presence_key(user_id), users_key()], args=["", now, user_id]):
                gone.append(user_id)
        for user_id in gone:
            await announce(user_id, "offline")
        return gone


async def announce(user_id: int, status: str, user: dict | None = None, rooms=None) -> None:
    """Publish `presence` for the user to every room they belong to."""
    if user is None or rooms is None:
        user, rooms = await database_sync_to_async(_user_and_rooms)(user_id)
        if user is None:
            return
    for room_id, slug in rooms:
        event = events.frame_event(protocol.presence(slug, user, status), room_id=room_id)
        await events.send_async(events.room_group(room_id), event)


def _user_and_rooms(user_id):
    name = selectors.usernames([user_id]).get(user_id)
    if name is None:
        return None, []
    return {"id": user_id, "username": name}, selectors.member_room_ids(user_id)


_backend = None


def backend():
    global _backend
    if _backend is None:
        _backend = RedisPresence() if settings.REDIS_URL else LocalPresence()
    return _backend


def online_user_ids(user_ids) -> set[int]:
    """From synchronous code (REST views): which of `user_ids` are online now."""
    return backend().online_sync(user_ids)
