"""The moderation admin: changelists run a bounded number of queries, and changes go through the services."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import translation

from chat import services
from chat.models import Membership, Message, Room
from tests.support import frames

CHANGELISTS = ["/admin/chat/room/", "/admin/chat/membership/", "/admin/chat/message/"]


def add_rooms(owner, member, start, count):
    for n in range(start, start + count):
        services.room_create(user=owner, name=f"Room {n}", slug=f"room-{n}")
        services.room_join(user=member, slug=f"room-{n}")
        services.message_send(user=member, slug=f"room-{n}", body=f"hello {n}")


def changelist_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", CHANGELISTS)
def test_changelists_run_the_same_queries_for_few_and_many_rows(admin_client, alice, bob, settings, url):
    settings.CHAT_RATE_PER_10S = 1000
    add_rooms(alice, bob, 0, 2)
    few = changelist_queries(admin_client, url)
    add_rooms(alice, bob, 2, 15)
    many = changelist_queries(admin_client, url)
    assert many == few <= 12


@pytest.mark.parametrize("url", CHANGELISTS)
def test_changelist_search(admin_client, alice, bob, url):
    add_rooms(alice, bob, 0, 2)
    response = admin_client.get(url, {"q": "room-1" if "message" not in url else "hello 1"})
    assert response.status_code == 200
    assert "room-1" in response.content.decode()


def test_soft_delete_action_goes_through_the_service(
    admin_client, alice, bob, published, django_capture_on_commit_callbacks
):
    add_rooms(alice, bob, 0, 1)
    message = Message.objects.get(body="hello 0")
    keep = services.message_send(user=alice, slug="room-0", body="keep me")[0]
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/chat/message/", {"action": "soft_delete", "_selected_action": [message.pk]}
        )
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.deleted and message.body == "hello 0"  # kept for moderators, hidden from readers
    keep.refresh_from_db()
    assert not keep.deleted
    assert frames(published, "message.deleted") == [{"type": "message.deleted", "room": "room-0", "id": message.pk}]


def test_hard_delete_and_direct_edits_are_disabled(admin_client, alice, bob):
    add_rooms(alice, bob, 0, 1)
    message = Message.objects.get(body="hello 0")
    membership = Membership.objects.get(user=bob)
    room = Room.objects.get(slug="room-0")
    assert admin_client.get(f"/admin/chat/message/{message.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/chat/membership/{membership.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/chat/room/{room.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/chat/message/add/").status_code == 403
    response = admin_client.post(f"/admin/chat/message/{message.pk}/change/", {"body": "rewritten"})
    assert response.status_code == 403
    message.refresh_from_db()
    assert message.body == "hello 0"


def test_lock_and_archive_actions_publish_room_updates(
    admin_client, alice, bob, published, django_capture_on_commit_callbacks
):
    add_rooms(alice, bob, 0, 2)
    room = Room.objects.get(slug="room-0")
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/chat/room/", {"action": "lock_rooms", "_selected_action": [room.pk]})
    room.refresh_from_db()
    assert room.locked
    assert [(f["room"], f["locked"]) for f in frames(published, "room.updated")] == [("room-0", True)]

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/chat/room/", {"action": "archive_rooms", "_selected_action": [room.pk]})
    room.refresh_from_db()
    assert room.archived
    assert Room.objects.get(slug="room-1").archived is False


def test_add_and_edit_room_through_services(admin_client, admin_user, published, django_capture_on_commit_callbacks):
    response = admin_client.post(
        "/admin/chat/room/add/", {"slug": "ops", "name": "Ops", "kind": "private", "topic": ""}
    )
    assert response.status_code == 302
    room = Room.objects.get(slug="ops")
    assert room.created_by == admin_user and room.kind == "private"
    assert Membership.objects.get(room=room, user=admin_user).role == "owner"

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/chat/room/{room.pk}/change/", {"name": "Operations", "topic": "On call", "locked": "on"}
        )
    assert response.status_code == 302
    room.refresh_from_db()
    assert (room.name, room.topic, room.locked) == ("Operations", "On call", True)
    assert Message.objects.filter(room=room, kind="system", body="root set the topic: On call").exists()
    assert frames(published, "room.updated")[-1]["name"] == "Operations"


def test_add_room_rejects_direct_kind_and_taken_slug(admin_client, alice):
    services.room_create(user=alice, name="Taken", slug="taken")
    for data in ({"slug": "dm", "name": "DM", "kind": "direct"}, {"slug": "taken", "name": "Again", "kind": "public"}):
        response = admin_client.post("/admin/chat/room/add/", data)
        assert response.status_code == 200 and response.context["adminform"].form.errors
    assert list(Room.objects.values_list("slug", flat=True)) == ["taken"]


def test_remove_member_action_kicks_through_the_service(
    admin_client, alice, bob, published, django_capture_on_commit_callbacks
):
    add_rooms(alice, bob, 0, 1)
    membership = Membership.objects.get(user=bob)
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/chat/membership/", {"action": "remove_members", "_selected_action": [membership.pk]})
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert [f["user"]["username"] for f in frames(published, "member.left")] == ["bob"]
    unsubscribed = [e for _, e in published if e["type"] == "chat.unsubscribe"]
    assert [(e["slug"], e["reason"]) for e in unsubscribed] == [("room-0", "kicked")]


# Language


def test_the_admin_header_switches_the_language(admin_client, client):
    login = client.get("/admin/login/").content.decode()  # before signing in too
    assert 'id="language-switcher"' in login and 'value="zh-hans"' in login
    html = admin_client.get("/admin/chat/room/").content.decode()
    assert '<html lang="en"' in html
    switcher = re.search(r'<form method="post" action="/i18n/setlang/" id="language-switcher".*?</form>', html, re.S)
    assert switcher and 'name="next" value="/admin/chat/room/"' in switcher.group(0)
    assert 'value="zh-hans"' in switcher.group(0) and 'value="en"' not in switcher.group(0)
    response = admin_client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/admin/chat/room/"})
    assert response.status_code == 302 and response["Location"] == "/admin/chat/room/"
    chinese = admin_client.get("/admin/chat/room/").content.decode()
    assert '<html lang="zh-hans"' in chinese
    with translation.override("zh-hans"):
        assert translation.gettext("Log out") in chinese and translation.gettext("Send a notice") in chinese
    assert 'value="en"' in chinese and "English" in chinese  # and back


def test_the_message_list_shows_system_messages_in_the_admins_language(admin_client, alice, bob):
    add_rooms(alice, bob, 0, 1)  # bob's join writes "bob joined"
    assert ">bob joined<" in admin_client.get("/admin/chat/message/").content.decode()
    admin_client.post("/i18n/setlang/", {"language": "zh-hans"})
    html = admin_client.get("/admin/chat/message/").content.decode()
    assert ">bob 加入了房间<" in html and ">hello 0<" in html  # what users write stays as written
    joined = Message.objects.get(body="bob joined")
    detail = admin_client.get(f"/admin/chat/message/{joined.pk}/change/").content.decode()
    assert "bob joined" in detail and "field-shown_as" in detail and "bob 加入了房间" in detail  # stored, shown
    hello = Message.objects.get(body="hello 0")
    assert "field-shown_as" not in admin_client.get(f"/admin/chat/message/{hello.pk}/change/").content.decode()


def test_the_message_page_shows_its_thread_rendering_and_seq_read_only(admin_client, alice, bob):
    add_rooms(alice, bob, 0, 1)
    root, _ = services.message_send(user=alice, slug="room-0", body="<script>x</script> @bob?")
    reply, _ = services.message_send(user=bob, slug="room-0", body="yes", reply_to=root.pk)
    page = admin_client.get(f"/admin/chat/message/{reply.pk}/change/").content.decode()
    readonly = dict(re.findall(r'field-(\w+)">.*?<div class="readonly">(.*?)</div>', page, re.S))
    assert {"reply_to", "thread", "reply_count", "seq", "mentions", "html"} <= readonly.keys()  # shown, not editable
    root_link = f'<a href="/admin/chat/message/{root.pk}/change/">'
    assert readonly["reply_to"].startswith(root_link) and readonly["thread"].startswith(root_link)
    root.refresh_from_db()
    page = admin_client.get(f"/admin/chat/message/{root.pk}/change/").content.decode()
    readonly = dict(re.findall(r'field-(\w+)">.*?<div class="readonly">(.*?)</div>', page, re.S))
    assert readonly["reply_count"] == "1" and readonly["seq"] == str(root.seq)
    assert "bob" in readonly["mentions"] and "<script>" not in page  # the html is shown as text
    assert readonly["html"].startswith("&lt;p&gt;")  # its markup as text
