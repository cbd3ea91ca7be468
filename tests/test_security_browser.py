"""The Content-Security-Policy in headless Chromium: the chat page (its WebSocket included), the
admin and the API docs work, and the browser reports no violation on any of them."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from chat import services
from tests.browser import CHROMIUM, PASSWORD, TIMEOUT_MS, chromium, use_server_hasher
from tests.live import run_daphne

pytestmark = pytest.mark.browser


def watched_page(browser, server, violations: list):
    page = browser.new_context(base_url=server.url).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    return page


def test_pages_admin_and_api_docs_run_under_the_policy(transactional_db, admin_user):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests")
    use_server_hasher(admin_user)
    room = services.room_create(user=admin_user, name="General", slug="general")
    services.message_send(user=admin_user, slug="general", body="hello")
    violations = []
    with run_daphne() as server, chromium() as browser:
        page = watched_page(browser, server, violations)
        assert page.goto("/login/").status == 200
        page.fill("#id_username", admin_user.username)
        page.fill("#id_password", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(f"{server.url}/")
        assert page.goto("/rooms/general/").status == 200
        expect(page.locator("#conn-state")).to_have_text("online")  # the socket: connect-src 'self'
        for path in ("/admin/", "/admin/chat/message/", f"/admin/chat/room/{room.pk}/change/"):
            assert page.goto(path).status == 200
            expect(page.locator("#site-name")).to_be_visible()
        assert page.goto("/api/docs/").status == 200
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Chat API")
        expect(page.locator(".opblock-tag").first).to_be_visible()
    assert violations == []
