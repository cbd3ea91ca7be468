"""The moderation audit log and message reports: services, REST, admin and WebSocket."""

import pytest

from chat import services
from chat.errors import Forbidden, Invalid
from chat.models import Membership, Message, ModerationAction, Report
from tests.support import connect, db, db_state, frames, private_room

pytestmark = pytest.mark.usefixtures("fresh_layer")


def only_action() -> ModerationAction:
    """The single audit row written since the log was last cleared."""
    rows = list(ModerationAction.objects.all())
    assert len(rows) == 1, rows
    return rows[0]


def audited(call):
    """Run `call` on a cleared log and return the one row it wrote."""
    ModerationAction.objects.all().delete()
    call()
    return only_action()


# Each audited service writes one row


@pytest.mark.django_db
def test_ban_and_unban_are_audited(alice, bob, general_with_bob_and_carol):
    row = audited(lambda: services.member_ban(actor=alice, slug="general", username="bob", reason="spam", minutes=5))
    assert (row.actor, row.action, row.room, row.target_user, row.reason, row.source, row.detail) == (
        alice,
        "ban",
        general_with_bob_and_carol,
        bob,
        "spam",
        "rest",
        {"minutes": 5},
    )
    row = audited(lambda: services.member_unban(actor=alice, slug="general", username="bob", source="admin"))
    assert (row.actor, row.action, row.room, row.target_user, row.source) == (
        alice,
        "unban",
        general_with_bob_and_carol,
        bob,
        "admin",
    )


@pytest.mark.django_db
def test_mute_and_unmute_are_audited(alice, bob, general_with_bob_and_carol):
    row = audited(lambda: services.member_mute(actor=alice, slug="general", username="bob", minutes=10))
    assert (row.actor, row.action, row.room, row.target_user, row.source, row.detail) == (
        alice,
        "mute",
        general_with_bob_and_carol,
        bob,
        "rest",
        {"minutes": 10},
    )
    row = audited(lambda: services.member_unmute(actor=alice, slug="general", username="bob", source="command"))
    assert (row.actor, row.action, row.target_user, row.source) == (alice, "unmute", bob, "command")


@pytest.mark.django_db
def test_kick_is_audited_but_leaving_is_not(alice, bob, carol, general_with_bob_and_carol):
    row = audited(lambda: services.member_remove(actor=alice, slug="general", username="bob", source="admin"))
    assert (row.actor, row.action, row.room, row.target_user, row.source) == (
        alice,
        "kick",
        general_with_bob_and_carol,
        bob,
        "admin",
    )
    ModerationAction.objects.all().delete()
    services.member_remove(actor=carol, slug="general", username="carol")
    assert not ModerationAction.objects.exists()


@pytest.mark.django_db
def test_a_moderator_deleting_a_message_is_audited_an_author_deleting_theirs_is_not(
    alice, bob, general_with_bob_and_carol
):
    message, _ = services.message_send(user=bob, slug="general", body="rude")
    row = audited(lambda: services.message_delete(user=alice, message_id=message.pk))
    assert (row.actor, row.action, row.room, row.target_user, row.target_message, row.source) == (
        alice,
        "delete_message",
        general_with_bob_and_carol,
        bob,
        message,
        "rest",
    )
    ModerationAction.objects.all().delete()
    own, _ = services.message_send(user=bob, slug="general", body="oops")
    services.message_delete(user=bob, message_id=own.pk)
    services.message_delete(user=alice, message_id=message.pk)  # already deleted: nothing happens
    assert not ModerationAction.objects.exists()


@pytest.mark.django_db
def test_lock_unlock_topic_and_archive_are_audited(alice, general_with_bob_and_carol):
    row = audited(lambda: services.room_update(user=alice, slug="general", locked=True))
    assert (row.actor, row.action, row.room, row.source) == (alice, "lock", general_with_bob_and_carol, "rest")
    row = audited(lambda: services.room_update(user=alice, slug="general", locked=False, source="admin"))
    assert (row.action, row.source) == ("unlock", "admin")
    row = audited(lambda: services.room_update(user=alice, slug="general", topic="Be kind"))
    assert (row.action, row.detail) == ("topic", {"topic": "Be kind"})
    ModerationAction.objects.all().delete()
    services.room_update(user=alice, slug="general", name="Renamed", topic="Be kind", locked=False)
    assert not ModerationAction.objects.exists()  # nothing moderated changed
    row = audited(lambda: services.room_archive(user=alice, slug="general"))
    assert (row.actor, row.action, row.room, row.source) == (alice, "archive", general_with_bob_and_carol, "rest")


