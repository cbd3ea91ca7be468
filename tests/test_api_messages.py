"""REST messages: history pages, sending (live and idempotent), editing, deleting and read markers."""

import types

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import limits, services
from chat.models import Membership, Message
from tests.support import db_state, frames, joined, private_room, public_room

User = get_user_model()


def fill(room, authors, count):
    """`count` messages in `room`, cycling through `authors`; returns their ids ascending."""
    Message.objects.bulk_create(
        [Message(room=room, author=authors[i % len(authors)], body=f"m{i}") for i in range(count)]
    )
    return list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))


def ids(response) -> list[int]:
    return [m["id"] for m in response.json()["results"]]


# History


def test_history_around_a_message_centres_the_page(api, alice, bob, django_assert_max_num_queries):
    room = public_room(alice)
    all_ids = fill(room, [alice], 60)
    middle = all_ids[30]
    with django_assert_max_num_queries(6):
        page = api(bob).get(f"/api/rooms/general/messages/?around={middle}&limit=10")
    assert page.status_code == 200
    assert ids(page) == all_ids[26:36] and middle in ids(page)
    assert page.json()["has_more_before"] is True and page.json()["has_more_after"] is True
    # Near an end, the other side fills the page.
    edge = api(bob).get(f"/api/rooms/general/messages/?around={all_ids[-1]}&limit=10").json()
    assert [m["id"] for m in edge["results"]] == all_ids[-10:]
    assert (edge["has_more_before"], edge["has_more_after"]) == (True, False)
    start = api(bob).get(f"/api/rooms/general/messages/?around={all_ids[1]}&limit=10").json()
    assert [m["id"] for m in start["results"]] == all_ids[:10]
    assert (start["has_more_before"], start["has_more_after"]) == (False, True)
    whole = api(bob).get(f"/api/rooms/general/messages/?around={all_ids[1]}&limit=60").json()
    assert [m["id"] for m in whole["results"]] == all_ids
    assert (whole["has_more_before"], whole["has_more_after"]) == (False, False)
    one = api(bob).get(f"/api/rooms/general/messages/?around={middle}&limit=1").json()
    assert [m["id"] for m in one["results"]] == [middle]
    assert api(bob).get("/api/rooms/general/messages/?around=-1").status_code == 400


def test_history_pages_by_id(api, alice, bob):
    room = public_room(alice)
    all_ids = fill(room, [alice], 60)  # plus nothing else: room_create writes no message

    newest = api(bob).get("/api/rooms/general/messages/")  # any user may read a public room
    assert newest.status_code == 200
    assert ids(newest) == all_ids[-50:]
    assert newest.json()["has_more"] is True

    older = api(bob).get(f"/api/rooms/general/messages/?before={all_ids[-50]}")
    assert ids(older) == all_ids[:10]
    assert older.json()["has_more"] is False

    forward = api(bob).get(f"/api/rooms/general/messages/?after={all_ids[4]}&limit=5")
    assert ids(forward) == all_ids[5:10]
    assert forward.json()["has_more"] is True
    last = api(bob).get(f"/api/rooms/general/messages/?after={all_ids[-3]}&limit=5")
    assert (ids(last), last.json()["has_more"]) == (all_ids[-2:], False)

    window = api(bob).get(f"/api/rooms/general/messages/?after={all_ids[0]}&before={all_ids[4]}")
    assert (ids(window), window.json()["has_more"]) == (all_ids[1:4], False)


def test_history_shows_the_one_message_shape(api, alice):
    public_room(alice)
    message, _ = services.message_send(user=alice, slug="general", body="hello", client_id="c-1")
    services.message_delete(user=alice, message_id=services.message_send(user=alice, slug="general", body="oops")[0].pk)
    first, second = api(alice).get("/api/rooms/general/messages/").json()["results"]
    assert first == {
        "id": message.pk,
        "room": "general",
        "author": {"id": alice.pk, "username": "alice"},
        "body": "hello",
        "kind": "user",
        "client_id": "c-1",
        "created_at": first["created_at"],
        "edited_at": None,
        "deleted": False,
        "html": "<p>hello</p>",
        "reply_to": None,
        "thread": None,
        "reply_count": 0,
        "mentions": [],
        "mentions_room": False,
        "reactions": [],
        "attachments": [],
        "seq": message.seq,
    }
    assert first["created_at"].endswith("Z")
    assert (second["deleted"], second["body"]) == (True, "")


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=ten", "before=0", "before=x", "after=-1"])
def test_history_rejects_bad_parameters(api, alice, query):
    public_room(alice)
    response = api(alice).get(f"/api/rooms/general/messages/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/rooms/secret/messages/", 403),
        ("/api/rooms/nowhere/messages/", 404),
        ("/api/rooms/NO/messages/", 404),
    ],
)
def test_history_refusals(api, alice, bob, path, status):
    private_room(alice)
    assert api(bob).get(path).status_code == status


