"""Message search in Chromium (issue 20): the sidebar's search box, results with the highlight and
the room, a click that opens the room at the message (the history around it), the room and author
filters, escaped bodies, and the Chinese page. Helpers: tests/browser.py.
"""

import pytest
from playwright.sync_api import expect

from chat import services
from tests.browser import CHINESE, ONLINE, chromium, log_in, open_room, use_server_hasher
from tests.live import start_daphne

pytestmark = pytest.mark.browser


def search(page, q, room="", author=""):
    page.fill("#search-q", q)
    page.select_option("#search-room", room)
    page.fill("#search-author", author)
    page.locator("#search-form button[type=submit]").click()


def test_search_finds_highlights_filters_and_opens_the_message(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_create(user=alice, name="Random", slug="random")
    services.room_join(user=bob, slug="general")
    target = services.message_send(user=bob, slug="general", body="我们看到了一只熊猫 <b>bold?</b>")[0]
    services.message_send(user=alice, slug="random", body="熊猫 in random")
    for n in range(120):  # the target leaves the room's first page of history
        services.message_send(user=alice, slug="general", body=f"filler {n}")

    server = start_daphne()
    try:
        with chromium() as browser:
            page = log_in(browser, server, "alice")
            open_room(page, "random")
            search(page, "熊猫")
            results = page.locator("#search-results .search-item")
            expect(results).to_have_count(2)
            expect(results.first).to_contain_text("#random")
            hit = results.nth(1)
            expect(hit).to_contain_text("#general")
            expect(hit.locator("mark")).to_have_text("熊猫")
            expect(hit.locator(".search-text")).to_have_text("我们看到了一只熊猫 <b>bold?</b>")
            assert hit.locator(".search-text b").count() == 0

            # The filters: the room, then the author.
            search(page, "熊猫", room="random")
            expect(results).to_have_count(1)
            expect(results.first).to_contain_text("#random")
            search(page, "熊猫", author="bob")
            expect(results).to_have_count(1)
            search(page, "nothing-like-this")
            expect(page.locator("#search-status")).to_have_text("No messages match.")

            # A click opens the other room at the message, with the history around it.
            search(page, "熊猫", author="bob")
            results.first.locator("a").click()
            expect(page).to_have_url(f"{server.url}/rooms/general/#m{target.pk}")
            message = page.locator(f'#messages .msg[data-id="{target.pk}"]')
            expect(message).to_be_visible()
            expect(message).to_contain_text("熊猫")
            assert page.errors == [], page.errors

            # Chinese page: the box speaks Chinese.
            page_zh = log_in(browser, server, "bob", locale=CHINESE)
            open_room(page_zh, "general", online=ONLINE[CHINESE])
            expect(page_zh.locator("#search-q")).to_have_attribute("placeholder", "搜索消息")
            search(page_zh, "不存在的词")
            expect(page_zh.locator("#search-status")).to_have_text("没有匹配的消息。")
    finally:
        server.stop()
