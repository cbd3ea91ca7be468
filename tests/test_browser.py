"""The browser client in headless Chromium against a real daphne: live messages, presence, typing,
history paging, reconnecting with resends, reloads, gaps, live edits and deletes, locks,
removal from the room and a lost session (close 4401).

Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls, so
the database is prepared before the browser starts and checked after it stops, or written
from another thread (`in_thread`) meanwhile.
"""
import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import global_settings
from django.db import connection
from django.test import override_settings
from playwright.sync_api import expect, sync_playwright

from chat import services
from chat.models import Membership, Message
from tests.live import start_daphne

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "s3cret-pass-1"  # conftest's make_user default
OLD_MESSAGES = 55
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.browser


def in_thread(fn, *args, **kwargs):
    """Run an ORM call while the browser runs, closing the thread's own connection after it."""
    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def use_server_hasher(*users):
    """conftest hashes passwords cheaply; daphne runs the real settings, whose hashers must read them."""
    with override_settings(PASSWORD_HASHERS=global_settings.PASSWORD_HASHERS):
        for user in users:
            user.set_password(PASSWORD)
            user.save(update_fields=["password"])


def log_in(browser, server, username):
    page = browser.new_context(base_url=server.url).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    assert page.goto("/login/").status == 200
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")
    return page


def open_room(page, slug):
    assert page.goto(f"/rooms/{slug}/").status == 200
    expect(page.locator("#conn-state")).to_have_text("online")


def session_fetch(page, method, url, data=None) -> int:
    """The status of a same-origin JSON request from `page`, with its session cookie and CSRF token."""
    return page.evaluate("""async ([method, url, data]) => {
        const token = document.cookie.match(/csrftoken=([^;]+)/)[1];
        const response = await fetch(url, {method, body: data === null ? undefined : JSON.stringify(data),
                                           headers: {"X-CSRFToken": token, "Content-Type": "application/json"}});
        return response.status;
    }""", [method, url, data])


def message_ids(page) -> list[int]:
    return page.eval_on_selector_all("#messages li", "items => items.map(li => Number(li.dataset.id))")


def last_body(page) -> str:
    return page.locator("#messages li .body").last.text_content()


@pytest.fixture(autouse=True)
def _needs_chromium():
    if not Path(CHROMIUM).exists():  # conftest deselects these tests then, unless CHAT_REQUIRE_SERVICES=1
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests")


