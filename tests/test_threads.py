"""Replies and threads: `reply_to` over WebSocket and REST, the root's `reply_count` told to every
subscriber, refused replies, and `GET /api/messages/<id>/thread/`."""

import pytest

from chat import services
from chat.errors import Invalid
from chat.models import Message
from tests.support import connect, db, frames, joined, private_room, public_room, snapshot


def send(user, body, **kwargs) -> Message:
    return services.message_send(user=user, slug=kwargs.pop("slug", "general"), body=body, **kwargs)[0]


def is_message(pk):
    return lambda frame: frame["message"]["id"] == pk


# Sending a reply


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_a_reply_over_websocket_joins_the_thread_and_every_subscriber_sees_the_root_counted(
    alice, bob, general_with_bob
):
    a, b = await connect(alice), await connect(bob)
    await a.send(type="message.send", room="general", body="question?")
    root = (await a.expect("message.new"))["message"]
    await b.expect("message.new", where=is_message(root["id"]))

    await b.send(type="message.send", room="general", body="answer", reply_to=root["id"], ref="r")
    reply = (await b.expect("message.new", ref="r"))["message"]
    assert (reply["reply_to"], reply["thread"], reply["reply_count"]) == (root["id"], root["id"], 0)
    assert (await a.expect("message.new", where=is_message(reply["id"])))["message"] == reply
    for client in (a, b):  # after the reply (b: its acknowledgement), its root with the new count and a later seq
        updated = (await client.expect("message.updated", where=is_message(root["id"])))["message"]
        assert updated["reply_count"] == 1 and updated["seq"] > reply["seq"] > root["seq"]
        assert updated["body"] == "question?" and updated["thread"] is None

    # A reply to a reply answers it, and joins the root's thread.
    await a.send(type="message.send", room="general", body="thanks", reply_to=reply["id"], ref="t")
    second = (await a.expect("message.new", ref="t"))["message"]
    assert (second["reply_to"], second["thread"]) == (reply["id"], root["id"])
    for client in (a, b):
        updated = (await client.expect("message.updated", where=is_message(root["id"])))["message"]
        assert updated["reply_count"] == 2 and updated["seq"] > second["seq"]
    replies = Message.objects.filter(kind="user").order_by("id").values_list("reply_to", "thread", "reply_count")
    stored = await db(list)(replies)
    assert stored == [(None, None, 2), (root["id"], root["id"], 0), (reply["id"], root["id"], 0)]
    await a.close(), await b.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_a_reply_over_websocket_to_no_message_is_invalid_and_stores_nothing(alice, general):
    a = await connect(alice)
    await a.send(type="message.send", room="general", body="lost", reply_to=999_999, ref="x")
    error = await a.expect("error", ref="x")
    assert error["code"] == "invalid" and "reply_to" in error["detail"]
    assert not await db(Message.objects.filter(body="lost").exists)()
    await a.close()


def test_a_reply_over_rest_is_stored_and_its_root_updated_after_it(
    api, alice, bob, general_with_bob, published, committed
):
    root = send(alice, "question?")
    with committed():
        response = api(bob).post("/api/rooms/general/messages/", {"body": "answer", "reply_to": root.pk}, format="json")
    assert response.status_code == 201
    reply = response.json()
    assert (reply["reply_to"], reply["thread"]) == (root.pk, root.pk)
    assert Message.objects.filter(pk=reply["id"], reply_to=root, thread=root).exists()
    new, updated = frames(published)  # the reply's message.new, then its root's message.updated
    assert (new["type"], new["message"]) == ("message.new", reply)
    assert (updated["type"], updated["message"]["id"], updated["message"]["reply_count"]) == (
        "message.updated",
        root.pk,
        1,
    )
    assert updated["message"]["seq"] > reply["seq"]