def test_history_runs_a_constant_number_of_queries(api, alice):
    room = public_room(alice)
    User.objects.bulk_create([User(username=f"user{i}") for i in range(30)])
    fill(room, list(User.objects.all()), 300)
    client = api(alice)

    counts = {}
    for limit in (5, 100, 200):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/api/rooms/general/messages/?limit={limit}")
        assert len(response.json()["results"]) == limit
        assert len({m["author"]["id"] for m in response.json()["results"]}) == min(limit, 31)
        counts[limit] = len(queries)
    assert counts[5] == counts[100] == counts[200] <= 4, counts


# Sending


def test_send_persists_and_publishes(api, alice, published, django_capture_on_commit_callbacks):
    public_room(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).post(
            "/api/rooms/general/messages/", {"body": "hi there", "client_id": "k1"}, format="json"
        )
    assert response.status_code == 201
    message = Message.objects.get(kind="user")
    assert response.json() == {
        **response.json(),
        "id": message.pk,
        "body": "hi there",
        "client_id": "k1",
        "author": {"id": alice.pk, "username": "alice"},
        "room": "general",
    }
    [frame] = frames(published, "message.new")
    assert frame == {"type": "message.new", "room": "general", "message": response.json()}
    [(group, event)] = [(g, e) for g, e in published if e.get("frame") == frame]
    assert group == f"room.{message.room_id}" and event["origin"] is None  # every connection gets it


