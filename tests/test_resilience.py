"""How the server behaves when its database or Redis fails: error frames, 503s, the layer
watchdog, the presence sweep, and the rate limit failing open."""

import asyncio
import time
import weakref

import pytest
import redis
from django.db import OperationalError

from chat import broker, limits, selectors, services
from chat.models import Membership
from chat.realtime import connections, presence
from tests.support import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]


async def test_database_failure_answers_unavailable_and_keeps_the_socket(alice, general, monkeypatch):
    def down(requests):
        raise OperationalError("connection refused")

    a = await connect(alice)
    monkeypatch.setattr(services, "message_send_batch", down)
    await a.send(type="message.send", room="general", body="hi", ref="s")
    err = await a.expect("error")
    assert (err["code"], err["ref"], err["retry_after"]) == ("unavailable", "s", 2)
    await a.send(type="ping")
    await a.expect("pong")
    monkeypatch.undo()
    await a.send(type="message.send", room="general", body="back", ref="s2")
    assert (await a.expect("message.new", ref="s2"))["message"]["body"] == "back"
    await a.close()


async def test_redis_failure_at_connect_closes_1013(alice, monkeypatch):
    async def down(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Redis is away")

    monkeypatch.setattr(presence.backend(), "count", down)
    client = await connect(alice, hello=False)
    assert await client.closed() == 1013


def test_rest_answers_503_when_the_database_fails(api, alice, general, monkeypatch):
    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "message_send", down)
    response = api(alice).post("/api/rooms/general/messages/", {"body": "hi"}, format="json")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable" and response["Retry-After"] == "2"


def test_rate_limit_fails_open_when_the_cache_is_down(alice, monkeypatch, settings):
    def down(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Redis is away")

    settings.CHAT_RATE_PER_10S = 0  # any counted message would be refused
    if settings.REDIS_URL:
        settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
        monkeypatch.setattr(broker, "_sync_client", None)
    else:
        monkeypatch.setattr(limits.cache, "add", down)
    limits.check_send_rate(alice.pk)  # no exception: the message is accepted


async def test_close_all_closes_every_local_socket_with_1012(alice, bob):
    a, b = await connect(alice), await connect(bob)
    assert connections.count() == 2
    assert await connections.close_all(1012, "service restart") == 2
    assert await a.closed() == 1012 and await b.closed() == 1012
    assert connections.count() == 0


@pytest.mark.redis
async def test_layer_check_notices_unreachable_and_restarted_redis(redis_url, monkeypatch):
    monkeypatch.setattr(connections, "_run_id", None)
    assert await connections.check_layer() is True
    monkeypatch.setattr(connections, "_run_id", "an-earlier-server")
    assert await connections.check_layer() is False  # run_id changed: Redis restarted
    dead = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    monkeypatch.setattr(broker, "async_client", lambda: dead)
    assert await connections.check_layer() is False


@pytest.mark.redis
async def test_sweep_announces_users_of_a_dead_process_offline(redis_url, alice, general, monkeypatch):
    announced = []

    async def record(user_id, status, **kwargs):
        announced.append((user_id, status))

    monkeypatch.setattr(presence, "announce", record)
    backend = presence.RedisPresence()
    assert await backend.connect(alice.pk, "conn-on-a-dead-process") is True
    backend.local.clear()  # the process "died": nobody refreshes or closes the connection
    assert await backend.sweep() == []  # not expired yet
    client = broker.async_client()
    past = time.time() - 1
    await client.zadd(presence.presence_key(alice.pk), {"conn-on-a-dead-process": past})
    await client.zadd(presence.users_key(), {str(alice.pk): past})
    assert await backend.sweep() == [alice.pk]
    assert announced == [(alice.pk, "offline")]
    assert await backend.sweep() == []  # announced once only
    assert await backend.online([alice.pk]) == set()


@pytest.mark.redis
async def test_a_burst_of_presence_calls_waits_for_a_small_pool(redis_url, settings, monkeypatch):
    """Clients connecting by the hundred at once must not leave as many idle Redis connections
    open for the life of the process: the burst shares the pool's few, and every call succeeds."""
    settings.REDIS_POOL_SIZE = 4
    monkeypatch.setattr(broker, "_async_clients", weakref.WeakKeyDictionary())  # a client with this size
    backend = presence.RedisPresence()
    users = range(10_000, 10_200)
    assert await asyncio.gather(*(backend.connect(user, f"burst-{user}") for user in users)) == [True] * 200
    assert await asyncio.gather(*(backend.disconnect(user, f"burst-{user}") for user in users)) == [True] * 200
    client = broker.async_client()
    pool = client.connection_pool
    assert 1 <= len(pool._available_connections) + len(pool._in_use_connections) <= 4
    await client.aclose()


@pytest.mark.redis
async def test_last_close_is_reported_once_across_connections(redis_url, alice):
    backend = presence.RedisPresence()
    assert await backend.connect(alice.pk, "c1") is True
    assert await backend.connect(alice.pk, "c2") is False
    assert await backend.disconnect(alice.pk, "c1") is False
    assert await backend.disconnect(alice.pk, "c2") is True
    assert await backend.disconnect(alice.pk, "c2") is False


def test_banned_member_does_not_get_the_room_even_when_others_are_members(alice, bob, general):
    services.room_join(user=bob, slug="general")
    Membership.objects.filter(user=bob).update(banned=True)
    assert selectors.member_room_ids(bob) == []
    assert selectors.member_room_ids(alice) == [(general.pk, "general")]