@contextlib.contextmanager
def chromium():
    """A headless browser; enter it only after the test's own ORM calls (see the module docstring)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_two_users_chat_live_in_chromium(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    for n in range(OLD_MESSAGES):
        services.message_send(user=alice, slug="general", body=f"old {n}")
    history_size = Message.objects.filter(room__slug="general").count()

    server = start_daphne()
    try:
        with chromium() as browser:
            page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
            open_room(page_a, "general")
            open_room(page_b, "general")

            # Presence: each sees the other online.
            expect(page_b.locator("#online li", has_text="alice")).to_be_visible()
            expect(page_a.locator("#online li", has_text="bob")).to_be_visible()

            # Typing shows up for bob while alice types; Enter sends; bob gets it live, as text.
            page_a.locator("#body").press_sequentially("<b>x</b>", delay=20)
            expect(page_b.locator("#typing")).to_have_text("alice is typing…")
            page_a.locator("#body").press("Enter")
            expect(page_b.locator("#messages li")).to_have_count(50 + 1)
            assert last_body(page_b) == "<b>x</b>"
            assert page_b.locator("#messages li .author").last.text_content() == "alice"
            assert page_b.locator("#messages b").count() == 0
            expect(page_b.locator("#typing")).to_have_text("")
            expect(page_a.locator("#pending li")).to_have_count(0)
            assert last_body(page_a) == "<b>x</b>"

            # Shift+Enter is a new line, not a send.
            page_a.locator("#body").press_sequentially("line one")
            page_a.locator("#body").press("Shift+Enter")
            page_a.locator("#body").press_sequentially("line two")
            page_a.locator("#body").press("Enter")
            expect(page_b.locator("#messages li")).to_have_count(50 + 2)
            assert last_body(page_b) == "line one\nline two"

            # Older history over REST, in id order without duplicates.
            expect(page_b.locator("#load-older")).to_be_visible()
            page_b.click("#load-older")
            expect(page_b.locator("#messages li")).to_have_count(history_size + 2)
            expect(page_b.locator("#load-older")).to_be_hidden()
            ids = message_ids(page_b)
            assert ids == sorted(set(ids))

            # The server restarts: both show offline; a send made meanwhile goes out once, after reconnecting.
            port = server.port
            server.stop()
            expect(page_a.locator("#conn-state")).to_have_class(re.compile(r"\boffline\b"))
            expect(page_b.locator("#conn-state")).to_have_class(re.compile(r"\boffline\b"))
            page_a.locator("#body").fill("sent while offline")
            page_a.locator("#body").press("Enter")
            expect(page_a.locator("#pending li")).to_have_count(1)
            server = start_daphne(port=port)
            expect(page_a.locator("#conn-state")).to_have_text("online", timeout=30_000)
            expect(page_b.locator("#conn-state")).to_have_text("online", timeout=30_000)
            expect(page_a.locator("#pending li")).to_have_count(0)
            expect(page_b.locator("#messages li")).to_have_count(history_size + 3)
            assert last_body(page_b) == "sent while offline"
            ids = message_ids(page_b)
            assert ids == sorted(set(ids))

            # A reload renders the history on the server, still as text; the page marks it read.
            with page_b.expect_websocket() as socket_info:
                page_b.reload()
            socket_info.value.wait_for_event("framereceived", lambda text: '"type":"unread"' in text)
            expect(page_b.locator("#conn-state")).to_have_text("online")
            bodies = page_b.locator("#messages li .body").all_text_contents()
            assert bodies[-3:] == ["<b>x</b>", "line one\nline two", "sent while offline"]
            assert page_b.locator("#messages b").count() == 0
    finally:
        server.stop()

    sent = Message.objects.filter(room__slug="general", author=alice, body="sent while offline")
    assert sent.count() == 1
    newest = Message.objects.filter(room__slug="general").latest("id")
    assert newest == sent.get()
    assert Membership.objects.get(room__slug="general", user=bob).last_read_id == newest.pk


def test_client_follows_gaps_edits_locks_removal_and_lost_sessions(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    services.message_send(user=alice, slug="general", body="before")
    env = {"CHAT_REPLAY_LIMIT": "5"}

    server = start_daphne(env)
    try:
        with chromium() as browser:
            page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
            open_room(page_a, "general")
            open_room(page_b, "general")
            shown = page_b.locator("#messages li").count()

            # 12 messages while bob is away, more than the server replays: the client fetches the gap.
            port = server.port
            server.stop()
            expect(page_b.locator("#conn-state")).to_have_class(re.compile(r"\boffline\b"))
            in_thread(lambda: [services.message_send(user=alice, slug="general", body=f"missed {n}")
                               for n in range(12)])
            server = start_daphne(env, port=port)
            expect(page_b.locator("#conn-state")).to_have_text("online", timeout=30_000)
            expect(page_b.locator("#messages li")).to_have_count(shown + 12)
            assert page_b.locator("#messages li .body").all_text_contents()[-12:] == [f"missed {n}" for n in range(12)]
            ids = message_ids(page_b)
            assert ids == sorted(set(ids))

            # Alice edits, deletes and locks over REST with her session and CSRF token; bob sees each live.
            edited, deleted = ids[-1], ids[-2]
            assert session_fetch(page_a, "PATCH", f"/api/messages/{edited}/", {"body": "edited <i>y</i>"}) == 200
            item = page_b.locator(f'#messages li[data-id="{edited}"]')
            expect(item.locator(".edited")).to_be_visible()
            assert item.locator(".body").text_content() == "edited <i>y</i>"
            assert session_fetch(page_a, "DELETE", f"/api/messages/{deleted}/") == 204
            expect(page_b.locator(f'#messages li[data-id="{deleted}"]')).to_have_class(re.compile(r"\bdeleted\b"))
            expect(page_b.locator(f'#messages li[data-id="{deleted}"] .body')).to_have_text("")
            assert session_fetch(page_a, "PATCH", "/api/rooms/general/", {"locked": True}) == 200
            expect(page_b.locator("#room-locked")).to_be_visible()
            expect(page_b.locator("#body")).to_be_disabled()

            # Alice removes bob: bob's page stops.
            assert session_fetch(page_a, "DELETE", "/api/rooms/general/members/bob/") == 204
            # room.left says why; a page that was reconnecting at that moment learns it from hello.
            expect(page_b.locator("#notice")).to_have_text(
                re.compile(r"^(You were removed from this room\.|You are no longer a member of this room\.)$"))
            expect(page_b.locator("#conn-state")).to_have_text("disconnected")
            expect(page_b.locator("#body")).to_be_disabled()

            # Alice's session ends; after the next reconnect the server closes with 4401: to the login page.
            page_a.context.clear_cookies()
            server.stop()
            server = start_daphne(env, port=port)
            page_a.wait_for_url(re.compile(r"/login/\?next=/rooms/general/$"), timeout=30_000)
    finally:
        server.stop()

    assert not Membership.objects.filter(room__slug="general", user=bob).exists()
