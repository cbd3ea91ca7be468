"""Moderation actions in the admin: each goes through a service, is audited as `admin`, and goes live."""

import pytest

from chat import services
from chat.models import Membership, Message, ModerationAction
from tests.support import frames, membership

pytestmark = pytest.mark.django_db


def test_ban_asks_for_reason_and_expiry_then_bans_live(
    admin_client, general_with_bob, bob, published, django_capture_on_commit_callbacks
):
    pk = membership(general_with_bob, bob).pk
    form = admin_client.post("/admin/chat/membership/", {"action": "ban_members", "_selected_action": [pk]})
    assert form.status_code == 200 and b'name="minutes"' in form.content
    assert not membership(general_with_bob, bob).banned
    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client.post(
            "/admin/chat/membership/",
            {"action": "ban_members", "_selected_action": [pk], "apply": "1", "reason": "spam", "minutes": "30"},
        )
    assert done.status_code == 302
    bobs = membership(general_with_bob, bob)
    assert bobs.is_banned() and bobs.ban_reason == "spam" and bobs.banned_until
    assert any(e.get("reason") == "banned" for _, e in published)
    action = ModerationAction.objects.get(action="ban")
    assert (action.source, action.target_user, action.reason) == ("admin", bob, "spam")


def test_ban_form_rejects_bad_minutes(admin_client, general_with_bob, bob):
    pk = membership(general_with_bob, bob).pk
    page = admin_client.post(
        "/admin/chat/membership/", {"action": "ban_members", "_selected_action": [pk], "apply": "1", "minutes": "0"}
    )
    assert page.status_code == 200 and not membership(general_with_bob, bob).banned


def test_unban_mute_and_unmute_actions(admin_client, alice, general_with_bob, bob):
    services.member_ban(actor=alice, slug="general", username="bob")
    pk = membership(general_with_bob, bob).pk
    admin_client.post("/admin/chat/membership/", {"action": "unban_members", "_selected_action": [pk]})
    assert not Membership.objects.filter(room=general_with_bob, user=bob).exists()
    services.room_join(user=bob, slug="general")
    pk = membership(general_with_bob, bob).pk
    admin_client.post(
        "/admin/chat/membership/", {"action": "mute_members", "_selected_action": [pk], "apply": "1", "minutes": "15"}
    )
    assert membership(general_with_bob, bob).is_muted()
    admin_client.post("/admin/chat/membership/", {"action": "unmute_members", "_selected_action": [pk]})
    assert not membership(general_with_bob, bob).is_muted()
    assert list(ModerationAction.objects.order_by("id").values_list("action", "source")) == [
        ("ban", "rest"),
        ("unban", "admin"),
        ("mute", "admin"),
        ("unmute", "admin"),
    ]


def test_restore_action(admin_client, general_with_bob, bob, published, django_capture_on_commit_callbacks):
    message, _ = services.message_send(user=bob, slug="general", body="keep me")
    services.message_delete(user=bob, message_id=message.pk)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/chat/message/", {"action": "restore", "_selected_action": [message.pk]})
    assert not Message.objects.get(pk=message.pk).deleted
    assert frames(published, "message.updated")[-1]["message"]["body"] == "keep me"


def test_deactivate_action(admin_client, bob, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/auth/user/", {"action": "deactivate", "_selected_action": [bob.pk]})
    bob.refresh_from_db()
    assert not bob.is_active
    assert (f"user.{bob.pk}", {"type": "chat.close", "code": 4403, "reason": "account deactivated"}) in published


@pytest.mark.postgres
def test_message_list_on_postgresql_does_not_count_the_whole_table(
    admin_client, general_with_bob, bob, monkeypatch, settings
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat.admin.messages import EstimatedCountPaginator

    settings.CHAT_RATE_PER_10S = 1000
    for n in range(30):
        services.message_send(user=bob, slug="general", body=f"m{n}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE chat_message")
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_above", 0)
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get("/admin/chat/message/").status_code == 200
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "chat_message" in q["sql"]]
    with CaptureQueriesContext(connection) as queries:  # a search is counted exactly
        assert admin_client.get("/admin/chat/message/?q=m1").status_code == 200
    assert [q for q in queries if "COUNT(" in q["sql"].upper()]


def test_resolving_a_report_can_ban_the_author(
    admin_client, alice, general_with_bob, bob, published, django_capture_on_commit_callbacks
):
    from chat.models import Report

    message, _ = services.message_send(user=bob, slug="general", body="buy cheap watches")
    report = services.message_report(user=alice, message_id=message.pk, reason="spam")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/chat/report/", {"action": "resolve_delete_and_ban", "_selected_action": [report.pk]})
    assert Report.objects.get(pk=report.pk).resolved_at is not None
    assert Message.objects.get(pk=message.pk).deleted
    assert membership(general_with_bob, bob).is_banned()
    assert membership(general_with_bob, bob).ban_reason == "message deleted, author banned"
    assert {"message.deleted", "member.left"} <= {f["type"] for f in frames(published)}
    assert set(ModerationAction.objects.values_list("action", flat=True)) == {"delete_message", "ban", "report_resolve"}


def test_unticking_active_in_the_user_form_deactivates_through_the_service(
    admin_client, bob, published, django_capture_on_commit_callbacks
):
    page = admin_client.get(f"/admin/auth/user/{bob.pk}/change/")
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and not isinstance(value, list)}
    data.update(username="bob", is_active="", date_joined_0="2026-01-01", date_joined_1="00:00:00")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/auth/user/{bob.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    bob.refresh_from_db()
    assert not bob.is_active
    assert (f"user.{bob.pk}", {"type": "chat.close", "code": 4403, "reason": "account deactivated"}) in published
    assert ModerationAction.objects.filter(action="deactivate", target_user=bob, source="admin").exists()


@pytest.mark.django_db
def test_staff_send_a_notice_from_the_admin_to_everyone_or_one_room(
    admin_client, alice, published, django_capture_on_commit_callbacks
):
    room = services.room_create(user=alice, name="General")
    assert "notice/" in admin_client.get("/admin/chat/room/").content.decode()  # the link on the room list
    assert admin_client.get("/admin/chat/room/notice/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/chat/room/notice/", {"text": "Maintenance at 18:00", "level": "warning"})
        admin_client.post("/admin/chat/room/notice/", {"text": "Room only", "level": "info", "room": room.pk})
    assert response.status_code == 302
    notices = [(group, event["frame"]) for group, event in published if event.get("frame", {}).get("type") == "notice"]
    assert [(frame["text"], frame["level"], frame.get("room")) for _, frame in notices] == [
        ("Maintenance at 18:00", "warning", None),
        ("Room only", "info", "general"),
    ]
    before = len(published)
    refused = admin_client.post("/admin/chat/room/notice/", {"text": "  ", "level": "info"})
    assert refused.status_code == 200 and len(published) == before  # the form shows the error; nothing sent


@pytest.mark.django_db
def test_only_staff_reach_the_notice_form(client, alice):
    client.force_login(alice)
    assert client.get("/admin/chat/room/notice/").status_code == 302  # to the admin's login
