"""Write budgets (CHAT_WRITE_RATES) and the pacing of join/leave notes, through every entry point:
the services (the one write path), WebSocket frames, REST, pages, a real daphne, and two
processes sharing their counters through Redis."""

import asyncio
import time
from types import SimpleNamespace
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from django.test import Client

from chat import limits, services
from chat.errors import Invalid, RateLimited
from chat.models import Membership, Message
from tests.live import LIVE_ENV, run_daphne
from tests.support import access_token, connect, db, db_state, send, ws_connect

FROZEN = 1_000_035.5  # 35.5 s into a one-minute window: 45 s until the next


@pytest.fixture
def budget(settings):
    """`budget(action, count, seconds)`: the budget of `action` for this test only."""

    def set_budget(action, count, seconds=60):
        settings.CHAT_WRITE_RATES = {**settings.CHAT_WRITE_RATES, action: (count, seconds)}

    return set_budget


@pytest.fixture
def clock(monkeypatch):
    """The rate counters' clock, frozen at FROZEN; set `clock.now` to move it."""
    clock = SimpleNamespace(now=FROZEN)
    monkeypatch.setattr(limits, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


def public(owner, slug):
    return services.room_create(user=owner, name=slug.title(), slug=slug, source="admin")


def bodies(room, kind="system"):
    return list(room.messages.filter(kind=kind).order_by("id").values_list("body", flat=True))


# Each budgeted write: (setup, write) where setup(alice, bob, carol) returns what the two writes
# need, and write(alice, bob, carol, objects, n) is the n-th write (0 or 1) of the same action.


def _two_rooms(alice, bob, carol):
    return public(alice, "one"), public(alice, "two")


def _bob_in_two_rooms(alice, bob, carol):
    rooms = _two_rooms(alice, bob, carol)
    for room in rooms:
        services.room_join(user=bob, slug=room.slug)
    return rooms


def _bobs_messages(alice, bob, carol):
    room = public(alice, "one")
    services.room_join(user=bob, slug="one")
    return send(bob, room, "first"), send(bob, room, "second")


def _alices_messages_bob_sees(alice, bob, carol):
    room = public(alice, "one")
    services.room_join(user=bob, slug="one")
    return send(alice, room, "first"), send(alice, room, "second")


def _private_room(alice, bob, carol):
    return services.room_create(user=alice, name="Crew", slug="crew", kind="private", source="admin")


WRITES = {
    "join": ("bob", _two_rooms, lambda a, b, c, rooms, n: services.room_join(user=b, slug=rooms[n].slug)),
    "leave": ("bob", _bob_in_two_rooms, lambda a, b, c, rooms, n: services.room_leave(user=b, slug=rooms[n].slug)),
    "edit": (
        "bob",
        _bobs_messages,
        lambda a, b, c, ms, n: services.message_edit(user=b, message_id=ms[0].pk, body=f"edit {n}"),
    ),
    "delete": ("bob", _bobs_messages, lambda a, b, c, ms, n: services.message_delete(user=b, message_id=ms[n].pk)),
    "report": (
        "bob",
        _alices_messages_bob_sees,
        lambda a, b, c, ms, n: services.message_report(user=b, message_id=ms[n].pk, reason="spam"),
    ),
    "invite": (
        "alice",
        _private_room,
        lambda a, b, c, room, n: services.member_invite(actor=a, slug="crew", username=(b, c)[n].username),
    ),
    "room": (
        "alice",
        lambda a, b, c: None,
        lambda a, b, c, _, n: services.room_create(user=a, name=f"Room {n}", slug=f"room-{n}"),
    ),
    "direct": (
        "alice",
        lambda a, b, c: None,
        lambda a, b, c, _, n: services.direct_room(user=a, username=(b, c)[n].username),
    ),
    "react": (
        "bob",
        _alices_messages_bob_sees,
        lambda a, b, c, ms, n: services.reaction_add(user=b, message_id=ms[n].pk, emoji="👍"),
    ),
    "update": (
        "alice",
        lambda a, b, c: public(a, "one"),
        lambda a, b, c, room, n: services.room_update(user=a, slug="one", topic=f"topic {n}"),
    ),
}


# Services: the one write path


@pytest.mark.parametrize("action", list(WRITES))
def test_every_write_has_a_budget_per_user(action, alice, bob, carol, budget, clock, refused):
    _, setup, write = WRITES[action]
    objects = setup(alice, bob, carol)
    budget(action, 1)
    write(alice, bob, carol, objects, 0)
    with refused(RateLimited, match="Slow down: at most 1 ") as info:
        write(alice, bob, carol, objects, 1)
    assert (info.value.code, info.value.status, info.value.retry_after) == ("rate_limited", 429, 45)
    assert "try again in 45 s" in info.value.detail
    clock.now = FROZEN + 45  # the next window
    write(alice, bob, carol, objects, 1)


def test_a_budget_is_per_user(alice, bob, carol, budget, clock):
    budget("join", 1)
    public(alice, "one"), public(alice, "two")
    services.room_join(user=bob, slug="one")
    with pytest.raises(RateLimited):
        services.room_join(user=bob, slug="two")
    assert services.room_join(user=carol, slug="two")[2]


def test_writes_refused_by_their_checks_or_changing_nothing_cost_no_budget(alice, bob, carol, budget, clock):
    for action in ("room", "join", "delete", "direct"):
        budget(action, 1)
    room = public(alice, "taken")
    with pytest.raises(Invalid, match="taken"):
        services.room_create(user=alice, name="Again", slug="taken")
    services.room_create(user=alice, name="Mine", slug="mine")  # the refused one did not count
    services.room_join(user=bob, slug="taken")
    for _ in range(3):  # a member joining again (a client resuming) writes nothing, and counts nothing
        assert services.room_join(user=bob, slug="taken")[2] is False
    gone, kept = send(bob, room), send(bob, room)
    services.message_delete(user=bob, message_id=gone.pk)
    services.message_delete(user=bob, message_id=gone.pk)  # deleted already: nothing to do, nothing counted
    dm = services.direct_room(user=alice, username="bob")
    assert services.direct_room(user=alice, username="bob") == dm  # it exists: nothing created, nothing counted
    # Each budget holds one write, and it is spent: the next real one is refused.
    for write in (
        lambda: services.room_create(user=alice, name="Third"),
        lambda: services.room_join(user=bob, slug="mine"),
        lambda: services.message_delete(user=bob, message_id=kept.pk),
        lambda: services.direct_room(user=alice, username="carol"),
    ):
        with pytest.raises(RateLimited):
            write()


def test_the_admins_moderation_is_not_counted(alice, bob, staff, budget, clock):
    """Calls from the admin (source="admin") are staff-only and audited: no budget applies."""
    budget("delete", 1)
    budget("room", 1)
    room = public(alice, "one")
    services.room_join(user=bob, slug="one")
    spam = [send(bob, room, f"spam {i}") for i in range(3)]
    for m in spam:
        services.message_delete(user=staff, message_id=m.pk, source="admin")
    for n in range(3):
        services.room_create(user=staff, name=f"Set up {n}", source="admin")
    assert all(m.deleted for m in Message.objects.filter(pk__in=[m.pk for m in spam]))
    # The same staff member over REST or WebSocket is counted like anyone.
    services.room_create(user=staff, name="By hand")
    with pytest.raises(RateLimited):
        services.room_create(user=staff, name="By hand again")


def test_a_direct_message_to_a_new_user_is_refused_over_the_direct_budget(alice, bob, carol, budget, clock):
    budget("direct", 1)
    services.message_send(user=alice, to="bob", body="hi bob")
    with pytest.raises(RateLimited):
        services.message_send(user=alice, to="carol", body="hi carol")
    assert services.message_send(user=alice, to="bob", body="again")[1]  # the existing room costs nothing


# Join/leave notes


def test_a_leave_and_quick_rejoins_write_no_new_pair(alice, bob, published, committed):
    room = public(alice, "one")
    services.room_join(user=bob, slug="one")
    with committed():
        for _ in range(5):
            services.room_leave(user=bob, slug="one")
            services.room_join(user=bob, slug="one")
        services.room_leave(user=bob, slug="one")
    assert bodies(room) == ["bob joined", "bob left"]
    room_frames = [e["frame"] for group, e in published if group == f"room.{room.pk}"]
    assert [f["message"]["body"] for f in room_frames if f["type"] == "message.new"] == ["bob left"]
    # The live member list still follows every change.
    assert [f["type"] for f in room_frames if f["type"].startswith("member.")] == [
        "member.left",
        "member.joined",
    ] * 5 + ["member.left"]


def test_a_return_after_the_quiet_period_is_noted(alice, bob):
    room = public(alice, "one")
    services.room_join(user=bob, slug="one")
    services.room_leave(user=bob, slug="one")
    services.room_join(user=bob, slug="one")
    assert bodies(room) == ["bob joined", "bob left"]
    services.room_leave(user=bob, slug="one")  # the history says so already
    limits.set_flag(services.members._left_key(room, bob), None)  # the quiet period is over: its flag expired
    services.room_join(user=bob, slug="one")
    services.room_leave(user=bob, slug="one")
    assert bodies(room) == ["bob joined", "bob left", "bob joined", "bob left"]


def test_a_quiet_period_of_zero_notes_every_join_and_leave(alice, bob, carol, settings):
    room = public(alice, "one")
    for user in (bob, carol):
        if user == carol:
            settings.CHAT_JOIN_LEAVE_QUIET_S = 0
        for _ in range(2):
            services.room_join(user=user, slug="one")
            services.room_leave(user=user, slug="one")
    assert bodies(room) == ["bob joined", "bob left"] + ["carol joined", "carol left"] * 2


def test_an_invitation_or_a_removal_makes_the_next_leave_or_join_news_again(alice, bob):
    crew = services.room_create(user=alice, name="Crew", slug="crew", kind="private")
    services.member_invite(actor=alice, slug="crew", username="bob")
    services.room_leave(user=bob, slug="crew")
    services.member_invite(actor=alice, slug="crew", username="bob")
    services.room_leave(user=bob, slug="crew")
    assert bodies(crew) == ["alice added bob", "bob left", "alice added bob", "bob left"]
    room = public(alice, "one")
    services.room_join(user=bob, slug="one")
    services.room_leave(user=bob, slug="one")
    services.room_join(user=bob, slug="one")  # quiet
    services.member_remove(actor=alice, slug="one", username="bob")
    services.room_join(user=bob, slug="one")
    assert bodies(room) == ["bob joined", "bob left", "alice removed bob", "bob joined"]


# WebSocket (the full ASGI stack)


@pytest.mark.django_db(transaction=True)
async def test_frames_over_budget_answer_rate_limited_and_change_nothing(alice, bob, budget, clock):
    budget("join", 1)
    budget("edit", 1)
    await db(public)(alice, "one"), await db(public)(alice, "two")
    b = await connect(bob)
    await b.send(type="join", room="one", ref="j1")
    await b.expect("room.joined", ref="j1")
    await b.send(type="join", room="two", ref="j2")
    error = await b.expect("error", ref="j2")
    assert (error["code"], error["retry_after"]) == ("rate_limited", 45)
    assert "room joins" in error["detail"]
    await b.send(type="message.send", room="one", body="hello", ref="s")
    sent = (await b.expect("message.new", ref="s"))["message"]
    await b.send(type="message.edit", id=sent["id"], body="hello!", ref="e1")
    await b.expect("message.updated", ref="e1")
    await b.send(type="message.edit", id=sent["id"], body="hello!!", ref="e2")
    assert (await b.expect("error", ref="e2"))["code"] == "rate_limited"
    assert await db(lambda: list(Message.objects.filter(kind="user").values_list("body", flat=True)))() == ["hello!"]
    assert not await db(Membership.objects.filter(user=bob, room__slug="two").exists)()
    await b.close()


@pytest.mark.django_db(transaction=True)
async def test_flooding_past_any_budget_closes_1008_and_an_accepted_write_ends_the_run(
    alice, bob, budget, clock, settings
):
    settings.CHAT_FLOOD_CLOSE_AFTER = 2
    budget("edit", 1)
    room = await db(public)(alice, "one")
    await db(services.room_join)(user=bob, slug="one")
    sent = await db(send)(bob, room)
    b = await connect(bob)
    await b.send(type="message.edit", id=sent.pk, body="1", ref="ok1")
    await b.expect("message.updated", ref="ok1")
    await b.send(type="message.edit", id=sent.pk, body="2", ref="no1")
    assert (await b.expect("error", ref="no1"))["code"] == "rate_limited"
    clock.now = FROZEN + 45
    await b.send(type="message.edit", id=sent.pk, body="3", ref="ok2")
    await b.expect("message.updated", ref="ok2")  # ends the run of refusals: the next one is the first again
    await b.send(type="message.edit", id=sent.pk, body="4", ref="no2")
    assert (await b.expect("error", ref="no2"))["code"] == "rate_limited"
    await b.send(type="message.edit", id=sent.pk, body="5", ref="no3")
    await b.expect("error", ref="no3")
    assert await b.closed() == 1008


@pytest.mark.django_db(transaction=True)
async def test_join_leave_cycles_over_the_wire_write_one_pair(alice, bob):
    room = await db(public)(alice, "one")
    a = await connect(alice)
    b = await connect(bob)
    for n in range(3):
        await b.send(type="join", room="one", ref=f"j{n}")
        await b.expect("room.joined", ref=f"j{n}")
        await b.send(type="leave", room="one", ref=f"l{n}")
        await b.expect("room.left", ref=f"l{n}")
    seen = []
    while sum(f["type"] == "member.left" for f in seen) < 3:
        seen.append(await a.recv())
    seen += await a.drain()
    assert [f["type"] for f in seen if f["type"].startswith("member.")] == ["member.joined", "member.left"] * 3
    assert [f["message"]["body"] for f in seen if f["type"] == "message.new"] == ["bob joined", "bob left"]
    assert await db(bodies)(room) == ["bob joined", "bob left"]
    await a.close(), await b.close()


# REST: 429 with Retry-After and the API's error shape

REST = {
    "join": ("bob", lambda c, o, n: c.post(f"/api/rooms/{o[n].slug}/join/")),
    "leave": ("bob", lambda c, o, n: c.post(f"/api/rooms/{o[n].slug}/leave/")),
    "edit": ("bob", lambda c, o, n: c.patch(f"/api/messages/{o[0].pk}/", {"body": f"edit {n}"}, format="json")),
    "delete": ("bob", lambda c, o, n: c.delete(f"/api/messages/{o[n].pk}/")),
    "report": ("bob", lambda c, o, n: c.post(f"/api/messages/{o[n].pk}/report/", {"reason": "spam"}, format="json")),
    "invite": (
        "alice",
        lambda c, o, n: c.post("/api/rooms/crew/members/", {"username": ("bob", "carol")[n]}, format="json"),
    ),
    "room": ("alice", lambda c, o, n: c.post("/api/rooms/", {"name": f"Room {n}", "kind": "public"}, format="json")),
    "direct": ("alice", lambda c, o, n: c.post(f"/api/direct/{('bob', 'carol')[n]}/")),
    "update": ("alice", lambda c, o, n: c.patch("/api/rooms/one/", {"topic": f"topic {n}"}, format="json")),
    "react": ("bob", lambda c, o, n: c.post(f"/api/messages/{o[n].pk}/reactions/", {"emoji": "👍"}, format="json")),
}


@pytest.mark.parametrize("action", list(REST))
def test_rest_over_budget_is_429_with_retry_after(action, api, alice, bob, carol, budget, clock):
    actor, request = REST[action]
    objects = WRITES[action][1](alice, bob, carol)
    client = api({"alice": alice, "bob": bob}[actor])
    budget(action, 1)
    assert request(client, objects, 0).status_code in (200, 201, 204)
    before = db_state()
    response = request(client, objects, 1)
    assert response.status_code == 429
    assert response["Retry-After"] == "45"
    assert response.json() == {"code": "rate_limited", "detail": response.json()["detail"]}
    assert response.json()["detail"].startswith("Slow down: at most 1 ")
    assert db_state() == before


def test_pages_over_budget_answer_429_with_retry_after(alice, bob, budget, clock):
    budget("room", 1)
    budget("join", 1)
    public(alice, "one"), public(alice, "two")
    pages = Client()
    pages.force_login(alice)
    assert pages.post("/rooms/", {"name": "First", "kind": "public"}).status_code == 302
    response = pages.post("/rooms/", {"name": "Second", "kind": "public"})
    assert (response.status_code, response["Retry-After"]) == (429, "45")
    assert "Slow down" in response.content.decode()
    pages.force_login(bob)
    assert pages.post("/rooms/one/join/").status_code == 302
    response = pages.post("/rooms/two/join/")
    assert (response.status_code, response["Retry-After"]) == (429, "45")


# Real daphne processes


def _day_window_left() -> float:
    return 86400 - time.time() % 86400


@pytest.fixture
def same_day():
    """The live tests count in a one-day window the server's clock keeps: start none just before midnight UTC."""
    if _day_window_left() < 60:
        time.sleep(_day_window_left() + 1)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
async def test_a_socket_bound_to_a_room_over_the_join_budget_closes_1013(alice, bob, same_day):
    await db(public)(alice, "one"), await db(public)(alice, "two")
    with run_daphne({**LIVE_ENV, "CHAT_WRITE_RATES": "join=1/day"}) as server:
        first = await ws_connect(server, bob, "/ws/chat/one/")
        await first.expect("room.joined")
        second = await ws_connect(server, bob, "/ws/chat/two/", hello=False)
        code, reason = await second.close_frame()
        assert code == 1013 and reason.startswith("Slow down: at most 1 room joins per 86400 seconds")
        await first.close()


def _rest(server, method, path, data, user):
    """(status, Retry-After, body) of a JSON request, as `user`."""
    import json

    request = Request(
        server.url + path,
        data=json.dumps(data).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {access_token(user)}"},
    )
    try:
        with urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Retry-After"), json.loads(response.read())
    except HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After"), json.loads(exc.read())


@pytest.mark.live
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_two_processes_share_one_budget(alice, bob, redis_url, same_day):
    """Edits over WebSocket on one process and REST on another spend one budget, kept in Redis."""
    room = await db(public)(alice, "one")
    await db(services.room_join)(user=bob, slug="one")
    sent = await db(send)(bob, room)
    env = {**LIVE_ENV, "REDIS_URL": redis_url, "CHAT_WRITE_RATES": "edit=3/day"}
    with run_daphne(env) as first, run_daphne(env) as second:
        on_first = await ws_connect(first, bob)
        for n in range(2):
            await on_first.send(type="message.edit", id=sent.pk, body=f"ws {n}", ref=f"e{n}")
            await on_first.expect("message.updated", ref=f"e{n}")
        status, _, edited = await asyncio.to_thread(
            _rest, second, "PATCH", f"/api/messages/{sent.pk}/", {"body": "rest"}, bob
        )
        assert (status, edited["body"]) == (200, "rest")
        # Three spent, on two processes: the fourth is refused on both.
        status, retry_after, refusal = await asyncio.to_thread(
            _rest, first, "PATCH", f"/api/messages/{sent.pk}/", {"body": "too many"}, bob
        )
        assert (status, refusal["code"]) == (429, "rate_limited") and 1 <= int(retry_after) <= 86400
        on_second = await ws_connect(second, bob)
        await on_second.send(type="message.edit", id=sent.pk, body="too many", ref="e3")
        error = await on_second.expect("error", ref="e3")
        assert error["code"] == "rate_limited" and 1 <= error["retry_after"] <= 86400
        await on_first.close(), await on_second.close()
    assert await db(lambda: Message.objects.get(pk=sent.pk).body)() == "rest"