@pytest.mark.django_db
def test_a_refused_moderation_writes_nothing(bob, carol, general_with_bob_and_carol):
    with pytest.raises(Forbidden):
        services.member_ban(actor=bob, slug="general", username="carol")
    assert not ModerationAction.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_deleting_over_websocket_is_audited_as_websocket(alice, bob, general_with_bob_and_carol):
    message, _ = await db(services.message_send)(user=bob, slug="general", body="rude")
    a = await connect(alice)
    await a.send(type="message.delete", id=message.pk, ref="d")
    assert (await a.expect("message.deleted"))["ref"] == "d"
    await a.close()
    row = await db(only_action)()
    assert (row.actor_id, row.action, row.target_message_id, row.source) == (
        alice.pk,
        "delete_message",
        message.pk,
        "websocket",
    )


# The audit admin is read-only


@pytest.mark.django_db
def test_audit_admin_is_read_only(admin_client, alice, bob, general_with_bob_and_carol):
    services.member_ban(actor=alice, slug="general", username="bob", reason="spam")
    row = only_action()
    response = admin_client.get("/admin/chat/moderationaction/")
    assert response.status_code == 200 and "spam" in response.content.decode()
    assert admin_client.get("/admin/chat/moderationaction/", {"q": "bob"}).status_code == 200
    assert admin_client.get("/admin/chat/moderationaction/add/").status_code == 403
    assert (
        admin_client.post("/admin/chat/moderationaction/add/", {"action": "ban", "source": "admin"}).status_code == 403
    )
    assert admin_client.get(f"/admin/chat/moderationaction/{row.pk}/delete/").status_code == 403
    assert admin_client.post(f"/admin/chat/moderationaction/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (
        admin_client.post(
            f"/admin/chat/moderationaction/{row.pk}/change/", {"action": "unban", "reason": "edited"}
        ).status_code
        == 403
    )
    assert (
        admin_client.post(
            "/admin/chat/moderationaction/", {"action": "delete_selected", "_selected_action": [row.pk]}
        ).status_code
        == 200
    )
    row.refresh_from_db()
    assert (row.action, row.reason) == ("ban", "spam")
    assert ModerationAction.objects.count() == 1


# Reporting over REST


@pytest.fixture
def rude(bob, general_with_bob_and_carol):
    return services.message_send(user=bob, slug="general", body="rude")[0]


