"""Nothing tells an outsider who talks to whom: direct rooms answer as missing, and a GET creates nothing."""

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat import services
from chat.models import Room
from chatproject.asgi import application
from tests.support import access_token, db_state


@pytest.fixture
def pair(alice, bob, carol, dave):
    """alice and bob talk; alice and dave do not. carol is the outsider."""
    room = services.direct_room(user=alice, username="bob")
    message, _ = services.message_send(user=alice, slug=room.slug, body="between us")
    return room.slug, f"dm-{alice.pk}-{dave.pk}", message


@pytest.mark.parametrize("suffix", ["", "messages/", "members/", "export/"])
def test_an_outsider_gets_the_same_404_whether_the_direct_room_exists(api, carol, pair, suffix):
    existing, missing = pair[0], pair[1]
    answers = [api(carol).get(f"/api/rooms/{slug}/{suffix}") for slug in (existing, missing)]
    assert [r.status_code for r in answers] == [404, 404]
    assert answers[0].json() == {"detail": f"No room '{existing}'.", "code": "not_found"}
    assert answers[1].json() == {"detail": f"No room '{missing}'.", "code": "not_found"}


def test_joining_someone_elses_direct_room_answers_404_too(api, carol, pair):
    before = db_state()
    assert [api(carol).post(f"/api/rooms/{slug}/join/").status_code for slug in pair[:2]] == [404, 404]
    assert db_state() == before


def test_a_direct_message_id_answers_like_a_missing_one(api, carol, pair):
    message = pair[2]
    answers = [api(carol).patch(f"/api/messages/{pk}/", {"body": "x"}, format="json") for pk in (message.pk, 10**9)]
    assert [r.status_code for r in answers] == [404, 404]
    assert answers[0].json()["detail"] == f"No message {message.pk}."


def test_members_and_staff_still_see_the_direct_room(api, alice, bob, staff, pair):
    for user in (alice, bob, staff):
        assert api(user).get(f"/api/rooms/{pair[0]}/").status_code == 200


def test_the_room_page_answers_an_outsider_404_either_way(carol, pair):
    client = Client()
    client.force_login(carol)
    assert [client.get(f"/rooms/{slug}/").status_code for slug in pair[:2]] == [404, 404]


@pytest.mark.django_db(transaction=True)
async def test_a_room_socket_closes_4404_for_an_outsider_either_way(carol, pair):
    codes = []
    for slug in pair[:2]:
        comm = WebsocketCommunicator(application, f"/ws/chat/{slug}/?token={access_token(carol)}")
        assert (await comm.connect())[0]
        out = await comm.receive_output(2)
        codes.append(out.get("code"))
        await comm.disconnect()
    assert codes == [4404, 4404]


def test_get_direct_creates_nothing_and_does_not_tell_whether_the_user_exists(api, alice, bob):
    before = db_state()
    answers = {name: api(alice).get(f"/api/direct/{name}/") for name in ("bob", "nobody", "alice")}
    assert {name: r.status_code for name, r in answers.items()} == {"bob": 404, "nobody": 404, "alice": 404}
    details = {name: r.json()["detail"].replace(name, "<name>") for name, r in answers.items()}
    assert details["bob"] == details["nobody"]
    assert "POST" in answers["bob"].json()["detail"]
    assert db_state() == before and not Room.objects.filter(kind="direct").exists()


def test_post_direct_creates_the_room_once_then_get_finds_it(api, alice, bob):
    first = api(alice).post("/api/direct/bob/")
    assert first.status_code == 200
    assert (first.json()["kind"], first.json()["member"]) == ("direct", True)
    again = api(bob).post("/api/direct/alice/")
    assert again.json()["slug"] == first.json()["slug"]
    assert api(bob).get("/api/direct/alice/").json()["slug"] == first.json()["slug"]
    assert Room.objects.filter(kind="direct").count() == 1
