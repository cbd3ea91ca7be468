"""Reactions (PROTOCOL.md Version 2): chat/services/reactions.py, the `reaction.add` /
`reaction.remove` frames and `POST / DELETE /api/messages/<id>/reactions/`."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from chat import services, sql
from chat.errors import Forbidden, Invalid, Muted, NotFound, RateLimited, RoomLocked
from chat.models import Membership, Message, Reaction, Room
from tests.support import connect, db, frames, private_room, send

GOOD = ["👍", "👍🏽", "🇨🇳", "👨\u200d👩\u200d👧", "❤️", ":smile:", ":+1:", ":thumbs_up-2:"]
BAD = ["ab", "👍👍", "", "👍a", "ok 👍", ":Smile:", "::", ":" + "a" * 33 + ":", " 👍", 7, None]


def add(user, message, emoji="👍", **kwargs):
    return services.reaction_add(user=user, message_id=message.pk, emoji=emoji, **kwargs)


def remove(user, message, emoji="👍", **kwargs):
    return services.reaction_remove(user=user, message_id=message.pk, emoji=emoji, **kwargs)


def room_seq(message) -> int:
    return Room.objects.get(pk=message.room_id).change_seq


# The service


@pytest.mark.django_db
def test_add_takes_a_seq_and_publishes_the_whole_message(alice, bob, general_with_bob, published, committed):
    message = send(alice, general_with_bob, "hi")
    with committed():
        result = add(bob, message, origin="conn-1")
    message.refresh_from_db()
    assert result.reactions == message.reactions == [{"emoji": "👍", "count": 1, "users": ["bob"]}]
    assert message.seq == room_seq(message) and message.seq > 0
    [updated] = frames(published, "message.updated")
    assert updated["message"]["reactions"] == message.reactions and updated["message"]["seq"] == message.seq
    assert [event["origin"] for _, event in published] == ["conn-1"]


@pytest.mark.django_db
def test_repeats_change_nothing(alice, bob, general_with_bob, published, committed):
    message = send(alice, general_with_bob, "hi")
    add(bob, message)
    seq = room_seq(message)
    with committed():
        again = add(bob, message)
        absent = remove(bob, message, "🎉")
    assert published == [] and room_seq(message) == seq
    assert again.reactions == absent.reactions == [{"emoji": "👍", "count": 1, "users": ["bob"]}]
    remove(bob, message)
    with committed():
        remove(bob, message)
    assert published == [] and room_seq(message) == seq + 1
    assert Message.objects.get(pk=message.pk).reactions == []


@pytest.mark.django_db
def test_seq_rises_with_every_change_and_matches_the_room(alice, bob, general_with_bob):
    message = send(alice, general_with_bob, "hi")
    seqs = []
    for step in (lambda: add(alice, message), lambda: add(bob, message, "🎉"), lambda: remove(alice, message)):
        seqs.append(step().seq)
        assert seqs[-1] == room_seq(message)
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


@pytest.mark.django_db
def test_summary_order_of_first_use_exact_count_and_twenty_users(make_user, alice, general):
    message = send(alice, general, "vote")
    users = [make_user(f"u{i:02}") for i in range(25)]
    for user in users:
        services.room_join(user=user, slug="general")
    add(users[0], message, "🎉")
    for user in users:
        add(user, message, "👍")
    result = add(alice, message, "🎉")
    assert [entry["emoji"] for entry in result.reactions] == ["🎉", "👍"]
    party, thumbs = result.reactions
    assert (party["count"], party["users"]) == (2, ["u00", "alice"])
    assert thumbs["count"] == 25 and thumbs["users"] == [f"u{i:02}" for i in range(20)]
    # 🎉 keeps its place while a reaction with it remains, even without the first one.
    result = remove(users[0], message, "🎉")
    assert [entry["emoji"] for entry in result.reactions] == ["🎉", "👍"]
    assert result.reactions[0] == {"emoji": "🎉", "count": 1, "users": ["alice"]}
    # Once none remains, it is new again when it comes back: last.
    remove(alice, message, "🎉")
    result = add(users[1], message, "🎉")
    assert [entry["emoji"] for entry in result.reactions] == ["👍", "🎉"]


@pytest.mark.django_db
@pytest.mark.parametrize("emoji", GOOD)
def test_accepted_emoji(alice, general, emoji):
    message = send(alice, general)
    assert add(alice, message, emoji).reactions == [{"emoji": emoji, "count": 1, "users": ["alice"]}]


@pytest.mark.django_db
@pytest.mark.parametrize("emoji", BAD)
def test_refused_emoji_name_the_field(alice, general, emoji, refused):
    message = send(alice, general)
    with refused(Invalid) as info:
        add(alice, message, emoji)
    assert info.value.code == "invalid" and info.value.detail.startswith("emoji:")
    with refused(Invalid):
        remove(alice, message, emoji)


@pytest.mark.django_db
def test_twentieth_distinct_emoji_is_the_last(alice, bob, general_with_bob, refused):
    message = send(alice, general_with_bob)
    for i in range(20):
        add(alice, message, f":e{i}:")
    with refused(Invalid, match="at most 20"):
        add(bob, message, ":e20:")
    assert add(bob, message, ":e0:").reactions[0]["count"] == 2  # adding to one in use is fine
    remove(alice, message, ":e19:")
    assert len(add(bob, message, ":e20:").reactions) == 20


@pytest.mark.django_db
def test_deleted_and_system_messages_take_none(alice, bob, general_with_bob, refused):
    system = Message.objects.filter(kind=Message.Kind.SYSTEM).first()
    with refused(Invalid):
        add(alice, system)
    message = send(alice, general_with_bob)
    add(bob, message)
    services.message_delete(user=alice, message_id=message.pk)
    with refused(Invalid, match="deleted"):
        add(bob, message, "🎉")
    with refused(Invalid, match="deleted"):
        remove(bob, message)
    # Hidden while deleted, kept for a restore.
    assert services.message_restore(user=alice, message_id=message.pk).reactions[0]["users"] == ["bob"]


@pytest.mark.django_db
def test_muted_locked_banned_and_outsiders_are_refused(alice, bob, carol, staff, general_with_bob, refused):
    message = send(alice, general_with_bob)
    Membership.objects.filter(user=bob).update(muted_until=timezone.now() + timedelta(seconds=60))
    with refused(Muted):
        add(bob, message)
    Membership.objects.filter(user=bob).update(muted_until=None)
    services.room_update(user=alice, slug="general", locked=True)
    with refused(RoomLocked):
        add(bob, message)
    assert add(staff, message).reactions[0]["users"] == ["root"]  # staff write in locked rooms
    services.room_update(user=alice, slug="general", locked=False)
    services.member_ban(actor=alice, slug="general", username="bob")
    with refused(Forbidden):
        add(bob, message)
    secret = private_room(alice)
    hidden = send(alice, secret)
    with refused(Forbidden):
        add(carol, hidden)
    with refused(NotFound):
        services.reaction_add(user=carol, message_id=10**9, emoji="👍")


@pytest.mark.django_db
def test_a_public_room_reader_may_react(alice, carol, general):
    """The right to read the room is enough: a public room's non-member reads it."""
    message = send(alice, general)
    assert add(carol, message).reactions[0]["users"] == ["carol"]


