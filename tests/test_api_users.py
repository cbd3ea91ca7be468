"""GET /api/users/?q=: username suggestions for invitations and direct messages."""


def test_users_by_prefix_are_active_sorted_and_limited(api, alice, bob, make_user):
    make_user("bobby")
    make_user("bobcat", is_active=False)
    make_user("BOBO")
    response = api(alice).get("/api/users/?q=bob")
    assert response.status_code == 200
    assert [u["username"] for u in response.json()] == ["bob", "bobby", "BOBO"]
    assert set(response.json()[0]) == {"id", "username"}
    assert [u["username"] for u in api(alice).get("/api/users/?q=bob&limit=1").json()] == ["bob"]


def test_users_needs_a_prefix_and_a_sign_in(api, alice):
    assert api(alice).get("/api/users/").status_code == 400
    assert api(alice).get("/api/users/?q=a&limit=21").status_code == 400
    assert api(None).get("/api/users/?q=a").status_code == 401
