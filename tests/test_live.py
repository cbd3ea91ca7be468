"""Real daphne processes and real WebSocket clients: what a browser or a bot sees over the network.

The first tests need one server (on the in-memory layer without REDIS_URL). The
cross-process tests run two servers on one Redis and one database; conftest deselects
them without REDIS_URL (they fail instead under CHAT_REQUIRE_SERVICES=1).
"""

import asyncio
import random
import re
import signal
from datetime import timedelta
from pathlib import Path
from urllib.request import urlopen

import pytest
from django.conf import settings as django_settings
from rest_framework_simplejwt.tokens import AccessToken

from chat import services
from chat.models import Message
from tests.live import LIVE_ENV, http_json, run_daphne
from tests.support import about, db, ws_connect

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def room_message_ids(room) -> list[int]:
    return list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))


# Close codes, as a browser's CloseEvent shows them


def expired_token(user) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    return str(token)


@pytest.mark.parametrize(
    "who, path, code, reason",
    [
        ("nobody", "/ws/chat/", 4401, "no credentials"),
        ("nobody", "/ws/chat/?token=not-a-jwt", 4401, "invalid or expired token"),
        ("expired", "/ws/chat/", 4401, "invalid or expired token"),
        ("bob", "/ws/chat/unknown/", 4404, "no room 'unknown'"),
        ("bob", "/ws/chat/old/", 4410, "room 'old' is archived"),
        ("bob", "/ws/chat/secret/", 4403, "room 'secret' is private"),
    ],
)
async def test_refusals_arrive_as_close_codes_after_the_handshake(daphne_a, alice, bob, who, path, code, reason):
    await db(services.room_create)(user=alice, name="Old", slug="old")
    await db(services.room_archive)(user=alice, slug="old")
    await db(services.room_create)(user=alice, name="Secret", slug="secret", kind="private")
    messages_before = await db(Message.objects.count)()
    credentials = {"nobody": {}, "expired": {"token": expired_token(bob)}, "bob": {"user": bob}}[who]
    client = await ws_connect(daphne_a, path=path, hello=False, **credentials)  # the handshake succeeds
    got_code, got_reason = await client.close_frame()
    assert got_code == code
    assert reason in got_reason.lower(), got_reason
    assert await db(Message.objects.count)() == messages_before  # bob joined nothing


async def test_oversized_frame_closes_1009_with_reason_and_cleans_up(daphne_a, alice, bob, general_with_bob):
    watcher = await ws_connect(daphne_a, bob)
    client = await ws_connect(daphne_a, alice)
    await watcher.expect("presence", where=about("alice"), status="online")
    limit = django_settings.CHAT_MAX_FRAME_BYTES
    await client.send(type="message.send", room="general", body="x" * limit)
    assert await client.close_frame() == (1009, f"frame over {limit} bytes")
    # the consumer's disconnect ran: alice's only connection is gone, so she is offline
    await watcher.expect("presence", where=about("alice"), status="offline")
    assert not await db(Message.objects.filter(kind="user").exists)()
    await watcher.close()


async def test_connection_limit_per_user_closes_1013(daphne_a, alice):
    limit = int(LIVE_ENV["CHAT_MAX_CONNECTIONS_PER_USER"])
    clients = [await ws_connect(daphne_a, alice) for _ in range(limit)]
    refused = await ws_connect(daphne_a, alice, hello=False)
    assert await refused.close_frame() == (1013, "too many connections for this user")
    for client in clients:
        await client.send(type="ping")
        await client.expect("pong")
        await client.close()


async def test_a_valid_token_gets_hello_over_the_network(daphne_a, alice, general_with_bob):
    client = await ws_connect(daphne_a, alice)
    assert client.hello["user"] == {"id": alice.pk, "username": "alice"}
    assert [room["slug"] for room in client.hello["rooms"]] == ["general"]
    await client.send(type="ping", ref="p")
    assert (await client.expect("pong"))["ref"] == "p"
    await client.close()


def gauge(server, name: str) -> float:
    with urlopen(server.url + "/metrics", timeout=10) as response:  # loopback: allowed
        text = response.read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


async def test_the_hub_writes_straight_to_daphnes_sockets(daphne_a, alice, bob, general_with_bob):
    """The fan-out's fast path is engaged under daphne: each connection's transport writes frames
    at once (chat/realtime/daphne/), which nothing wrapping daphne's ASGI `send` may turn off."""
    a, b = await ws_connect(daphne_a, alice), await ws_connect(daphne_a, bob)
    assert gauge(daphne_a, "chat_direct_connections") == gauge(daphne_a, "chat_open_connections") >= 2
    await a.send(type="message.send", room="general", body="straight", ref="s")
    await a.expect("message.new", ref="s")
    assert (await b.expect("message.new"))["message"]["body"] == "straight"
    await a.close()
    await b.close()