@pytest.mark.django_db
def test_rate_budget(alice, general, settings, refused):
    settings.CHAT_WRITE_RATES = {**settings.CHAT_WRITE_RATES, "react": (2, 60)}
    message = send(alice, general)
    add(alice, message, "🎉")
    remove(alice, message, "🎉")
    with refused(RateLimited):
        add(alice, message)
    assert Reaction.objects.count() == 0


@pytest.mark.django_db
def test_refused_and_repeated_reactions_cost_no_budget(alice, general, settings):
    settings.CHAT_WRITE_RATES = {**settings.CHAT_WRITE_RATES, "react": (1, 60)}
    message = send(alice, general)
    for _ in range(3):
        with pytest.raises(Invalid):
            add(alice, message, "nope")
        remove(alice, message)  # absent: nothing to do
    assert add(alice, message).reactions
    assert add(alice, message).reactions  # already there


@pytest.mark.django_db
def test_a_change_made_first_by_a_racing_request_takes_no_seq(alice, general, monkeypatch, published, committed):
    """The check before the transaction saw the reaction; by the time the room is locked a
    racing request of the same user removed it: the seq taken is rolled back, nothing is sent."""
    message = send(alice, general)
    add(alice, message)
    seq, real = room_seq(message), sql.next_seq

    def racing(room_id):
        Reaction.objects.filter(message=message).delete()
        return real(room_id)

    monkeypatch.setattr(sql, "next_seq", racing)
    with committed():
        result = remove(alice, message)
    assert published == [] and room_seq(message) == seq and result.seq == seq
    assert Reaction.objects.count() == 1  # the racing delete was this test's stand-in, rolled back too


@pytest.mark.postgres  # SQLite has a single writer, so transactions cannot interleave there
def test_concurrent_reactions_on_one_message_all_count(transactional_db, settings, make_user):
    settings.CHAT_WRITE_RATES = {**settings.CHAT_WRITE_RATES, "react": (1000, 60)}
    owner = make_user("owner")
    room = services.room_create(user=owner, name="Busy")
    message = send(owner, room, "react to me")
    users = [make_user(f"r{i}") for i in range(8)]
    for user in users:
        services.room_join(user=user, slug="busy")
    barrier, errors, seqs = threading.Barrier(len(users)), [], []

    def react(user):
        try:
            barrier.wait()
            for emoji in ("👍", "🎉", ":ok:"):
                seqs.append(services.reaction_add(user=user, message_id=message.pk, emoji=emoji).seq)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=react, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    message.refresh_from_db()
    assert [(entry["emoji"], entry["count"]) for entry in message.reactions] == [("👍", 8), ("🎉", 8), (":ok:", 8)]
    assert len(set(seqs)) == len(seqs) == 24
    assert message.seq == max(seqs) == room_seq(message)