def test_a_repeated_client_id_creates_one_message(api, alice, published, django_capture_on_commit_callbacks):
    public_room(alice)
    with django_capture_on_commit_callbacks(execute=True):
        first = api(alice).post("/api/rooms/general/messages/", {"body": "once", "client_id": "same"}, format="json")
        again = api(alice).post("/api/rooms/general/messages/", {"body": "once", "client_id": "same"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert Message.objects.filter(kind="user").count() == 1
    assert len(frames(published, "message.new")) == 1


@pytest.mark.parametrize(
    "slug, data, status, error",
    [
        ("general", {}, 400, "body"),  # a field error names the field
        ("general", {"body": "x", "client_id": "c" * 65}, 400, "client_id"),
        ("general", {"body": "x", "kind": "system"}, 400, "kind"),
        ("general", {"body": "   "}, 400, "invalid"),  # a service error has a code
        ("secret", {"body": "x"}, 403, "forbidden"),
        ("nowhere", {"body": "x"}, 404, "not_found"),
        ("lobby", {"body": "x"}, 403, "forbidden"),  # public, but bob has not joined
        ("locked", {"body": "x"}, 403, "room_locked"),
    ],
)
def test_send_refusals_change_nothing(api, alice, bob, slug, data, status, error):
    joined(public_room(alice), bob)
    public_room(alice, "lobby")
    private_room(alice)
    joined(public_room(alice, "locked"), bob)
    services.room_update(user=alice, slug="locked", locked=True)
    before = db_state()
    response = api(bob).post(f"/api/rooms/{slug}/messages/", data, format="json")
    assert response.status_code == status
    assert error in response.json() or response.json()["code"] == error
    assert db_state() == before


def test_a_body_over_the_limit_is_413(api, alice, settings):
    public_room(alice)
    settings.CHAT_MAX_BODY = 10
    before = db_state()
    response = api(alice).post("/api/rooms/general/messages/", {"body": "x" * 11}, format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert db_state() == before
    assert api(alice).post("/api/rooms/general/messages/", {"body": "x" * 10}, format="json").status_code == 201


def test_sending_too_fast_is_429_with_retry_after(api, alice, settings, monkeypatch):
    public_room(alice)
    settings.CHAT_RATE_PER_10S = 2
    # A frozen clock keeps all three sends in one rate window.
    monkeypatch.setattr(limits, "time", types.SimpleNamespace(time=lambda: 1_000_003.0))
    client = api(alice)
    for body in ("a", "b"):
        assert client.post("/api/rooms/general/messages/", {"body": body}, format="json").status_code == 201
    before = db_state()
    response = client.post("/api/rooms/general/messages/", {"body": "c"}, format="json")
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert response["Retry-After"] == "7"
    assert db_state() == before


# Editing and deleting


def test_author_edits_a_message(api, alice, published, django_capture_on_commit_callbacks):
    public_room(alice)
    message, _ = services.message_send(user=alice, slug="general", body="helo")
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).patch(f"/api/messages/{message.pk}/", {"body": "hello"}, format="json")
    assert response.status_code == 200
    assert (response.json()["body"], response.json()["edited_at"] is not None) == ("hello", True)
    message.refresh_from_db()
    assert message.body == "hello"
    assert frames(published, "message.updated") == [
        {"type": "message.updated", "room": "general", "message": response.json()}
    ]


def test_a_moderator_edits_and_deletes_others_messages(api, alice, bob):
    joined(public_room(alice), bob)
    message, _ = services.message_send(user=bob, slug="general", body="rude")
    assert api(alice).patch(f"/api/messages/{message.pk}/", {"body": "[removed]"}, format="json").status_code == 200
    assert api(alice).delete(f"/api/messages/{message.pk}/").status_code == 204
    message.refresh_from_db()
    assert (message.body, message.deleted) == ("[removed]", True)


@pytest.mark.parametrize(
    "who, target, data, status",
    [
        ("bob", "alices", {"body": "mine now"}, 403),  # another member's message
        ("carol", "secret", {"body": "x"}, 403),  # a room carol cannot see
        ("alice", "alices", {}, 400),
        ("alice", "alices", {"body": " "}, 400),
        ("alice", "missing", {"body": "x"}, 404),
        ("alice", "system", {"body": "x"}, 403),
    ],
)
def test_edit_refusals_change_nothing(api, alice, bob, carol, who, target, data, status):
    joined(public_room(alice), bob)
    private_room(alice)
    targets = {
        "alices": services.message_send(user=alice, slug="general", body="original")[0].pk,
        "secret": services.message_send(user=alice, slug="secret", body="hidden")[0].pk,
        "system": Message.objects.get(kind="system").pk,  # "bob joined"
        "missing": 10**9,
    }
    before = db_state()
    caller = {"alice": alice, "bob": bob, "carol": carol}[who]
    response = api(caller).patch(f"/api/messages/{targets[target]}/", data, format="json")
    assert response.status_code == status
    assert db_state() == before


def test_an_edit_over_the_limit_is_413(api, alice, settings):
    public_room(alice)
    message, _ = services.message_send(user=alice, slug="general", body="short")
    settings.CHAT_MAX_BODY = 10
    before = db_state()
    response = api(alice).patch(f"/api/messages/{message.pk}/", {"body": "x" * 11}, format="json")
    assert (response.status_code, response.json()["code"]) == (413, "too_large")
    assert db_state() == before


def test_author_deletes_a_message(api, alice, published, django_capture_on_commit_callbacks):
    public_room(alice)
    message, _ = services.message_send(user=alice, slug="general", body="oops")
    with django_capture_on_commit_callbacks(execute=True):
        assert api(alice).delete(f"/api/messages/{message.pk}/").status_code == 204
    message.refresh_from_db()
    assert message.deleted
    assert frames(published, "message.deleted") == [{"type": "message.deleted", "room": "general", "id": message.pk}]


@pytest.mark.parametrize(
    "who, target, status",
    [
        ("bob", "alices", 403),  # a plain member, not the author
        ("carol", "secret", 403),  # a room carol cannot see
        ("alice", "missing", 404),
    ],
)
def test_delete_refusals_change_nothing(api, alice, bob, carol, who, target, status):
    joined(public_room(alice), bob)
    private_room(alice)
    targets = {
        "alices": services.message_send(user=alice, slug="general", body="keep me")[0].pk,
        "secret": services.message_send(user=alice, slug="secret", body="hidden")[0].pk,
        "missing": 10**9,
    }
    before = db_state()
    caller = {"alice": alice, "bob": bob, "carol": carol}[who]
    assert api(caller).delete(f"/api/messages/{targets[target]}/").status_code == status
    assert db_state() == before


# Read markers


def test_read_marker_moves_forward_only(api, alice, bob, published, django_capture_on_commit_callbacks):
    joined(public_room(alice), bob)
    first, _ = services.message_send(user=alice, slug="general", body="one")
    services.message_send(user=alice, slug="general", body="two")
    with django_capture_on_commit_callbacks(execute=True):
        response = api(bob).post("/api/rooms/general/read/", {"message_id": first.pk}, format="json")
    assert response.status_code == 200
    assert response.json() == {"room": "general", "last_read_id": first.pk, "unread": 1, "mentions": 0}
    assert frames(published, "unread") == [
        {"type": "unread", "room": "general", "count": 1, "last_read_id": first.pk, "mentions": 0}
    ]

    stale = api(bob).post("/api/rooms/general/read/", {"message_id": first.pk - 1}, format="json")
    assert stale.json() == {"room": "general", "last_read_id": first.pk, "unread": 1, "mentions": 0}
    assert Membership.objects.get(room__slug="general", user=bob).last_read_id == first.pk


@pytest.mark.parametrize(
    "slug, data, status",
    [
        ("general", {}, 400),
        ("general", {"message_id": -1}, 400),
        ("general", {"message_id": "latest"}, 400),
        ("lobby", {"message_id": 1}, 403),  # not a member
        ("nowhere", {"message_id": 1}, 404),
    ],
)
def test_read_refusals_change_nothing(api, alice, bob, slug, data, status):
    joined(public_room(alice), bob)
    public_room(alice, "lobby")
    before = db_state()
    assert api(bob).post(f"/api/rooms/{slug}/read/", data, format="json").status_code == status
    assert db_state() == before