@pytest.mark.parametrize("target", ["other_room", "deleted", "missing"])
def test_a_reply_to_a_message_it_cannot_answer_is_invalid_and_stores_nothing(
    api, alice, bob, general_with_bob, target, published, committed
):
    elsewhere = public_room(bob, slug="elsewhere")
    answerable = {
        "other_room": lambda: send(bob, "there", slug=elsewhere.slug).pk,
        "deleted": lambda: services.message_delete(user=alice, message_id=send(alice, "gone").pk).pk,
        "missing": lambda: 999_999,
    }[target]()
    published.clear()
    before = snapshot()
    with committed():
        response = api(bob).post("/api/rooms/general/messages/", {"body": "re", "reply_to": answerable}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid", response.json()
    assert "reply_to" in response.json()["detail"]
    assert snapshot() == before and published == []


def test_a_reply_to_that_is_not_an_id_is_refused_by_the_service_too(alice, general, refused):
    for bad in (0, -1, True, "1"):
        with refused(Invalid, match="reply_to"):
            services.message_send(user=alice, slug="general", body="re", reply_to=bad)


def test_a_batch_with_several_replies_to_one_root_counts_them_all(alice, bob, general_with_bob, published, committed):
    root, other = send(alice, "root"), send(alice, "other root")
    first = send(bob, "first", reply_to=root.pk)
    published.clear()
    requests = [
        dict(user=bob, slug="general", body="a", reply_to=root.pk),
        dict(user=alice, slug="general", body="b", reply_to=first.pk),
        dict(user=bob, slug="general", body="c", reply_to=999_999),  # refused alone
        dict(user=alice, slug="general", body="d", reply_to=other.pk),
        dict(user=bob, slug="general", body="e", reply_to=root.pk),
    ]
    with committed():
        results = services.message_send_batch(requests)
    assert isinstance(results[2], Invalid)
    written = [result[0] for index, result in enumerate(results) if index != 2]
    assert [m.thread_id for m in written] == [root.pk, root.pk, other.pk, root.pk]
    root.refresh_from_db(), other.refresh_from_db()
    assert (root.reply_count, other.reply_count) == (4, 1)
    assert Message.objects.filter(thread=root).count() == 4
    # Each root once, with its final count, after every message.new of the batch.
    sent = frames(published)
    updates = [frame["message"] for frame in sent if frame["type"] == "message.updated"]
    assert sorted((m["id"], m["reply_count"]) for m in updates) == [(root.pk, 4), (other.pk, 1)]
    assert [frame["type"] for frame in sent] == ["message.new"] * 4 + ["message.updated"] * 2
    assert min(m["seq"] for m in updates) > max(m.seq for m in written)


# The thread endpoint


@pytest.fixture
def thread(alice, bob, general_with_bob):
    """A root by alice and five replies (the third answers the second), ids ascending."""
    root = send(alice, "root")
    replies = []
    for n in range(5):
        answered = replies[1].pk if n == 2 else root.pk
        replies.append(send(bob if n % 2 else alice, f"reply {n}", reply_to=answered))
    send(alice, "not in the thread")
    return root, replies


def test_the_thread_pages_its_replies_ascending_after_an_id(api, bob, thread, django_assert_max_num_queries):
    root, replies = thread
    with django_assert_max_num_queries(6):
        first = api(bob).get(f"/api/messages/{root.pk}/thread/?limit=2")
    assert first.status_code == 200
    page = first.json()
    assert page["root"]["id"] == root.pk and page["root"]["reply_count"] == 5
    assert [m["id"] for m in page["results"]] == [r.pk for r in replies[:2]] and page["has_more"] is True
    rest = api(bob).get(f"/api/messages/{root.pk}/thread/?after={replies[1].pk}&limit=3").json()
    assert [m["id"] for m in rest["results"]] == [r.pk for r in replies[2:]] and rest["has_more"] is False
    assert rest["results"][0]["reply_to"] == replies[1].pk and rest["results"][0]["thread"] == root.pk
    default = api(bob).get(f"/api/messages/{root.pk}/thread/").json()
    assert [m["id"] for m in default["results"]] == [r.pk for r in replies] and default["has_more"] is False
    for bad in ("limit=0", "limit=201", "after=-1", "after=x"):
        assert api(bob).get(f"/api/messages/{root.pk}/thread/?{bad}").status_code == 400


def test_the_thread_of_a_reply_is_its_roots_and_a_message_without_replies_is_a_thread_of_one(api, alice, thread):
    root, replies = thread
    via_reply = api(alice).get(f"/api/messages/{replies[3].pk}/thread/").json()
    assert via_reply == api(alice).get(f"/api/messages/{root.pk}/thread/").json()
    alone = send(alice, "nobody answers")
    page = api(alice).get(f"/api/messages/{alone.pk}/thread/").json()
    assert (page["root"]["id"], page["results"], page["has_more"]) == (alone.pk, [], False)


def test_a_deleted_reply_shows_as_deleted_in_its_thread(api, alice, bob, thread):
    root, replies = thread
    services.message_delete(user=bob, message_id=replies[1].pk)
    results = api(alice).get(f"/api/messages/{root.pk}/thread/").json()["results"]
    shown = results[1]
    assert shown["id"] == replies[1].pk and shown["deleted"] is True and shown["body"] == shown["html"] == ""
    assert [m["id"] for m in results] == [r.pk for r in replies]


def test_the_thread_is_for_readers_of_the_room_only(api, alice, bob, carol, staff):
    private_room(alice, members=[carol])
    root = send(alice, "secret root", slug="secret")
    send(carol, "secret reply", slug="secret", reply_to=root.pk)
    outsider = api(bob).get(f"/api/messages/{root.pk}/thread/")
    assert outsider.status_code == 404 and outsider.json() == {"detail": f"No message {root.pk}.", "code": "not_found"}
    missing = api(bob).get("/api/messages/999999/thread/")  # the same answer: the id says nothing about the room
    assert missing.status_code == 404 and missing.json() == {"detail": "No message 999999.", "code": "not_found"}
    assert api().get(f"/api/messages/{root.pk}/thread/").status_code == 401
    for reader in (carol, staff):
        page = api(reader).get(f"/api/messages/{root.pk}/thread/").json()
        assert [m["body"] for m in page["results"]] == ["secret reply"]
    # A public room may be read by anyone signed in, as its history.
    joined(public_room(alice), carol)
    public = send(alice, "public root")
    assert api(bob).get(f"/api/messages/{public.pk}/thread/").status_code == 200
