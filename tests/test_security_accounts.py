"""Accounts hardening: sign-in and sign-up throttled everywhere; moderators stay within their
rank when editing and deleting others' messages, audited with the text before and after;
usernames normalised and look-alikes refused."""

import pytest
from django.conf import settings as django_settings
from rest_framework.throttling import ScopedRateThrottle

from chat import services
from chat.errors import Forbidden, Invalid
from chat.models import Message, ModerationAction
from tests.support import PASSWORD

# Editing and deleting others' messages follows the moderation hierarchy


@pytest.fixture
def ranks(general, alice, bob, carol, staff):
    """general: alice owner, bob moderator, carol member, root (staff) a member; a message by each."""
    services.member_invite(actor=alice, slug="general", username="bob", role="moderator")
    for user in (carol, staff):
        services.room_join(user=user, slug="general")
    return {
        user.username: services.message_send(user=user, slug="general", body=f"by {user.username}")[0]
        for user in (alice, bob, carol, staff)
    }


@pytest.mark.parametrize(
    "actor, author, why",
    [
        ("bob", "alice", "members only"),  # a moderator on the owner
        ("bob", "root", "Staff cannot be moderated"),
        ("alice", "root", "Staff cannot be moderated"),  # the owner on staff
    ],
)
def test_moderators_cannot_edit_or_delete_above_their_rank(ranks, actor, author, why, django_user_model):
    user = django_user_model.objects.get(username=actor)
    message = ranks[author]
    with pytest.raises(Forbidden, match=why):
        services.message_edit(user=user, message_id=message.pk, body="rewritten")
    with pytest.raises(Forbidden, match=why):
        services.message_delete(user=user, message_id=message.pk)
    message.refresh_from_db()
    assert (message.body, message.deleted, message.edited_at) == (f"by {author}", False, None)
    assert not ModerationAction.objects.exists()


@pytest.mark.parametrize("actor, author", [("bob", "carol"), ("alice", "bob"), ("root", "alice")])
def test_edits_within_rank_are_audited_with_the_text_before_and_after(ranks, actor, author, django_user_model):
    user = django_user_model.objects.get(username=actor)
    message = ranks[author]
    services.message_edit(user=message.author, message_id=message.pk, body="typo fixed")  # not moderation
    services.message_edit(user=user, message_id=message.pk, body="moderated", source="websocket")
    assert Message.objects.get(pk=message.pk).body == "moderated"
    [entry] = ModerationAction.objects.all()
    assert (entry.action, entry.actor, entry.target_user, entry.target_message_id, entry.room.slug, entry.source) == (
        "edit_message",
        user,
        message.author,
        message.pk,
        "general",
        "websocket",
    )
    assert entry.detail == {"before": "typo fixed", "after": "moderated"}


