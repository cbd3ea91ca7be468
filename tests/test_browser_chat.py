"""The browser client in headless Chromium against a real daphne: live messages, presence, typing,
history paging, reconnecting with resends, reloads, gaps, live edits and deletes, locks,
removal from the room and a lost session (close 4401). Helpers: tests/browser.py.
"""

import re

import pytest
from playwright.sync_api import expect

from chat import services
from chat.models import Membership, Message
from tests.browser import (
    chromium,
    in_thread,
    last_body,
    log_in,
    message_ids,
    open_room,
    session_fetch,
    use_server_hasher,
)
from tests.live import start_daphne

OLD_MESSAGES = 55

pytestmark = pytest.mark.browser


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
            expect(page_b.locator("#members li.online", has_text="alice")).to_be_visible()
            expect(page_a.locator("#members li.online", has_text="bob")).to_be_visible()

            # Typing shows up for bob while alice types; Enter sends; bob gets it live, as text.
            page_a.locator("#body").press_sequentially("<b>x</b>", delay=20)
            expect(page_b.locator("#typing")).to_have_text("alice is typing…")
            page_a.locator("#body").press("Enter")
            expect(page_b.locator("#messages .msg")).to_have_count(50 + 1)
            assert last_body(page_b) == "<b>x</b>"
            assert page_b.locator("#messages .msg .author").last.text_content() == "alice"
            assert page_b.locator("#messages b").count() == 0
            expect(page_b.locator("#typing")).to_have_text("")
            expect(page_a.locator("#pending .msg")).to_have_count(0)
            assert last_body(page_a) == "<b>x</b>"

            # Shift+Enter is a new line, not a send.
            page_a.locator("#body").press_sequentially("line one")
            page_a.locator("#body").press("Shift+Enter")
            page_a.locator("#body").press_sequentially("line two")
            page_a.locator("#body").press("Enter")
            expect(page_b.locator("#messages .msg")).to_have_count(50 + 2)
            assert last_body(page_b) == "line one\nline two"

            # Older history over REST, in id order without duplicates.
            expect(page_b.locator("#load-older")).to_be_visible()
            page_b.click("#load-older")
            expect(page_b.locator("#messages .msg")).to_have_count(history_size + 2)
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
            expect(page_a.locator("#pending .msg")).to_have_count(1)
            server = start_daphne(port=port)
            expect(page_a.locator("#conn-state")).to_have_text("online", timeout=30_000)
            expect(page_b.locator("#conn-state")).to_have_text("online", timeout=30_000)
            expect(page_a.locator("#pending .msg")).to_have_count(0)
            expect(page_b.locator("#messages .msg")).to_have_count(history_size + 3)
            assert last_body(page_b) == "sent while offline"
            ids = message_ids(page_b)
            assert ids == sorted(set(ids))

            # A reload renders the history on the server, still as text; the page marks it read.
            with page_b.expect_websocket() as socket_info:
                page_b.reload()
            socket_info.value.wait_for_event("framereceived", lambda text: '"type":"unread"' in text)
            expect(page_b.locator("#conn-state")).to_have_text("online")
            bodies = page_b.locator("#messages .msg .body").all_text_contents()
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
            shown = page_b.locator("#messages .msg").count()

            # 12 messages while bob is away, more than the server replays: the client fetches the gap.
            port = server.port
            server.stop()
            expect(page_b.locator("#conn-state")).to_have_class(re.compile(r"\boffline\b"))
            in_thread(
                lambda: [services.message_send(user=alice, slug="general", body=f"missed {n}") for n in range(12)]
            )
            server = start_daphne(env, port=port)
            expect(page_b.locator("#conn-state")).to_have_text("online", timeout=30_000)
            expect(page_b.locator("#messages .msg")).to_have_count(shown + 12)
            assert page_b.locator("#messages .msg .body").all_text_contents()[-12:] == [
                f"missed {n}" for n in range(12)
            ]
            ids = message_ids(page_b)
            assert ids == sorted(set(ids))

            # Alice edits, deletes and locks over REST with her session and CSRF token; bob sees each live.
            edited, deleted = ids[-1], ids[-2]
            assert session_fetch(page_a, "PATCH", f"/api/messages/{edited}/", {"body": "edited <i>y</i>"}) == 200
            item = page_b.locator(f'#messages .msg[data-id="{edited}"]')
            expect(item.locator(".edited")).to_be_visible()
            assert item.locator(".body").text_content() == "edited <i>y</i>"
            assert session_fetch(page_a, "DELETE", f"/api/messages/{deleted}/") == 204
            expect(page_b.locator(f'#messages .msg[data-id="{deleted}"]')).to_have_class(re.compile(r"\bdeleted\b"))
            expect(page_b.locator(f'#messages .msg[data-id="{deleted}"] .body')).to_have_text("")
            assert session_fetch(page_a, "PATCH", "/api/rooms/general/", {"locked": True}) == 200
            expect(page_b.locator("#room-locked")).to_be_visible()
            expect(page_b.locator("#body")).to_be_disabled()

            # Alice removes bob: bob's page stops.
            assert session_fetch(page_a, "DELETE", "/api/rooms/general/members/bob/") == 204
            # room.left says why; a page that was reconnecting at that moment learns it from hello.
            expect(page_b.locator("#notice .notice-text")).to_have_text(
                re.compile(r"^(You were removed from this room\.|You are no longer a member of this room\.)$")
            )
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