async def collected_garbage(server, probe) -> tuple[int, str]:
    """Signal `server` (started with tests/gcprobe) to count its cyclic garbage; (count, kinds)."""
    probe.unlink(missing_ok=True)
    server.process.send_signal(signal.SIGUSR1)
    async with asyncio.timeout(10):
        while not probe.exists():
            await asyncio.sleep(0.05)
    count, kinds = probe.read_text().split(" ", 1)
    return int(count), kinds


async def test_a_closed_connection_leaves_nothing_for_the_garbage_collector(alice, bob, general_with_bob, tmp_path):
    """Everything a WebSocket connection held (daphne's protocol, Twisted's transport, the
    handshake's HTTP request, the consumer) is freed as it closes: cyclic garbage waits for a
    full collection, which walks the whole heap with the GIL held, and a server that has just
    seen thousands of connections close would pause for it."""
    probe = tmp_path / "garbage"
    env = {**LIVE_ENV, "PYTHONPATH": str(Path(__file__).parent / "gcprobe"), "CHAT_GC_PROBE": str(probe)}

    async def session(user, i):
        client = await ws_connect(server, user)
        await client.send(type="join", room="general", ref="j")
        await client.expect("room.joined", ref="j")
        await client.send(type="message.send", room="general", body=f"m{i}", client_id=f"{user.username}{i}", ref="s")
        await client.expect("message.new", ref="s")
        await client.close()

    with run_daphne(env) as server:
        await session(alice, 0)  # first use: imports and caches
        await collected_garbage(server, probe)  # starts the count
        for i in range(1, 11):
            await asyncio.gather(session(alice, i), session(bob, i))
        # Until daphne has logged every close (not through /metrics: an HTTP request leaves
        # garbage of its own), then a moment for the consumers' `disconnect`.
        async with asyncio.timeout(10):
            while server.output().count("WSDISCONNECT") < 21:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        count, kinds = await collected_garbage(server, probe)
    # Django's SQL compiler leaves 3 (a recursive local function) per query with select_related;
    # each connection left about 60 more before chat/realtime/daphne/ broke its cycles.
    assert count <= 5 * 20, f"{count} objects in reference cycles after 20 connections closed: {kinds}"


async def test_join_since_on_a_subscribed_room_replays_only_what_did_not_come_live(
    daphne_a, alice, bob, general_with_bob
):
    """A client on /ws/chat/ gets its rooms' messages live from `hello` on; its `join since`
    (as the browser client sends it after `hello`) must not send those again."""
    old = [(await db(services.message_send)(user=alice, slug="general", body=f"old{i}"))[0].pk for i in range(3)]
    b = await ws_connect(daphne_a, bob)
    a = await ws_connect(daphne_a, alice)
    await a.send(type="message.send", room="general", body="live", ref="s")
    live = (await a.expect("message.new", ref="s"))["message"]["id"]
    assert (await b.expect("message.new"))["message"]["id"] == live
    await b.send(type="join", room="general", since=old[0], ref="j")
    await b.expect("room.joined", ref="j")
    replayed = [f["message"]["id"] for f in await b.drain() if f["type"] == "message.new"]
    assert replayed == old[1:]
    await a.send(type="message.send", room="general", body="after", ref="s2")
    after = (await a.expect("message.new", ref="s2"))["message"]["id"]
    assert (await b.expect("message.new"))["message"]["id"] == after  # still live, no gap
    await a.close(), await b.close()


# Across processes: two servers on one Redis and one database


@pytest.mark.redis
async def test_message_sent_on_a_reaches_a_client_on_b(daphne_a, daphne_b, alice, bob, general_with_bob):
    a = await ws_connect(daphne_a, alice)
    b = await ws_connect(daphne_b, bob)
    await a.send(type="message.send", room="general", body="over redis", client_id="x1", ref="s1")
    ack = await a.expect("message.new", ref="s1")
    got = await b.expect("message.new")
    assert got == {"type": "message.new", "room": "general", "message": ack["message"]}
    assert got["message"]["body"] == "over redis" and got["message"]["author"]["username"] == "alice"
    assert await db(Message.objects.filter(pk=ack["message"]["id"], body="over redis").exists)()
    # the sender gets its acknowledgement, not the broadcast as well
    assert not [f for f in await a.drain() if f["type"] == "message.new"]
    await a.close(), await b.close()