@pytest.mark.django_db
def test_report_a_message(api, carol, rude):
    response = api(carol).post(f"/api/messages/{rude.pk}/report/", {"reason": "insults"}, format="json")
    assert response.status_code == 201
    report = Report.objects.get()
    assert response.json() == {
        "id": report.pk,
        "message": rude.pk,
        "reason": "insults",
        "created_at": report.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert (report.reporter, report.message, report.resolved_at) == (carol, rude, None)


@pytest.mark.django_db
def test_reporting_twice_is_refused(api, carol, rude):
    assert api(carol).post(f"/api/messages/{rude.pk}/report/", {"reason": "insults"}, format="json").status_code == 201
    response = api(carol).post(f"/api/messages/{rude.pk}/report/", {"reason": "again"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert list(Report.objects.values_list("reason", flat=True)) == ["insults"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "who, url, body, status",
    [
        ("bob", "rude", {"reason": "mine"}, 400),  # one's own message
        ("carol", "rude", {}, 400),
        ("carol", "rude", {"reason": "   "}, 400),
        ("carol", "rude", {"reason": "x" * 501}, 400),
        ("carol", "secret", {"reason": "spam"}, 403),  # a private room carol is not in
        ("carol", "unknown", {"reason": "spam"}, 404),
    ],
)
def test_refused_reports_write_nothing(api, alice, bob, carol, rude, who, url, body, status):
    private_room(alice, members=[bob])
    hidden, _ = services.message_send(user=bob, slug="secret", body="hidden")
    message_id = {"rude": rude.pk, "secret": hidden.pk, "unknown": hidden.pk + 100}[url]
    before = db_state()
    user = {"bob": bob, "carol": carol}[who]
    response = api(user).post(f"/api/messages/{message_id}/report/", body, format="json")
    assert response.status_code == status, response.content
    assert "detail" in response.json() or body == {}
    assert not Report.objects.exists()
    assert db_state() == before


@pytest.mark.django_db
def test_anonymous_cannot_report(api, rude):
    assert api().post(f"/api/messages/{rude.pk}/report/", {"reason": "spam"}, format="json").status_code == 401
    assert not Report.objects.exists()


# Resolving from the admin


def resolve_in_admin(client, action, report):
    return client.post("/admin/chat/report/", {"action": action, "_selected_action": [report.pk]})


@pytest.mark.django_db
def test_report_queue_lists_open_reports_first(admin_client, alice, bob, carol, rude):
    old = services.message_report(user=carol, message_id=rude.pk, reason="first")
    services.report_resolve(actor=alice, report_id=old.pk, resolution="dismissed")
    other, _ = services.message_send(user=bob, slug="general", body="worse")
    services.message_report(user=carol, message_id=other.pk, reason="second")
    response = admin_client.get("/admin/chat/report/")
    page = response.content.decode()
    assert response.status_code == 200 and page.index("second") < page.index("first")
    assert "first" not in admin_client.get("/admin/chat/report/", {"resolved": "no"}).content.decode()
    assert "second" not in admin_client.get("/admin/chat/report/", {"resolved": "yes"}).content.decode()


@pytest.mark.django_db
def test_admin_dismisses_a_report(admin_client, admin_user, carol, rude, published, django_capture_on_commit_callbacks):
    report = services.message_report(user=carol, message_id=rude.pk, reason="insults")
    ModerationAction.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert resolve_in_admin(admin_client, "resolve_dismiss", report).status_code == 302
    report.refresh_from_db()
    rude.refresh_from_db()
    assert report.resolved_at and (report.resolved_by, report.resolution) == (admin_user, "dismissed")
    assert not rude.deleted and frames(published, "message.deleted") == []
    row = only_action()
    assert (row.actor, row.action, row.target_message, row.source, row.detail) == (
        admin_user,
        "report_resolve",
        rude,
        "admin",
        {"report_id": report.pk, "deleted_message": False, "banned_author": False},
    )


@pytest.mark.django_db
def test_admin_resolves_a_report_by_deleting_the_message(
    admin_client, admin_user, bob, carol, rude, published, django_capture_on_commit_callbacks
):
    report = services.message_report(user=carol, message_id=rude.pk, reason="insults")
    ModerationAction.objects.all().delete()
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert resolve_in_admin(admin_client, "resolve_delete_message", report).status_code == 302
    report.refresh_from_db()
    rude.refresh_from_db()
    assert rude.deleted and report.resolved_at and report.resolved_by == admin_user
    assert frames(published, "message.deleted") == [{"type": "message.deleted", "room": "general", "id": rude.pk}]
    rows = {row.action: row for row in ModerationAction.objects.all()}
    assert set(rows) == {"delete_message", "report_resolve"}
    assert (rows["delete_message"].source, rows["delete_message"].target_user) == ("admin", bob)
    assert rows["report_resolve"].detail == {"report_id": report.pk, "deleted_message": True, "banned_author": False}
    # Resolving again is refused and changes nothing.
    with django_capture_on_commit_callbacks(execute=True):
        resolve_in_admin(admin_client, "resolve_dismiss", report)
    assert ModerationAction.objects.count() == 2


@pytest.mark.django_db
def test_only_moderators_and_staff_resolve(alice, bob, carol, general_with_bob_and_carol, rude):
    report = services.message_report(user=carol, message_id=rude.pk, reason="insults")
    with pytest.raises(Forbidden):
        services.report_resolve(actor=carol, report_id=report.pk, resolution="dismissed")
    Membership.objects.filter(room=general_with_bob_and_carol, user=carol).update(role=Membership.Role.MODERATOR)
    services.report_resolve(actor=carol, report_id=report.pk, resolution="dismissed", source="rest")
    with pytest.raises(Invalid):
        services.report_resolve(actor=alice, report_id=report.pk, resolution="again")
    report.refresh_from_db()
    assert (report.resolved_by, report.resolution) == (carol, "dismissed")
    assert not Message.objects.get(pk=rude.pk).deleted


@pytest.mark.django_db
def test_restore_and_deactivate_are_audited(make_user, alice, bob, general_with_bob_and_carol):
    staff = make_user("root", is_staff=True)
    message, _ = services.message_send(user=bob, slug="general", body="fine after all")
    services.message_delete(user=alice, message_id=message.pk)
    row = audited(lambda: services.message_restore(user=alice, message_id=message.pk))
    assert (row.actor, row.action, row.room, row.target_user, row.target_message, row.source) == (
        alice,
        "restore_message",
        general_with_bob_and_carol,
        bob,
        message,
        "rest",
    )
    row = audited(lambda: services.user_deactivate(actor=staff, username="bob", source="command"))
    assert (row.actor, row.action, row.room, row.target_user, row.source) == (staff, "deactivate", None, bob, "command")
    ModerationAction.objects.all().delete()
    with pytest.raises(Forbidden):
        services.user_deactivate(actor=alice, username="carol")
    assert not ModerationAction.objects.exists()
