"""REST authentication: register, JWT login (throttled), refresh, logout; every endpoint refuses anonymous callers."""

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from rest_framework.throttling import ScopedRateThrottle

from tests.support import PASSWORD, login

User = get_user_model()


# Register


def test_register_creates_a_user_who_can_log_in(api, db):
    response = api().post(
        "/api/auth/register/", {"username": "dave", "password": "long-enough-9x", "email": "d@x.org"}, format="json"
    )
    assert response.status_code == 201
    user = User.objects.get(username="dave")
    assert response.json() == {"id": user.pk, "username": "dave"}
    assert user.email == "d@x.org" and user.check_password("long-enough-9x")
    assert login(api, "dave", "long-enough-9x").status_code == 200


def test_register_ignores_a_stale_token(api, db):
    client = api()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = client.post("/api/auth/register/", {"username": "dave", "password": "long-enough-9x"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize(
    "data, field",
    [
        ({"password": "long-enough-9x"}, "username"),
        ({"username": "dave"}, "password"),
        ({"username": "has space", "password": "long-enough-9x"}, "username"),
        ({"username": "ALICE", "password": "long-enough-9x"}, "username"),  # taken, whatever the case
        ({"username": "dave", "password": "long-enough-9x", "email": "nope"}, "email"),
        ({"username": "dave", "password": "12345678"}, "non_field_errors"),  # too common, all digits
    ],
)
def test_register_rejects_bad_input_with_field_errors(api, alice, data, field):
    before = list(User.objects.values_list("username", flat=True))
    response = api().post("/api/auth/register/", data, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert list(User.objects.values_list("username", flat=True)) == before


def test_register_is_403_when_closed(api, db, settings):
    settings.CHAT_REGISTRATION_OPEN = False
    response = api().post("/api/auth/register/", {"username": "dave", "password": "long-enough-9x"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert not User.objects.filter(username="dave").exists()


# Tokens


def test_token_pair_authenticates_and_refreshes(api, alice):
    tokens = login(api).json()
    assert set(tokens) == {"access", "refresh"}
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.get("/api/me/").json() == {"id": alice.pk, "username": "alice"}

    refreshed = api().post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200
    assert "access" in refreshed.json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed.json()['access']}")
    assert client.get("/api/me/").status_code == 200


@pytest.mark.parametrize("username, password", [("alice", "wrong"), ("nobody", PASSWORD)])
def test_token_refuses_bad_credentials(api, alice, username, password):
    response = login(api, username, password)
    assert response.status_code == 401
    assert "access" not in response.json()


def test_login_is_throttled_per_client(api, alice):
    allowed, _ = ScopedRateThrottle().parse_rate(django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"])
    for _ in range(allowed):
        assert login(api, password="wrong").status_code == 401
    response = login(api)  # even the right password, once over the limit
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "access" not in response.json()


# Logout


def test_logout_blacklists_the_refresh_token(api, alice):
    refresh = login(api).json()["refresh"]
    response = api().post("/api/auth/logout/", {"refresh": refresh}, format="json")
    assert response.status_code == 205
    assert not response.content

    again = api().post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert again.status_code == 401
    assert "blacklisted" in again.json()["detail"]
    assert api().post("/api/auth/logout/", {"refresh": refresh}, format="json").status_code == 401


@pytest.mark.parametrize("data, status", [({}, 400), ({"refresh": "garbage"}, 401)])
def test_logout_refuses_a_bad_token(api, db, data, status):
    response = api().post("/api/auth/logout/", data, format="json")
    assert response.status_code == status
    assert response.json()


# Anonymous callers

PROTECTED = [
    ("get", "/api/me/"),
    ("get", "/api/rooms/"),
    ("post", "/api/rooms/"),
    ("get", "/api/rooms/general/"),
    ("patch", "/api/rooms/general/"),
    ("delete", "/api/rooms/general/"),
    ("post", "/api/rooms/general/join/"),
    ("post", "/api/rooms/general/leave/"),
    ("get", "/api/rooms/general/members/"),
    ("post", "/api/rooms/general/members/"),
    ("delete", "/api/rooms/general/members/alice/"),
    ("get", "/api/rooms/general/messages/"),
    ("post", "/api/rooms/general/messages/"),
    ("post", "/api/rooms/general/read/"),
    ("patch", "/api/messages/1/"),
    ("delete", "/api/messages/1/"),
    ("get", "/api/direct/alice/"),
]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_anonymous_requests_are_401(api, db, method, path):
    response = getattr(api(), method)(path, {}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_invalid_token_is_401(api, db):
    client = api()
    client.credentials(HTTP_AUTHORIZATION="Bearer nonsense")
    assert client.get("/api/me/").status_code == 401
