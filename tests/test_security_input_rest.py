"""Hostile input over REST (security review, findings 10 and 11): URLs and bodies holding text no
database stores, JSON nested without end, numbers past their bounds. Each is a clear 400 (or
404) in JSON, changes nothing, and never a 500.
"""

import json
import logging

import pytest

from chat import services
from chat.errors import Invalid
from tests.support import db_state, user_bodies

MAX_ID = 2**63 - 1  # ids are bigints
UNSTORABLE = "must not contain NUL (U+0000) or unpaired surrogates (U+D800-U+DFFF): send valid Unicode text"
NUL, SURROGATE = "\x00", "\ud800"


# Numbers past their bounds


def test_ban_and_mute_minutes_are_bounded(alice, bob, general_with_bob_and_carol):
    for minutes in (10**11, 5256000 + 1, 0):
        with pytest.raises(Invalid, match="minutes: a whole number from 1 to 5256000"):
            services.member_ban(actor=alice, slug="general", username="bob", minutes=minutes)
    with pytest.raises(Invalid, match="minutes: a whole number from 1 to 525600 "):
        services.member_mute(actor=alice, slug="general", username="bob", minutes=10**11)
    assert services.member_ban(actor=alice, slug="general", username="bob", minutes=5256000).banned_until is not None


# REST


@pytest.mark.parametrize(
    "path",
    [
        "/api/rooms/%00/",
        "/api/rooms/%00/messages/",
        "/api/rooms/%00/join/",
        "/api/direct/%00/",
        "/api/rooms/general/members/%00/",
        "/api/rooms/general/bans/%00/",
        "/api/rooms/general/mutes/%00/",
        "/api/rooms/general/messages/?before=1&x=%00",
        "/api/rooms/general/messages/?%00=1",
    ],
)
@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_a_url_with_nul_is_invalid_before_any_lookup(api, alice, general_with_bob_and_carol, path, method):
    before = db_state()
    response = getattr(api(alice), method)(path)
    assert response.status_code == 400
    assert response.json() == {"detail": f"The URL {UNSTORABLE}.", "code": "invalid"}
    assert db_state() == before


def test_a_page_url_with_nul_is_a_400(client, alice, general_with_bob_and_carol):
    client.force_login(alice)
    response = client.get("/rooms/%00/")
    assert response.status_code == 400 and b"NUL" in response.content


def rest_requests(message_id):
    """(method, path, body) of every REST endpoint that takes text, with "<>" where it goes."""
    return [
        ("post", "/api/auth/register/", {"username": "<>", "password": "long-enough-pass-1"}),
        ("post", "/api/auth/token/", {"username": "<>", "password": "x"}),
        ("post", "/api/auth/token/refresh/", {"refresh": "<>"}),
        ("post", "/api/rooms/", {"name": "<>"}),
        ("post", "/api/rooms/", {"name": "New", "slug": "<>"}),
        ("post", "/api/rooms/", {"name": "New", "topic": "<>"}),
        ("post", "/api/rooms/", {"name": "New", "kind": "<>"}),
        ("patch", "/api/rooms/general/", {"topic": "<>"}),
        ("patch", "/api/rooms/general/", {"name": "<>"}),
        ("post", "/api/rooms/general/members/", {"username": "<>"}),
        ("post", "/api/rooms/general/messages/", {"body": "<>"}),
        ("post", "/api/rooms/general/messages/", {"body": "x", "client_id": "<>"}),
        ("post", "/api/rooms/general/messages/", {"body": "x", "kind": "<>"}),
        ("patch", f"/api/messages/{message_id}/", {"body": "<>"}),
        ("post", f"/api/messages/{message_id}/report/", {"reason": "<>"}),
        ("post", "/api/rooms/general/bans/", {"username": "bob", "reason": "<>"}),
        ("post", "/api/rooms/general/bans/", {"username": "<>"}),
        ("post", "/api/rooms/general/mutes/", {"username": "<>", "minutes": 5}),
        ("post", "/api/notices/", {"text": "<>"}),
        ("post", "/api/notices/", {"text": "x", "room": "<>"}),
        ("post", "/api/rooms/general/messages/", {"body": "x", "unknown": ["<>"]}),
    ]


@pytest.mark.parametrize("poison", [NUL, SURROGATE])
def test_unstorable_text_in_any_rest_body_is_invalid(
    api, alice, bob, staff, general_with_bob_and_carol, poison, published
):
    message = services.message_send(user=bob, slug="general", body="hello")[0]
    before = db_state()
    for method, path, body in rest_requests(message.pk):
        text = json.dumps(body).replace("<>", json.dumps(poison)[1:-1])
        response = getattr(api(staff), method)(path, data=text, content_type="application/json")
        assert (response.status_code, response.json()["code"]) == (400, "invalid"), (path, body, response.content)
        assert "NUL (U+0000) or unpaired surrogates" in response.json()["detail"]
    assert db_state() == before and published == []


def test_nul_in_a_form_body_is_invalid(api, alice, general_with_bob_and_carol):
    response = api(alice).post("/api/rooms/general/messages/", {"body": "x\x00"})  # multipart
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    response = api(alice).post(
        "/api/rooms/general/messages/", "body=x%00", content_type="application/x-www-form-urlencoded"
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert user_bodies() == []


@pytest.mark.parametrize(
    "text",
    [
        "[" * 2000 + "]" * 2000,
        "[" * 100_000 + "]" * 100_000,
        '{"body": ' + "[" * 33 + "]" * 33 + "}",
        '{"body": "x", "client_id": ' + "1" * 5000 + "}",
    ],
)
def test_hostile_json_bodies_are_a_clear_400(api, alice, general_with_bob_and_carol, text, caplog):
    response = api(alice).post("/api/rooms/general/messages/", data=text, content_type="application/json")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert detail.startswith("JSON parse error - ") and "sys.set_int_max_str_digits" not in detail
    assert user_bodies() == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/api/rooms/general/bans/", '{"username": "bob", "minutes": 1e11}'),
        ("post", "/api/rooms/general/bans/", '{"username": "bob", "minutes": 5256001}'),
        ("post", "/api/rooms/general/read/", '{"message_id": %d}' % 2**64),
        ("get", f"/api/rooms/general/messages/?before={MAX_ID + 1}", None),
        ("get", f"/api/rooms/general/messages/?after={2**70}", None),
        ("get", f"/api/rooms/general/export/?since={MAX_ID + 1}", None),
        ("get", f"/api/rooms/general/export/?until={2**70}", None),
    ],
)
def test_numbers_beyond_their_bounds_are_a_400_naming_the_field(
    api, alice, general_with_bob_and_carol, method, path, body
):
    before = db_state()
    kwargs = {"data": body, "content_type": "application/json"} if body else {}
    response = getattr(api(alice), method)(path, **kwargs)
    assert response.status_code == 400, response.content
    field = "minutes" if "minutes" in (body or "") else "message_id" if body else path.split("?")[1].split("=")[0]
    assert list(response.json()) == [field] and "less than or equal to" in response.json()[field][0]
    assert db_state() == before
    # In a path, such an id names no message.
    for method, path in (
        ("patch", f"/api/messages/{2**64}/"),
        ("delete", f"/api/messages/{2**64}/"),
        ("post", f"/api/messages/{2**64}/report/"),
    ):
        response = getattr(api(alice), method)(path, data={"body": "x", "reason": "x"}, format="json")
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