@pytest.mark.redis
async def test_message_posted_over_http_on_a_reaches_a_client_on_b(daphne_a, daphne_b, alice, bob, general_with_bob):
    b = await ws_connect(daphne_b, bob)
    status, message = await asyncio.to_thread(
        http_json,
        daphne_a,
        "POST",
        "/api/rooms/general/messages/",
        {"body": "from rest", "client_id": "h1"},
        user=alice,
    )
    assert status == 201, message
    got = await b.expect("message.new")
    assert got["message"] == message
    assert message["body"] == "from rest" and message["room"] == "general"
    await b.close()


@pytest.mark.redis
async def test_presence_across_processes(daphne_a, daphne_b, alice, bob, general_with_bob):
    a = await ws_connect(daphne_a, alice)
    b = await ws_connect(daphne_b, bob)
    online = await a.expect("presence", where=about("bob"))
    assert (online["room"], online["status"]) == ("general", "online")
    await a.send(type="join", room="general", ref="j")
    joined = await a.expect("room.joined", ref="j")
    assert joined["online"] == ["alice", "bob"]
    await b.close()
    offline = await a.expect("presence", where=about("bob"))
    assert (offline["room"], offline["status"]) == ("general", "offline")
    await a.send(type="join", room="general", ref="j2")
    assert (await a.expect("room.joined", ref="j2"))["online"] == ["alice"]
    await a.close()


@pytest.mark.redis
async def test_join_since_while_messages_keep_arriving(daphne_a, daphne_b, alice, bob, general_with_bob):
    """A reader on B keeps reconnecting with `join since` while a writer on A sends: in the end
    it has every message of the room exactly once."""
    n, min_reconnects = 200, 8
    rng = random.Random(7)
    writing = True
    received: list[int] = []  # message ids in the order the reader got them, over all its connections
    reconnects = early = 0

    async def write():
        nonlocal writing
        writer = await ws_connect(daphne_a, alice)
        for i in range(n):
            while reconnects < i * min_reconnects // n:  # however slow the reader, it reconnects meanwhile
                await asyncio.sleep(0.005)
            await writer.send(type="message.send", room="general", body=f"m{i}", client_id=f"w{i}", ref=str(i))
            await writer.expect("message.new", ref=str(i))
            await asyncio.sleep(rng.uniform(0, 0.01))
        writing = False
        await writer.close()

    async def read_once(window: float):
        nonlocal early
        reader = await ws_connect(daphne_b, bob)
        await asyncio.sleep(rng.uniform(0, 0.03))  # a client busy with `hello` before it joins
        await reader.send(type="join", room="general", since=max(received, default=0), ref="j")
        # The connection is subscribed from `hello` on, so live messages may come before `room.joined`.
        frames = [await reader.recv()]
        while frames[-1].get("ref") != "j":
            frames.append(await reader.recv())
        assert frames[-1]["type"] == "room.joined", frames[-1]
        early += sum(f["type"] == "message.new" for f in frames)
        frames += await reader.read_for(window)
        received.extend(f["message"]["id"] for f in frames if f["type"] == "message.new")
        return reader

    writer = asyncio.create_task(write())
    while writing:
        reader = await read_once(rng.uniform(0.02, 0.15))
        if reconnects % 2:
            reader.abort()
        else:
            await reader.close()
        reconnects += 1
    await writer
    await (await read_once(0.2)).close()

    assert await db(Message.objects.filter(room=general_with_bob, kind="user").count)() == n
    assert reconnects >= min_reconnects
    assert early, "no live message came between `hello` and `room.joined`: the race this test is about did not happen"
    assert not sorted({i for i in received if received.count(i) > 1}), "duplicates"
    # Live messages that came before `room.joined` precede the replay of older ones: clients
    # order by id (PROTOCOL.md), so the set and the count are what must match.
    assert sorted(received) == await db(room_message_ids)(general_with_bob)


async def test_shutdown_closes_sockets_1001(daphne_a, alice, bob, general_with_bob):
    """SIGTERM: every socket gets 1001 (clients reconnect elsewhere), and consumers clean up,
    so a user on another process sees the leaving user go offline."""
    with run_daphne(LIVE_ENV) as doomed:
        b = await ws_connect(doomed, bob)
        a = await ws_connect(daphne_a if django_settings.REDIS_URL else doomed, alice)
        doomed.process.terminate()
        assert await b.close_frame() == (1001, "server shutting down")
        if django_settings.REDIS_URL:
            offline = await a.expect("presence", where=about("bob"), status="offline")
            assert offline["room"] == "general"
            await a.close()
        else:
            assert await a.closed() == 1001


