"""Server-rendered pages: sign-in, registration, the room list, room pages and the demo data command."""

import json
import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from chat import services
from chat.models import Membership, Message, Room

User = get_user_model()
PASSWORD = "s3cret-pass-1"  # conftest's make_user default


@pytest.fixture
def client_for(db):
    def make(user):
        client = Client()
        client.force_login(user)
        return client

    return make


def csrf_token(client, url):
    html = client.get(url).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


# Sign-in


def test_login_with_csrf_then_logout_by_post(alice):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 403  # no token

    token = csrf_token(client, "/login/")
    response = client.post("/login/", {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200

    assert client.get("/logout/").status_code == 405  # logging out is a POST
    token = csrf_token(client, "/")
    response = client.post("/logout/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_login_with_wrong_password_stays_anonymous(alice):
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": "wrong-password"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("url", ["/", "/rooms/general/"])
def test_anonymous_is_sent_to_login(db, url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


# Registration


def test_register_creates_the_user_and_logs_in(db):
    client = Client()
    response = client.post(
        "/register/",
        {
            "username": "dave",
            "email": "dave@example.com",
            "password1": "correct-horse-9",
            "password2": "correct-horse-9",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get(username="dave")
    assert user.email == "dave@example.com" and user.check_password("correct-horse-9")
    assert "dave" in client.get("/").content.decode()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"username": "alice", "password1": "correct-horse-9", "password2": "correct-horse-9"}, "already exists"),
        ({"username": "dave", "password1": "correct-horse-9", "password2": "correct-horse-8"}, "didn’t match"),
        ({"username": "dave", "password1": "short", "password2": "short"}, "too short"),
        ({"username": "bad name!", "password1": "correct-horse-9", "password2": "correct-horse-9"}, "valid username"),
    ],
)
def test_register_rejects_bad_input_and_creates_nothing(alice, data, message):
    response = Client().post("/register/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]


def test_register_respects_closed_registration(db, settings):
    settings.CHAT_REGISTRATION_OPEN = False
    client = Client()
    assert client.get("/register/").status_code == 403
    response = client.post(
        "/register/", {"username": "dave", "password1": "correct-horse-9", "password2": "correct-horse-9"}
    )
    assert response.status_code == 403
    assert "Registration is closed" in response.content.decode()
    assert not User.objects.exists()


# Room list


def test_room_list_shows_unread_counts_and_rooms_to_join(general_with_bob, alice, bob, carol, client_for):
    for n in range(3):
        services.message_send(user=alice, slug="general", body=f"hello {n}")
    services.room_create(user=alice, name="Secret", slug="secret", kind="private")

    html = client_for(bob).get("/").content.decode()
    mine = html.split('id="my-rooms"')[1].split('id="public-rooms"')[0]
    assert 'data-room="general"' in mine
    assert re.search(r'class="badge unread"[^>]*>3<', mine)
    assert "secret" not in html

    html = client_for(carol).get("/").content.decode()
    to_join = html.split('id="public-rooms"')[1]
    assert 'data-room="general"' in to_join and 'action="/rooms/general/join/"' in to_join
    assert "secret" not in html


def test_join_button_makes_a_member(general_with_bob, carol, client_for):
    response = client_for(carol).post("/rooms/general/join/")
    assert response.status_code == 302 and response["Location"] == "/rooms/general/"
    assert Membership.objects.filter(room=general_with_bob, user=carol).exists()


def test_leave_ends_membership(general_with_bob, bob, client_for):
    response = client_for(bob).post("/rooms/general/leave/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Membership.objects.filter(room=general_with_bob, user=bob).exists()


def test_create_room_form(alice, client_for):
    response = client_for(alice).post("/rooms/", {"name": "Book Club", "kind": "private", "topic": "Novels"})
    assert response.status_code == 302 and response["Location"] == "/rooms/book-club/"
    room = Room.objects.get(slug="book-club")
    assert (room.name, room.kind, room.topic) == ("Book Club", "private", "Novels")
    assert Membership.objects.get(room=room).role == "owner"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "", "kind": "public"}, "This field is required."),
        ({"name": "Fine", "slug": "Not A Slug!", "kind": "public"}, "Use 1-50 lowercase letters"),
        ({"name": "Fine", "kind": "direct"}, "Select a valid choice"),
        ({"name": "Other", "slug": "general", "kind": "public"}, "is taken; choose another"),
        ({"name": "!!!", "kind": "public"}, "could not derive one from the name"),
    ],
)
def test_create_room_form_rejects_bad_input(general_with_bob, alice, client_for, data, message):
    response = client_for(alice).post("/rooms/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert list(Room.objects.values_list("slug", flat=True)) == ["general"]


def test_direct_form_opens_the_conversation(alice, bob, client_for):
    response = client_for(alice).post("/direct/", {"username": "bob"})
    room = Room.objects.get(kind="direct")
    assert response.status_code == 302 and response["Location"] == f"/rooms/{room.slug}/"
    assert set(room.memberships.values_list("user__username", flat=True)) == {"alice", "bob"}


@pytest.mark.parametrize(
    "username, status, message",
    [
        ("nobody", 404, "No user"),
        ("alice", 400, "to yourself"),
    ],
)
def test_direct_form_rejects_bad_usernames(alice, client_for, username, status, message):
    response = client_for(alice).post("/direct/", {"username": username})
    assert response.status_code == status
    assert message in response.content.decode()
    assert "to: " not in response.content.decode()  # the error sits on the username field, without its wire name
    assert not Room.objects.exists()


# Room page


def test_room_page_renders_history_escaped(general_with_bob, alice, bob, client_for):
    message, _ = services.message_send(user=alice, slug="general", body="<script>alert(1)</script>")
    response = client_for(bob).get("/rooms/general/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "/static/chat/js/room.js" in html
    config = json.loads(re.search(r'<script id="chat-config" type="application/json">(.*?)</script>', html).group(1))
    assert config["room"]["slug"] == "general" and config["history"][-1]["id"] == message.pk
    assert config["history"][-1]["body"] == "<script>alert(1)</script>"  # as JSON, set with textContent
    assert config["user"] == {"id": bob.pk, "username": "bob", "isStaff": False}


def test_room_page_shows_the_newest_page_in_constant_queries(
    general_with_bob, alice, bob, client_for, settings, django_assert_max_num_queries
):
    settings.CHAT_RATE_PER_10S = 1000
    for n in range(60):
        services.message_send(user=alice, slug="general", body=f"line {n}")
    client = client_for(bob)
    with django_assert_max_num_queries(8):
        html = client.get("/rooms/general/").content.decode()
    bodies = re.findall(r'<span class="body" dir="auto">(line \d+)</span>', html)
    assert bodies == [f"line {n}" for n in range(10, 60)]
    assert 'id="load-older"' in html and 'id="load-older" class="link" hidden' not in html


def test_room_page_hides_deleted_bodies(general_with_bob, alice, bob, client_for):
    message, _ = services.message_send(user=alice, slug="general", body="regrettable")
    services.message_delete(user=alice, message_id=message.pk)
    html = client_for(bob).get("/rooms/general/").content.decode()
    assert "regrettable" not in html
    assert f'class="msg msg-user deleted" data-id="{message.pk}"' in html


def test_non_member_of_public_room_sees_join_button_and_no_client(general_with_bob, carol, client_for):
    html = client_for(carol).get("/rooms/general/").content.decode()
    assert 'action="/rooms/general/join/"' in html
    assert "js/room.js" not in html
    assert not Membership.objects.filter(room=general_with_bob, user=carol).exists()


def test_room_page_shows_system_messages_in_the_readers_language(general, alice, bob, carol, client_for):
    services.room_join(user=bob, slug="general")
    services.room_update(user=alice, slug="general", topic="50% <off>")
    chinese = client_for(carol).get("/rooms/general/", headers={"accept-language": "zh-CN"}).content.decode()
    assert '<html lang="zh-hans">' in chinese
    bodies = re.findall(r'<span class="body" dir="auto">([^<]*)</span>', chinese)
    assert bodies == ["bob 加入了房间", "alice 将话题设为：50% &lt;off&gt;"]
    config = json.loads(re.search(r'<script id="chat-config" type="application/json">(.*?)</script>', chinese).group(1))
    assert [m["body"] for m in config["history"]] == ["bob joined", "alice set the topic: 50% <off>"]  # stored text
    assert config["systemTexts"]["joined"] == ["%(user)s joined", "%(user)s 加入了房间"]
    english = client_for(carol).get("/rooms/general/").content.decode()
    assert re.findall(r'<span class="body" dir="auto">([^<]*)</span>', english)[0] == "bob joined"


def test_room_page_access_errors(alice, carol, client_for):
    services.room_create(user=alice, name="Team", slug="team", kind="private")
    services.room_create(user=alice, name="Old", slug="old")
    services.room_archive(user=alice, slug="old")
    client = client_for(carol)
    assert client.get("/rooms/team/").status_code == 403
    assert client.get("/rooms/nope/").status_code == 404
    assert client.get("/rooms/old/").status_code == 410
    assert client.post("/rooms/team/join/").status_code == 403
    assert not Membership.objects.filter(user=carol).exists()


# Demo data


def test_seed_demo_is_idempotent_and_prints_credentials(db):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    counts = (User.objects.count(), Room.objects.count(), Membership.objects.count(), Message.objects.count())
    call_command("seed_demo", stdout=(second := StringIO()))
    assert (User.objects.count(), Room.objects.count(), Membership.objects.count(), Message.objects.count()) == counts
    assert counts[:3] == (4, 3, 7)

    for text in (out.getvalue(), second.getvalue()):
        assert "chat-demo-pass" in text and "http://127.0.0.1:8000/" in text
    call_command("seed_demo", "--url", "http://127.0.0.1:9123/", stdout=(third := StringIO()))
    assert "http://127.0.0.1:9123/" in third.getvalue() and ":8000" not in third.getvalue()
    assert User.objects.get(username="admin").is_staff
    team = Room.objects.get(slug="team")
    assert team.kind == "private"
    assert set(team.memberships.values_list("user__username", flat=True)) == {"alice", "bob"}
    client = Client()
    assert client.login(username="carol", password="chat-demo-pass")
    assert client.get("/rooms/team/").status_code == 403
    assert "Welcome to the demo chat!" in client.get("/rooms/general/").content.decode()


# Pages added for the web client


def test_directory_searches_rooms_by_name_slug_or_topic(general_with_bob, alice, bob, client_for):
    services.room_create(user=bob, name="Gardening", slug="garden", topic="Roses and tulips")
    services.room_create(user=bob, name="Hidden", slug="hidden", kind="private", topic="roses too")
    client = client_for(alice)
    html = client.get("/directory/?q=ROSE").content.decode()
    assert 'data-room="garden"' in html and 'data-room="hidden"' not in html and 'data-room="general"' not in html
    html = client.get("/directory/").content.decode()
    assert 'data-room="garden"' in html and 'data-room="general"' in html
    assert 'action="/rooms/garden/join/"' in html and 'action="/rooms/general/join/"' not in html


def test_profile_page_and_the_javascript_catalog(alice, client_for):
    client = client_for(alice)
    html = client.get("/account/").content.decode()
    assert "alice" in html and 'href="/account/password/"' in html
    assert '<html lang="en">' in html and 'src="/jsi18n/"' in html
    catalog = client.get("/jsi18n/")
    assert catalog.status_code == 200 and "globals.interpolate = django.interpolate" in catalog.content.decode()
