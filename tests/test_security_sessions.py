"""A password change ends every other sign-in: refresh tokens (rotated ones too) are blacklisted,
earlier access tokens and other sessions stop working, and the user's other sockets close with
4401; the session that made the change stays signed in, its sockets open."""

import asyncio

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.test import Client
from rest_framework.throttling import ScopedRateThrottle
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken

from chat import services
from tests.live import http_json
from tests.support import PASSWORD, connect, db, login, ws_connect

pytestmark = pytest.mark.usefixtures("fresh_layer")

User = get_user_model()
NEW = "brand-new-pass-7"


class FastPBKDF2(PBKDF2PasswordHasher):
    iterations = 1000


def bearer(api, access):
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def refresh(api, token):
    return api().post("/api/auth/token/refresh/", {"refresh": token}, format="json")


def test_rest_password_change_ends_every_earlier_token(api, alice):
    first = login(api).json()
    rotated = refresh(api, first["refresh"]).json()["refresh"]  # rotation must not outlive the change
    other_device = login(api).json()
    response = bearer(api, first["access"]).post(
        "/api/auth/password/", {"old_password": PASSWORD, "new_password": NEW}, format="json"
    )
    assert response.status_code == 200
    fresh = response.json()
    for token in (rotated, other_device["refresh"]):
        assert refresh(api, token).status_code == 401
    for access in (first["access"], other_device["access"]):
        assert bearer(api, access).get("/api/me/").status_code == 401
    assert bearer(api, fresh["access"]).get("/api/me/").status_code == 200
    assert refresh(api, fresh["refresh"]).status_code == 200
    assert login(api).status_code == 401 and login(api, password=NEW).status_code == 200