@pytest.mark.redis
async def test_moderation_over_rest_on_a_takes_effect_on_b(
    daphne_a, daphne_b, alice, bob, carol, general_with_bob, make_user
):
    """A ban, a mute, a deletion and a deactivation made through one process reach sockets on the other."""
    await db(services.room_join)(user=carol, slug="general")
    bound = await ws_connect(daphne_b, bob, "/ws/chat/general/")
    c = await ws_connect(daphne_b, carol)
    status, _ = await asyncio.to_thread(
        http_json, daphne_a, "POST", "/api/rooms/general/mutes/", {"username": "carol", "minutes": 5}, user=alice
    )
    assert status == 201
    await c.send(type="message.send", room="general", body="muted?", ref="m")
    assert (await c.expect("error", ref="m"))["code"] == "muted"
    status, message = await asyncio.to_thread(
        http_json, daphne_a, "POST", "/api/rooms/general/messages/", {"body": "to be deleted"}, user=alice
    )
    status, _ = await asyncio.to_thread(
        http_json, daphne_a, "DELETE", f"/api/messages/{message['id']}/", None, user=alice
    )
    assert status == 204
    assert (await c.expect("message.deleted"))["id"] == message["id"]
    status, _ = await asyncio.to_thread(
        http_json, daphne_a, "POST", "/api/rooms/general/bans/", {"username": "bob", "reason": "spam"}, user=alice
    )
    assert status == 201
    assert (await bound.expect("room.left"))["reason"] == "banned"
    assert await bound.closed() == 4403
    root = await db(make_user)("root", is_staff=True)
    await db(services.user_deactivate)(actor=root, username="carol")
    assert await c.closed() == 4403


async def test_join_changes_since_while_messages_change_on_two_processes(
    daphne_a, daphne_b, alice, bob, general_with_bob
):
    """Writers on A and B send, edit and delete while a reader on B keeps reconnecting with
    `join since changes_since` (the highest id and seq it got after each `room.joined`): in the
    end its view of every message equals the database's, edits and deletions included."""
    rng = random.Random(11)
    view: dict[int, dict] = {}  # the reader's newest copy of each message, by seq
    since = changes = reconnects = 0
    writing = True

    def keep(message: dict) -> None:
        if message["id"] not in view or message["seq"] > view[message["id"]]["seq"]:
            view[message["id"]] = message

    async def write(server, tag: str, count: int):
        writer = await ws_connect(server, alice)
        mine = []
        for i in range(count):
            while reconnects < i * 6 // count:  # however slow the reader, it reconnects meanwhile
                await asyncio.sleep(0.005)
            action = rng.choice(["send", "send", "edit", "delete"]) if mine else "send"
            if action == "send":
                await writer.send(type="message.send", room="general", body=f"{tag}{i}", ref=f"{tag}{i}")
                mine.append((await writer.expect("message.new", ref=f"{tag}{i}"))["message"]["id"])
            elif action == "edit":
                await writer.send(type="message.edit", id=rng.choice(mine), body=f"{tag}{i} edited", ref=f"{tag}{i}")
                await writer.expect("message.updated", ref=f"{tag}{i}")
            else:
                await writer.send(type="message.delete", id=mine.pop(rng.randrange(len(mine))), ref=f"{tag}{i}")
                await writer.expect("message.deleted", ref=f"{tag}{i}")
            await asyncio.sleep(rng.uniform(0.005, 0.03))
        await writer.close()

    async def writers():
        nonlocal writing
        await asyncio.gather(write(daphne_a, "a", 25), write(daphne_b, "b", 25))  # within the edit and delete budgets
        writing = False

    task = asyncio.create_task(writers())
    while writing and not task.done():
        reader = await ws_connect(daphne_b, bob)
        await reader.send(type="join", room="general", since=since, changes_since=changes, ref="j")
        joined = False
        # Windows long enough to stay within the join budget.
        for frame in [await reader.recv()] + await reader.read_for(rng.uniform(0.08, 0.2)):
            if frame.get("ref") == "j" and frame["type"] == "room.joined":
                joined = True
            if "message" in frame:
                keep(frame["message"])
                if joined:  # frames before `room.joined` are kept, but do not move the cursors
                    since, changes = max(since, frame["message"]["id"]), max(changes, frame["message"]["seq"])
        if reconnects % 2:
            reader.abort()
        else:
            await reader.close()
        reconnects += 1
    await task
    reader = await ws_connect(daphne_b, bob)
    await reader.send(type="join", room="general", since=since, changes_since=changes, ref="j")
    for frame in await reader.read_for(0.5):
        if "message" in frame:
            keep(frame["message"])
    await reader.close()

    def database_view():
        from chat.serializers import message_data

        rows = Message.objects.filter(room=general_with_bob).select_related("room", "author").order_by("id")
        return [message_data(m) for m in rows]

    assert reconnects >= 4
    assert any(m["deleted"] for m in view.values()) and any(m["edited_at"] for m in view.values())
    assert [view[i] for i in sorted(view)] == await db(database_view)()