# WebSocket


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_reaction_frames_reach_the_room(alice, bob, general):
    await db(services.room_join)(user=bob, slug="general")
    message = await db(send)(alice, general, "hi")
    a, b = await connect(alice), await connect(bob)
    await b.send(type="reaction.add", id=message.pk, emoji="👍🏽", ref="r1")
    reply = await b.expect("message.updated")
    assert reply["ref"] == "r1"
    assert reply["message"]["reactions"] == [{"emoji": "👍🏽", "count": 1, "users": ["bob"]}]
    assert reply["message"]["seq"] > message.seq
    seen = await a.expect("message.updated")
    assert seen["message"] == reply["message"] and "ref" not in seen
    await b.send(type="reaction.add", id=message.pk, emoji="👍🏽", ref="again")
    repeat = await b.expect("message.updated")  # the message as it stands; no broadcast
    assert repeat["ref"] == "again" and repeat["message"] == reply["message"]
    await b.send(type="reaction.remove", id=message.pk, emoji="👍🏽", ref="r2")
    reply2 = await b.expect("message.updated")
    assert reply2["ref"] == "r2" and reply2["message"]["reactions"] == []
    assert reply2["message"]["seq"] > reply["message"]["seq"]
    assert (await a.expect("message.updated"))["message"]["seq"] == reply2["message"]["seq"]
    await a.close(), await b.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_reaction_frame_errors(alice, general):
    message = await db(send)(alice, general, "hi")
    a = await connect(alice)
    await a.send(type="reaction.add", id=10**9, emoji="👍", ref="x")
    err = await a.expect("error")
    assert (err["code"], err["ref"]) == ("not_found", "x")
    await a.send(type="reaction.add", id=message.pk, emoji="👍👍", ref="y")
    err = await a.expect("error")
    assert (err["code"], err["ref"]) == ("invalid", "y") and "emoji" in err["detail"]
    await a.send(type="reaction.add", id=message.pk, ref="z")
    assert (await a.expect("error"))["code"] == "invalid"
    await a.nothing()
    assert await db(Reaction.objects.count)() == 0
    assert (await db(Message.objects.get)(pk=message.pk)).seq == message.seq
    await a.close()


# REST


@pytest.mark.django_db
def test_rest_add_and_remove_answer_with_the_message(api, alice, bob, general_with_bob):
    message = send(alice, general_with_bob, "hi")
    url = f"/api/messages/{message.pk}/reactions/"
    response = api(bob).post(url, {"emoji": "🇨🇳"}, format="json")
    assert response.status_code == 200
    assert response.json()["id"] == message.pk
    assert response.json()["reactions"] == [{"emoji": "🇨🇳", "count": 1, "users": ["bob"]}]
    assert api(bob).post(url, {"emoji": "🇨🇳"}, format="json").json() == response.json()  # a repeat
    response = api(bob).delete(url, {"emoji": "🇨🇳"}, format="json")
    assert response.status_code == 200 and response.json()["reactions"] == []
    assert api(bob).delete(url, {"emoji": "🇨🇳"}, format="json").status_code == 200
    api(bob).post(url, {"emoji": ":ok:"}, format="json")
    assert api(bob).delete(url + "?emoji=:ok:").json()["reactions"] == []  # no body: the query


@pytest.mark.django_db
def test_rest_errors(api, alice, carol, general):
    message = send(alice, general, "hi")
    secret = send(alice, private_room(alice), "psst")
    url = f"/api/messages/{message.pk}/reactions/"
    response = api(alice).post(url, {"emoji": "ab"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert "emoji" in response.json()["detail"]
    assert api(alice).post(url, {}, format="json").status_code == 400
    assert api(alice).post("/api/messages/999999/reactions/", {"emoji": "👍"}, format="json").status_code == 404
    assert api(carol).post(f"/api/messages/{secret.pk}/reactions/", {"emoji": "👍"}, format="json").status_code == 403
    assert api().post(url, {"emoji": "👍"}, format="json").status_code == 401
    assert Reaction.objects.count() == 0


@pytest.mark.django_db
def test_rest_detail_is_translated(api, alice, general):
    message = send(alice, general, "hi")
    response = api(alice).post(
        f"/api/messages/{message.pk}/reactions/", {"emoji": "ab"}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert response.status_code == 400 and response.json()["detail"].startswith("emoji：须为")


@pytest.mark.django_db
def test_the_admin_shows_reactions_read_only(admin_client, alice, general):
    message = send(alice, general, "hi")
    add(alice, message, "🎉")
    html = admin_client.get(f"/admin/chat/message/{message.pk}/change/").content.decode()
    assert "field-reactions" in html and "🎉" in html
    assert 'name="reactions"' not in html  # no input: only the service writes it