@pytest.mark.parametrize(
    "data, field",
    [
        ({"old_password": "wrong", "new_password": NEW}, "old_password"),
        ({"old_password": PASSWORD, "new_password": "123"}, "new_password"),  # Django's validators
        ({"old_password": PASSWORD, "new_password": "alice"}, "new_password"),
        ({"old_password": PASSWORD}, "new_password"),
    ],
)
def test_rest_password_change_refuses_bad_input_and_changes_nothing(api, alice, data, field):
    tokens = login(api).json()
    response = bearer(api, tokens["access"]).post("/api/auth/password/", data, format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body or body["detail"].startswith(f"{field}: ")
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
    assert bearer(api, tokens["access"]).get("/api/me/").status_code == 200
    assert refresh(api, tokens["refresh"]).status_code == 200


def test_page_password_change_keeps_this_session_and_ends_the_others(api, alice):
    this, other = Client(), Client()
    this.force_login(alice)
    other.force_login(alice)
    tokens = login(api).json()
    assert 'href="/account/password/"' in this.get("/").content.decode()
    response = this.post("/account/password/", {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW})
    assert response.status_code == 302 and response["Location"] == "/"
    assert this.get("/").status_code == 200
    assert other.get("/")["Location"].startswith("/login/")
    assert refresh(api, tokens["refresh"]).status_code == 401
    assert bearer(api, tokens["access"]).get("/api/me/").status_code == 401


def test_page_password_change_shows_errors_and_changes_nothing(alice):
    client = Client()
    client.force_login(alice)
    response = client.post("/account/password/", {"old_password": "wrong", "new_password1": NEW, "new_password2": NEW})
    assert response.status_code == 400
    assert "not your current password" in response.content.decode()
    response = client.post(
        "/account/password/", {"old_password": PASSWORD, "new_password1": "123", "new_password2": "123"}
    )
    assert response.status_code == 400 and "too short" in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


@pytest.mark.django_db(transaction=True)
async def test_password_change_closes_the_users_other_sockets_4401(alice, bob):
    this, other = Client(), Client()
    await db(this.force_login)(alice)
    await db(other.force_login)(alice)

    def by_session(client):
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        return connect(
            path="/ws/chat/",
            headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")],
        )

    by_token, other_socket, this_socket = await connect(alice), await by_session(other), await by_session(this)
    bobs = await connect(bob)
    response = await db(this.post)(
        "/account/password/", {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW}
    )
    assert response.status_code == 302
    assert await by_token.closed() == 4401
    assert await other_socket.closed() == 4401
    for socket in (this_socket, bobs):  # the session that changed it, and other users, are untouched
        await socket.send(type="ping")
        await socket.expect("pong")
        await socket.close()
    stale = await connect(alice, hello=False)  # conftest's token was issued under the old password
    assert await stale.closed() == 4401
    cookie = f"sessionid={other.cookies['sessionid'].value}".encode()  # the other session, signed out
    again = await connect(
        path="/ws/chat/",
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")],
        hello=False,
    )
    assert await again.closed() == 4401


def test_rotation_keeps_the_sign_in_time_and_cannot_stretch_a_sign_in_past_its_limit(api, alice):
    tokens = login(api).json()
    signed_in = RefreshToken(tokens["refresh"])["auth_time"]
    token = tokens["refresh"]
    for _ in range(3):
        token = refresh(api, token).json()["refresh"]
    assert RefreshToken(token)["auth_time"] == signed_in
    backdated = RefreshToken(token)  # the same token, re-signed, as if the sign-in were older than the limit
    backdated["auth_time"] = signed_in - django_settings.JWT_SESSION_MAX_DAYS * 86400 - 1
    response = refresh(api, str(backdated))
    assert response.status_code == 401
    assert "sign in again" in response.json()["detail"]


def test_a_refresh_token_that_escaped_the_blacklist_is_still_refused_after_a_change(api, alice):
    """E.g. one rotated while the change committed: it names the old password."""
    token = login(api).json()["refresh"]
    services.password_change(user=alice, old_password=PASSWORD, new_password=NEW)
    BlacklistedToken.objects.all().delete()
    response = refresh(api, token)
    assert response.status_code == 401 and "password changed" in response.json()["detail"]


def test_old_password_guesses_are_throttled_like_logins(api, alice):
    """A stolen session or token must not become a password oracle."""
    allowed, _ = ScopedRateThrottle().parse_rate(django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"])
    page, rest = Client(), bearer(api, login(api).json()["access"])  # that login counted once
    page.force_login(alice)
    for i in range(allowed - 1):  # half on the page, half over REST: one count
        if i % 2:
            response = page.post(
                "/account/password/", {"old_password": f"guess-{i}", "new_password1": NEW, "new_password2": NEW}
            )
        else:
            response = rest.post(
                "/api/auth/password/", {"old_password": f"guess-{i}", "new_password": NEW}, format="json"
            )
        assert response.status_code == 400
    assert (
        rest.post("/api/auth/password/", {"old_password": PASSWORD, "new_password": NEW}, format="json").status_code
        == 429
    )
    response = page.post("/account/password/", {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW})
    assert response.status_code == 429
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


@pytest.mark.live
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_a_change_through_one_process_closes_the_users_sockets_on_another(daphne_a, daphne_b, alice):
    alice.password = make_password(PASSWORD, hasher=FastPBKDF2())  # the servers don't know the tests' MD5 hasher
    await db(alice.save)(update_fields=["password"])
    on_a, on_b = await ws_connect(daphne_a, alice), await ws_connect(daphne_b, alice)
    status, tokens = await asyncio.to_thread(
        http_json, daphne_a, "POST", "/api/auth/password/", {"old_password": PASSWORD, "new_password": NEW}, user=alice
    )
    assert status == 200, tokens
    for socket in (on_a, on_b):
        assert await socket.close_frame() == (4401, "password changed: sign in again")
    stale = await ws_connect(daphne_b, alice, hello=False)  # a token issued under the old password
    assert await stale.closed() == 4401
    fresh = await ws_connect(daphne_b, token=tokens["access"])
    assert fresh.hello["user"]["username"] == "alice"
    await fresh.close()


def test_a_password_set_in_the_admin_ends_the_users_sign_ins(
    admin_client, api, alice, published, django_capture_on_commit_callbacks
):
    tokens = login(api).json()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/auth/user/{alice.pk}/password/", {"password1": NEW, "password2": NEW, "usable_password": "true"}
        )
    assert response.status_code == 302
    assert refresh(api, tokens["refresh"]).status_code == 401
    assert (
        f"user.{alice.pk}",
        {"type": "chat.close", "code": 4401, "reason": "password changed: sign in again", "keep_session": None},
    ) in published
    assert admin_client.get("/admin/").status_code == 200  # the admin's own session is untouched
