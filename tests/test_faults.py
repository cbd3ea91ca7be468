"""Fault injection over real daphne processes: Redis restarts, a killed process, a database cut
off, concurrent writers, retries, dead peers and shutdown.

Each test asserts the issue's invariant: every client's de-duplicated, id-ordered view of
the room equals the database's sequence; every acknowledged send is stored once; every send
is answered (ack or error) or its connection closes, and the client resends it after
reconnecting. Cross-process tests run on a private redis-server (killed and restarted at will,
never the shared one); the database test needs PostgreSQL.
"""

import asyncio
import base64
import contextlib
import os
import random
import time

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.models import Message
from tests.faults import assert_acks_in_db, assert_views_match_db, daphnes, database_url_via, ids_by_client_id
from tests.live import http_json
from tests.reconnecting import ReconnectingClient, connected, settle_all
from tests.support import about, access_token, db, ws_connect

pytestmark = [pytest.mark.fault, pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOM = "general"


@pytest.fixture
def crowd(make_user):
    """`await crowd(n)`: n users, all members of ROOM (the first created it)."""

    @database_sync_to_async
    def make(n: int):
        users = [make_user(f"user{i}") for i in range(n)]
        services.room_create(user=users[0], name="General", slug=ROOM)
        for user in users[1:]:
            services.room_join(user=user, slug=ROOM)
        return users

    return make


def user_messages(room: str = ROOM) -> int:
    return Message.objects.filter(room__slug=room, kind="user").count()


async def keep_sending(client: ReconnectingClient, until: float, every: float) -> int:
    """Send to ROOM every `every` seconds until `until` (monotonic), connected or not; returns how many."""
    sent = 0
    while time.monotonic() < until:
        await client.send(ROOM, f"{client.name} #{sent}")
        sent += 1
        await asyncio.sleep(every)
    return sent


async def eventually(condition, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(step)
    return result


async def eventually_async(query, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := await query()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)
    return result


def alternating(users, a, b):
    """`connected` clients in ROOM, one per user, alternately on server `a` and `b` (each fails over to the other)."""
    return connected([ReconnectingClient(user, [b, a] if i % 2 else [a, b], [ROOM]) for i, user in enumerate(users)])


# Redis restarts while clients send


async def test_redis_restart_while_clients_send(private_redis, crowd):
    users = await crowd(10)
    with daphnes(2, {"REDIS_URL": private_redis.url}) as (a, b):
        async with alternating(users, a, b) as clients:
            start = time.monotonic()
            sending = [asyncio.create_task(keep_sending(c, start + 6, 0.1)) for c in clients[:5]]
            await asyncio.sleep(2)
            private_redis.stop()
            killed = time.monotonic()
            await asyncio.sleep(1.5)
            await asyncio.to_thread(private_redis.start)
            sent = sum(await asyncio.gather(*sending))
            await settle_all(clients, timeout=20)
            await assert_acks_in_db(clients)
            await assert_views_match_db(clients, ROOM)
            assert await db(user_messages)() == sent
            # The fault reached every client: each socket was closed for it to resume (1012 from the
            # watchdog, 1013 while Redis was away), and none was closed otherwise.
            for client in clients:
                assert any(t >= killed for *_, t in client.closes), f"{client.name} was never disconnected"
            assert {code for c in clients for code, *_ in c.closes} <= {1012, 1013}, [c.closes for c in clients]
            assert {e["code"] for c in clients for e in c.errors} <= {"unavailable"}, [c.errors for c in clients]


# A daphne is SIGKILLed


async def test_sigkill_of_one_daphne(private_redis, crowd):
    users = await crowd(6)
    victim = users[5]  # its only connection is on the process that dies
    with daphnes(2, {"REDIS_URL": private_redis.url}) as (a, b):
        async with connected(
            [ReconnectingClient(user, [a, b], [ROOM]) for user in users[:2]]
            + [ReconnectingClient(user, [b, a], [ROOM]) for user in users[2:5]]
        ) as clients:
            on_a, on_b = clients[:2], clients[2:]
            watcher = on_b[-1]
            doomed = await ws_connect(a, victim)
            await eventually(lambda: watcher.saw_presence(victim.username, "online"), 5, "victim online")
            start = time.monotonic()
            sending = [asyncio.create_task(keep_sending(c, start + 4, 0.05)) for c in clients[:4]]
            await asyncio.sleep(1.5)
            a.process.kill()
            killed = time.monotonic()
            offline = await eventually(
                lambda: watcher.saw_presence(victim.username, "offline", after=killed),
                8,
                "the victim announced offline",
            )
            # 4 beats of CHAT_HEARTBEAT_S=1, plus delivery
            assert offline - killed <= 6, f"offline announced {offline - killed:.1f} s after the kill"
            sent = sum(await asyncio.gather(*sending))
            await settle_all(clients, timeout=20)
            await assert_acks_in_db(clients)
            await assert_views_match_db(clients, ROOM)
            assert await db(user_messages)() == sent
            for client in on_a:
                assert client.closes[0][:1] == (None,), f"{client.name}: {client.closes}"  # no close frame: a crash
                assert client.server is b and client.connections == 2
            for client in on_b:
                assert not client.closes
            # users who moved to the survivor stay online
            moved = {c.user.username for c in on_a}
            assert not [p for p in watcher.presence if p[2] in moved and p[3] == "offline"], watcher.presence
            doomed.abort()


# The database is briefly unreachable


@pytest.mark.postgres
async def test_database_briefly_unreachable(pg_proxy, alice, bob):
    await db(services.room_create)(user=alice, name="General", slug=ROOM)
    await db(services.room_join)(user=bob, slug=ROOM)
    with daphnes(1, {"DATABASE_URL": database_url_via(pg_proxy)}) as (server,):
        sender = await ws_connect(server, alice)
        reader = await ws_connect(server, bob)
        await sender.send(type="message.send", room=ROOM, body="before", client_id="c0", ref="s0")
        await sender.expect("message.new", ref="s0")
        before = await db(list)(Message.objects.order_by("id").values_list("id", "client_id"))

        pg_proxy.cut()
        await sender.send(type="message.send", room=ROOM, body="during", client_id="c1", ref="s1")
        error = await sender.expect("error", ref="s1", timeout=10)
        assert error["code"] == "unavailable" and error["retry_after"] > 0, error
        assert await db(list)(Message.objects.order_by("id").values_list("id", "client_id")) == before
        await sender.send(type="ping", ref="p")  # the consumer survived
        await sender.expect("pong", ref="p")
        status, health = await asyncio.to_thread(http_json, server, "GET", "/healthz")
        assert (status, health["database"]) == (503, "error"), health
        status, body = await asyncio.to_thread(
            http_json, server, "POST", f"/api/rooms/{ROOM}/messages/", {"body": "rest", "client_id": "c2"}, user=alice
        )
        assert (status, body["code"]) == (503, "unavailable"), body
        assert await db(list)(Message.objects.order_by("id").values_list("id", "client_id")) == before
        assert pg_proxy.refused, "the server never tried the database while it was cut off"

        pg_proxy.restore()
        await sender.send(type="message.send", room=ROOM, body="during", client_id="c1", ref="s2")
        ack = await sender.expect("message.new", ref="s2")
        assert not ack.get("duplicate") and ack["message"]["body"] == "during"
        assert (await reader.expect("message.new", where=lambda f: f["message"]["body"] == "during"))["message"] == ack[
            "message"
        ]
        status, health = await asyncio.to_thread(http_json, server, "GET", "/healthz")
        assert status == 200, health
        assert await ids_by_client_id(["c0", "c1", "c2"]) == {"c0": [before[-1][0]], "c1": [ack["message"]["id"]]}
        await sender.close(), await reader.close()


# Concurrent writers in several processes


async def test_concurrent_writers_on_two_processes(private_redis, crowd):
    users = await crowd(10)
    rng = random.Random(5)
    with daphnes(2, {"REDIS_URL": private_redis.url}) as (a, b):
        async with alternating(users, a, b) as clients:
            writers, readers = clients[:6], clients[6:]  # three writers and two readers on each process
            hopper = readers[0]  # reconnects with `since` again and again while the writers write
            hopper.drop_early, hopper.join_delay = True, 0.15
            n, min_reconnects = 40, 8

            # The race this test is about, once for certain: a message between the hopper's
            # `hello` and its `room.joined`. A reader on the hopper's process sends it: that
            # process writes the hopper's copy before it reads another frame, the join included.
            hopper.join_gate, hellos = asyncio.Event(), hopper.connections
            hopper.drop()
            await eventually(lambda: hopper.connections > hellos, 10, "the hopper's hello")
            nearby = next(r for r in readers[1:] if r.server is hopper.server)
            cid = await nearby.send(ROOM, "before the hopper's join")
            await eventually(lambda: cid in nearby.acked, 10, "the message before the join acknowledged")
            hopper.join_gate.set()
            hopper.join_gate = None
            await eventually(lambda: hopper.early_drops, 10, "the hopper dropping on the message before its join")

            async def write(client: ReconnectingClient):
                for i in range(n):
                    # However slow the hopper, it hops meanwhile: past min_reconnects hellos by the last send.
                    while hopper.connections <= (i + 1) * min_reconnects // n:
                        await asyncio.sleep(0.005)
                    await client.send(ROOM, f"{client.name} #{i}")
                    await asyncio.sleep(rng.uniform(0, 0.03))

            writing = asyncio.gather(*(write(w) for w in writers))
            while not writing.done():
                await hopper.wait_ready()
                # Now and then before its join's replay is in (the joins just went out), else a while after.
                await asyncio.sleep(rng.choice([rng.uniform(0, 0.02), rng.uniform(0.05, 0.2)]))
                hopper.drop()
            await writing
            await settle_all(clients, timeout=20)
            await assert_acks_in_db(clients)
            expected = await assert_views_match_db(clients, ROOM)
            acked = [mid for w in writers for mid in w.acked.values()]
            assert len(set(acked)) == len(acked) == 6 * n
            assert set(acked) <= set(expected)
            for writer in writers:
                # One connection's sends are stored in the order it sent them (a send retried after
                # an error is stored later, of course).
                once = [
                    writer.acked[cid]
                    for cid in (f"{writer.name}-{k}" for k in range(1, n + 1))
                    if writer.outcomes[cid] == ["ack"]
                ]
                assert once == sorted(once), writer.name
            assert {e["code"] for c in clients for e in c.errors} <= {"unavailable"}, [c.errors for c in clients]
            assert hopper.connections > min_reconnects


# Retries with the same client_id


async def test_resending_after_a_lost_ack_creates_one_message(alice, bob):
    await db(services.room_create)(user=alice, name="General", slug=ROOM)
    await db(services.room_join)(user=bob, slug=ROOM)
    with daphnes(1) as (server,):
        reader = await ws_connect(server, bob)
        sender = await ws_connect(server, alice)
        await sender.send(type="message.send", room=ROOM, body="once", client_id="r1", ref="s1")
        stored = await eventually_async(lambda: ids_by_client_id(["r1"]), 5, "r1 stored")
        sender.abort()  # the acknowledgement is lost with the connection
        again = await ws_connect(server, alice)
        await again.send(type="message.send", room=ROOM, body="once", client_id="r1", ref="s2")
        ack = await again.expect("message.new", ref="s2")
        assert ack["duplicate"] is True and ack["message"]["id"] == stored["r1"][0]
        delivered = [f["message"]["id"] for f in await reader.read_for(1.0) if f["type"] == "message.new"]
        assert delivered == stored["r1"]
        assert await ids_by_client_id(["r1"]) == stored

        answers = [
            await asyncio.to_thread(
                http_json,
                server,
                "POST",
                f"/api/rooms/{ROOM}/messages/",
                {"body": "rest once", "client_id": "r2"},
                user=alice,
            )
            for _ in range(2)
        ]
        assert [status for status, _ in answers] == [201, 200]
        assert answers[0][1] == answers[1][1]
        assert await ids_by_client_id(["r2"]) == {"r2": [answers[0][1]["id"]]}
        await again.close(), await reader.close()


# Heartbeats


async def raw_handshake(server, user) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket by hand and stop there: this peer never reads again, nor answers pings."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws/chat/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {access_token(user)}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_heartbeat_drops_a_dead_peer_and_keeps_a_healthy_idle_one(alice, bob):
    await db(services.room_create)(user=alice, name="General", slug=ROOM)
    await db(services.room_join)(user=bob, slug=ROOM)
    with daphnes(1, args=["--ping-interval", "1", "--ping-timeout", "1"]) as (server,):
        idle = await ws_connect(server, alice)  # sends nothing from here on; its library answers pings
        connected = time.monotonic()
        reader, writer = await raw_handshake(server, bob)
        opened = time.monotonic()
        await idle.expect("presence", where=about("bob"), status="online")
        # interval 1 s + timeout 1 s + daphne's 2 s timeout checker
        await idle.expect("presence", where=about("bob"), status="offline", timeout=6)
        assert time.monotonic() - opened <= 5.0, f"dead peer dropped after {time.monotonic() - opened:.1f} s"
        with contextlib.suppress(ConnectionResetError):  # the server dropped that socket: reset, or EOF
            await asyncio.wait_for(reader.read(), 2)
        writer.close()
        await asyncio.sleep(max(0.0, connected + 6 - time.monotonic()))
        await idle.send(type="ping", ref="after-idle")
        assert (await idle.expect("pong", ref="after-idle"))["ref"] == "after-idle"
        await idle.close()


# Graceful shutdown


async def test_sigterm_mid_burst_loses_nothing(private_redis, alice, bob):
    await db(services.room_create)(user=alice, name="General", slug=ROOM)
    await db(services.room_join)(user=bob, slug=ROOM)
    with daphnes(2, {"REDIS_URL": private_redis.url}) as (a, b):
        async with alternating([alice, bob], a, b) as clients:
            sender = clients[0]  # on a, which is stopped

            async def burst():
                for i in range(150):
                    await sender.send(ROOM, f"burst #{i}")
                    await asyncio.sleep(0.002)

            sending = asyncio.create_task(burst())
            await eventually(lambda: len(sender.acked) >= 30, 10, "30 acks before SIGTERM")
            a.process.terminate()
            await sending
            await settle_all(clients, timeout=20)
            assert sender.closes[0][:2] == (1001, "server shutting down"), sender.closes
            assert sender.server is b
            await assert_acks_in_db(clients)
            assert len(sender.acked) == 150
            assert await db(user_messages)() == 150
            await assert_views_match_db(clients, ROOM)
