"""A cookie-authenticated WebSocket needs an Origin equal to an allowed origin: scheme, host and port."""

import pytest

from tests.support import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]


@pytest.fixture
def cookie(client, general, alice):
    client.force_login(alice)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def hello_or_close(client) -> str | int:
    frame_or_close = await client.comm.receive_output(2)
    if frame_or_close["type"] == "websocket.close":
        await client.comm.disconnect()
        return frame_or_close["code"]
    await client.close()
    return "hello"


@pytest.mark.parametrize(
    "origin",
    [b"http://localhost:6666", b"https://localhost:8000", b"http://localhost", b"http://evil.example:8000", b"null"],
)
async def test_another_port_scheme_or_host_is_refused_4401(cookie, origin):
    headers = [(b"cookie", cookie), (b"origin", origin), (b"host", b"localhost:8000")]
    client = await connect(path="/ws/chat/", headers=headers, hello=False)
    assert await hello_or_close(client) == 4401


async def test_the_pages_own_origin_is_accepted(cookie):
    client = await connect(
        path="/ws/chat/",
        headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")],
        hello=False,
    )
    assert await hello_or_close(client) == "hello"


async def test_a_host_outside_allowed_hosts_is_no_origin_of_ours(cookie):
    """Origin and Host agree, but on a name the server does not serve (DNS rebinding)."""
    client = await connect(
        path="/ws/chat/",
        headers=[(b"cookie", cookie), (b"origin", b"http://evil.example"), (b"host", b"evil.example")],
        hello=False,
    )
    assert await hello_or_close(client) == 4401


async def test_csrf_trusted_origins_are_allowed_exactly(cookie, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    for origin, expected in [
        (b"https://chat.example.com", "hello"),
        (b"https://chat.example.com:443", "hello"),
        (b"https://chat.example.com:8443", 4401),
        (b"http://chat.example.com", 4401),
        (b"https://a.example.org", "hello"),
        (b"https://example.net", 4401),
    ]:
        client = await connect(
            path="/ws/chat/",
            headers=[(b"cookie", cookie), (b"origin", origin), (b"host", b"localhost:8000")],
            hello=False,
        )
        assert (origin, await hello_or_close(client)) == (origin, expected)


async def test_behind_a_tls_proxy_the_origin_is_https(cookie, settings):
    """daphne sees `ws`; the proxy's header (SECURE_PROXY_SSL_HEADER) says the browser used https."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    base = [(b"cookie", cookie), (b"host", b"localhost")]
    for extra, origin, expected in [
        ([(b"x-forwarded-proto", b"https")], b"https://localhost", "hello"),
        ([(b"x-forwarded-proto", b"https")], b"http://localhost", 4401),
        ([], b"https://localhost", 4401),
    ]:
        client = await connect(path="/ws/chat/", headers=[*base, *extra, (b"origin", origin)], hello=False)
        assert (origin, extra, await hello_or_close(client)) == (origin, extra, expected)
