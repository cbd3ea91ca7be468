"""Moderation and connection states in Chromium, visible: drafts and over-long text, a refused
send's text put back, muted (with its end), locked, staff notices that can be dismissed, banned
(with the reason), archived, reconnecting with a countdown and Retry now while presence greys;
and the phone layout's panels, the skip link and the theme toggle.
"""

import re

import pytest
from playwright.sync_api import expect

from chat import services
from tests.browser import PHONE, chromium, log_in, open_room, screenshot, session_fetch, use_server_hasher
from tests.live import start_daphne

pytestmark = pytest.mark.browser


def test_composer_drafts_limits_mutes_locks_and_notices(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    alice.is_staff = True
    alice.save()
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    server = start_daphne()
    try:
        with chromium() as browser:
            page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
            open_room(page_a, "general")
            open_room(page_b, "general")

            # A draft survives a reload.
            page_b.locator("#body").fill("half a thought")
            page_b.reload()
            expect(page_b.locator("#body")).to_have_value("half a thought")

            # A 5,000-character paste is kept whole and says it is too long before it is sent.
            page_b.locator("#body").fill("x" * 5000)
            expect(page_b.locator("#body-count")).to_have_text(
                "1000 characters over the limit of 4000: shorten it to send."
            )
            expect(page_b.locator("#send")).to_be_disabled()
            assert len(page_b.locator("#body").input_value()) == 5000
            page_b.locator("#body").fill("")
            expect(page_b.locator("#body-count")).to_have_text("")

            # A refused send's text comes back (a lone surrogate, which the server refuses as `invalid`).
            page_b.evaluate("document.querySelector('#body').value = 'broken \\ud800 text'")
            page_b.locator("#body").press("Enter")
            expect(page_b.locator("#notice .notice-text")).to_have_text(re.compile(r"^Not sent: .*Your text is back"))
            assert page_b.evaluate("document.querySelector('#body').value") == "broken \ud800 text"
            page_b.locator("#body").fill("")

            # Muted: the composer closes at once, with the time it ends, and reopens when unmuted.
            assert session_fetch(page_a, "POST", "/api/rooms/general/mutes/", {"username": "bob", "minutes": 5}) == 201
            expect(page_b.locator("#composer-state")).to_have_text(
                re.compile(r"^You are muted in this room until .+\.$")
            )
            expect(page_b.locator("#body")).to_be_disabled()
            expect(page_b.locator("#send")).to_be_disabled()
            screenshot(page_b, "room-muted")
            page_b.reload()  # known from the page too
            expect(page_b.locator("#composer-state")).to_have_text(re.compile(r"^You are muted in this room until"))
            assert session_fetch(page_a, "DELETE", "/api/rooms/general/mutes/bob/") == 204
            expect(page_b.locator("#composer-state")).to_be_hidden()
            expect(page_b.locator("#body")).to_be_enabled()

            # Locked: the box and the button close, and say why; staff may still post.
            assert session_fetch(page_a, "PATCH", "/api/rooms/general/", {"locked": True}) == 200
            expect(page_b.locator("#composer-state")).to_have_text("This room is locked: only staff can post.")
            expect(page_b.locator("#send")).to_be_disabled()
            expect(page_b.locator("#body")).to_be_disabled()
            expect(page_a.locator("#body")).to_be_enabled()
            assert session_fetch(page_a, "PATCH", "/api/rooms/general/", {"locked": False}) == 200
            expect(page_b.locator("#body")).to_be_enabled()

            # A staff notice can be dismissed.
            assert (
                session_fetch(page_a, "POST", "/api/notices/", {"text": "Maintenance at noon", "level": "warning"})
                == 202
            )
            notice = page_b.locator("#notices .notice", has_text="Maintenance at noon")
            expect(notice).to_be_visible()
            notice.get_by_role("button", name="Dismiss").click()
            expect(notice).to_have_count(0)
            assert page_a.errors == [] and page_b.errors == []
    finally:
        server.stop()


def test_reconnecting_banned_and_archived_are_visible(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    services.room_create(user=alice, name="Other", slug="other")
    services.room_join(user=bob, slug="other")
    server = start_daphne()
    try:
        with chromium() as browser:
            page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
            page_b.clock.install()  # time runs as usual until the test pauses it
            open_room(page_a, "general")
            open_room(page_b, "general")
            expect(page_b.locator("#members li[data-user=alice]")).to_have_class(re.compile(r"\bonline\b"))

            # The server goes away: a countdown, Retry now, presence greyed; Retry now reconnects at once.
            port = server.port
            server.stop()
            expect(page_b.locator("#conn-state")).to_have_text("offline")
            expect(page_b.locator("#conn-countdown")).to_have_text(
                re.compile(r"^retrying in ([3-9]|10) s$"), timeout=15_000
            )  # the backoff reaches 3 s within about 4.5 s
            # Stop page B's timers so that its own next attempt cannot beat the click below.
            page_b.clock.pause_at(page_b.evaluate("Date.now()") + 500)
            expect(page_b.locator("#retry-now")).to_be_visible()
            expect(page_b.locator("body")).to_have_class(re.compile(r"\bconn-down\b"))
            grey = page_b.evaluate("""getComputedStyle(document.querySelector('#members li[data-user=alice] .presence'))
                                      .backgroundColor""")
            green = page_a.evaluate("getComputedStyle(document.body).getPropertyValue('--ok')")
            assert grey != green
            server = start_daphne(port=port)
            page_b.click("#retry-now")
            expect(page_b.locator("#conn-state")).to_have_text("online", timeout=5000)
            expect(page_b.locator("#retry-now")).to_be_hidden()
            page_b.clock.resume()
            expect(page_a.locator("#conn-state")).to_have_text("online", timeout=20_000)

            # Banned, with the reason: not a network fault.
            assert (
                session_fetch(
                    page_a, "POST", "/api/rooms/general/bans/", {"username": "bob", "reason": "spamming links"}
                )
                == 201
            )
            expect(page_b.locator("#notice .notice-text")).to_have_text(re.compile(r"banned.*Reason: spamming links"))
            expect(page_b.locator("#composer-state")).to_have_text(re.compile("spamming links"))
            expect(page_b.locator("#conn-state")).to_have_text("disconnected")

            # Archived: said so, and the composer closes.
            open_room(page_b, "other")
            assert session_fetch(page_a, "DELETE", "/api/rooms/other/") == 204
            expect(page_b.locator("#notice .notice-text")).to_have_text("This room has been archived.")
            expect(page_b.locator("#body")).to_be_disabled()
            assert page_b.errors == []
    finally:
        server.stop()


def test_phone_panels_skip_link_and_theme(transactional_db, alice, bob, settings):
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_create(user=alice, name="Random", slug="random")
    services.room_join(user=bob, slug="general")
    server = start_daphne()
    try:
        with chromium() as browser:
            page = log_in(browser, server, "alice", viewport=PHONE)
            open_room(page, "general")

            # The room switcher and the members open from buttons on a phone.
            expect(page.locator("#sidebar")).to_be_hidden()
            page.click("#toggle-sidebar")
            expect(page.locator("#sidebar")).to_be_visible()
            screenshot(page, "room-phone-switcher-open")
            expect(page.locator("#toggle-sidebar")).to_have_attribute("aria-expanded", "true")
            page.keyboard.press("Escape")
            expect(page.locator("#sidebar")).to_be_hidden()
            expect(page.locator("#members-panel")).to_be_hidden()
            page.click("#toggle-members")
            expect(page.locator("#members li[data-user=alice]")).to_be_visible()
            screenshot(page, "room-phone-members-open")
            page.click("#members-panel .close-panel")
            expect(page.locator("#members-panel")).to_be_hidden()
            expect(page.locator("#toggle-members")).to_be_focused()
            page.click("#toggle-sidebar")
            page.click("#room-nav a:has-text('Random')")
            page.wait_for_url(re.compile(r"/rooms/random/$"))

            # The skip link is the first stop and jumps to the content.
            page.keyboard.press("Tab")
            expect(page.locator(".skip-link")).to_be_focused()
            page.keyboard.press("Enter")
            expect(page.locator("#main")).to_be_focused()

            # The theme toggle switches to dark and remembers it.
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.click("#theme-toggle")
            expect(page.locator("#theme-toggle")).to_have_attribute("aria-pressed", "true")
            page.reload()
            assert page.evaluate("document.documentElement.dataset.theme") == "dark"
            assert page.evaluate("getComputedStyle(document.body).backgroundColor") != background
            assert page.errors == []
    finally:
        server.stop()