def test_rest_edit_of_the_owners_message_by_a_moderator_is_403(ranks, bob, api):
    response = api(bob).patch(f"/api/messages/{ranks['alice'].pk}/", {"body": "rewritten"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert Message.objects.get(pk=ranks["alice"].pk).body == "by alice"


# Usernames: NFKC-normalised, mixed-script look-alikes refused

LOOKALIKE = "\u0430lice"  # a Cyrillic а, then Latin letters


def test_rest_registration_refuses_a_mixed_script_lookalike_but_not_one_writing_system(api, db, django_user_model):
    response = api().post("/api/auth/register/", {"username": LOOKALIKE, "password": "long-enough-9x"}, format="json")
    assert response.status_code == 400
    assert "Cyrillic and Latin" in response.json()["username"][0]
    assert not django_user_model.objects.exists()
    for username in ["алиса", "李小龙", "田中さん", "김민준", "bob_99"]:
        response = api().post(
            "/api/auth/register/", {"username": username, "password": "long-enough-9x"}, format="json"
        )
        assert response.status_code == 201, response.json()
    assert django_user_model.objects.count() == 5


def test_full_width_letters_normalise_before_the_taken_check(api, alice, django_user_model):
    response = api().post(
        "/api/auth/register/", {"username": "ＡＬＩＣＥ", "password": "long-enough-9x"}, format="json"
    )
    assert response.status_code == 400
    assert "taken" in response.json()["username"][0]
    response = api().post("/api/auth/register/", {"username": "ｄａｖｅ", "password": "long-enough-9x"}, format="json")
    assert response.status_code == 201 and response.json()["username"] == "dave"


def test_service_refuses_a_lookalike_whatever_calls_it(db, django_user_model):
    with pytest.raises(Invalid, match="username: .*one alphabet"):
        services.user_register(username=LOOKALIKE, password="long-enough-9x")
    assert not django_user_model.objects.exists()


def test_page_registration_refuses_a_lookalike(db, client, django_user_model):
    response = client.post(
        "/register/", {"username": LOOKALIKE, "password1": "correct-horse-9", "password2": "correct-horse-9"}
    )
    assert response.status_code == 400
    assert "one alphabet" in response.content.decode()
    assert not django_user_model.objects.exists()


def test_admin_cannot_create_a_lookalike(admin_client, django_user_model):
    response = admin_client.post(
        "/admin/auth/user/add/",
        {
            "username": LOOKALIKE,
            "password1": "correct-horse-9",
            "password2": "correct-horse-9",
            "usable_password": "true",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert "one alphabet" in response.content.decode()
    assert not django_user_model.objects.filter(username=LOOKALIKE).exists()
    response = admin_client.post(
        "/admin/auth/user/add/",
        {
            "username": "алиса",
            "password1": "correct-horse-9",
            "password2": "correct-horse-9",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302


# Sign-in and sign-up are throttled per client address and per username, pages and API alike


def allowed(scope: str) -> int:
    return ScopedRateThrottle().parse_rate(django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope])[0]


def assert_throttled_page(response):
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many attempts" in response.content.decode()


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_login_pages_are_throttled_per_address(client, alice, path):
    for _ in range(allowed("login")):
        response = client.post(path, {"username": "alice", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    response = client.post(path, {"username": "alice", "password": PASSWORD})  # even the right one
    assert_throttled_page(response)
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/api/auth/token/"])
def test_logins_are_throttled_per_username_across_addresses(client, alice, staff, path):
    for i in range(allowed("login")):
        client.post(path, {"username": "Alice", "password": "wrong"}, REMOTE_ADDR=f"10.0.0.{i}")
    response = client.post(path, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="10.0.1.1")
    assert response.status_code == 429
    # Another account, from another address, is not affected.
    response = client.post(path, {"username": "root", "password": PASSWORD}, REMOTE_ADDR="10.0.1.2")
    assert response.status_code == (200 if path.startswith("/api/") else 302)


def test_registration_page_is_throttled_per_address(client, db, django_user_model):
    for i in range(allowed("register")):
        response = client.post(
            "/register/", {"username": f"user{i}", "password1": "correct-horse-9", "password2": "correct-horse-9"}
        )
        assert response.status_code == 302
        client.post("/logout/")
    response = client.post(
        "/register/", {"username": "one-more", "password1": "correct-horse-9", "password2": "correct-horse-9"}
    )
    assert_throttled_page(response)
    assert not django_user_model.objects.filter(username="one-more").exists()


def test_registration_api_is_throttled_per_address_and_per_username(api, db, django_user_model):
    for i in range(allowed("register")):
        response = api().post(
            "/api/auth/register/", {"username": f"user{i}", "password": "long-enough-9x"}, format="json"
        )
        assert response.status_code == 201
    response = api().post("/api/auth/register/", {"username": "one-more", "password": "long-enough-9x"}, format="json")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert not django_user_model.objects.filter(username="one-more").exists()
    for i in range(allowed("register")):
        api().post(
            "/api/auth/register/", {"username": "taken?", "password": "x"}, format="json", REMOTE_ADDR=f"10.0.0.{i}"
        )
    response = api().post(
        "/api/auth/register/",
        {"username": "taken?", "password": "long-enough-9x"},
        format="json",
        REMOTE_ADDR="10.0.1.1",
    )
    assert response.status_code == 429
