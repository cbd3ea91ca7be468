"""The browser client in Simplified Chinese: a browser whose language is Chinese (zh-CN, its
Accept-Language) gets every page in Chinese, with times in the Chinese format; two users chat live
in Chinese, system messages ("bob joined", stored in English) included; a refused action says why
in Chinese; and an English browser switches with the header's switcher, which keeps the page and
persists. Looks (axe, themes, sizes): tests/test_browser_looks.py.
"""

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.utils import translation
from playwright.sync_api import expect

from chat import services
from tests.browser import (
    CHINESE,
    ONLINE,
    chromium,
    last_body,
    log_in,
    new_page,
    open_room,
    session_fetch,
    use_server_hasher,
)
from tests.live import run_daphne

pytestmark = pytest.mark.browser


def chinese(message: str) -> str:
    """The catalogue's translation of a server-side message, which must differ from the English."""
    with translation.override("zh-hans"):
        translated = translation.gettext(message)
    assert translated != message, message
    return translated


def test_two_users_chat_live_in_chinese(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    services.message_send(user=bob, slug="general", body="你好")
    expected = {
        text: chinese(text)
        for text in (
            "Log in",
            "Register",
            "Your rooms",
            "Public rooms to join",
            "Send",
            "Room directory",
            "Profile",
            "Change password",
            "Search",
        )
    }
    placeholder = chinese("Message %(name)s (Enter to send, Shift+Enter for a new line)") % {"name": "General"}
    with run_daphne() as server, chromium() as browser:
        anonymous = new_page(browser, server, locale=CHINESE)
        assert anonymous.goto("/login/").status == 200
        assert anonymous.locator("html").get_attribute("lang") == "zh-hans"
        expect(anonymous.locator("main h1")).to_have_text(expected["Log in"])
        assert anonymous.goto("/register/").status == 200
        expect(anonymous.locator("main h1")).to_have_text(expected["Register"])

        page_a, page_b = (log_in(browser, server, name, locale=CHINESE) for name in ("alice", "bob"))
        expect(page_a.locator("main h1")).to_have_text(expected["Your rooms"])
        expect(page_a.locator("main")).to_contain_text(expected["Public rooms to join"])
        open_room(page_a, "general", online=ONLINE[CHINESE])
        open_room(page_b, "general", online=ONLINE[CHINESE])

        # The room page: composer, buttons, today's separator and a time in the Chinese format.
        expect(page_a.locator("#body")).to_have_attribute("placeholder", placeholder)
        expect(page_a.locator("#send")).to_have_text(expected["Send"])
        expect(page_a.locator("#messages .day:visible").first).to_have_text("今天")
        time = page_a.locator("#messages .msg time").last
        local = datetime.fromisoformat(time.get_attribute("datetime")).astimezone(ZoneInfo("Europe/Paris"))
        assert time.text_content() == local.strftime("%H:%M")
        assert f"{local.year}年" in time.get_attribute("title")

        # Presence, typing and a message, live between the two.
        expect(page_b.locator("#members li.online", has_text="alice")).to_be_visible()
        page_a.locator("#body").press_sequentially("大家好", delay=20)
        expect(page_b.locator("#typing")).to_have_text("alice 正在输入…")
        page_a.locator("#body").press("Enter")
        expect(page_b.locator("#messages .msg .body").last).to_have_text("大家好")
        expect(page_b.locator("#typing")).to_have_text("")
        assert last_body(page_a) == "大家好"

        # System messages in the reader's language: bob's join from the history, a topic set live.
        joined = chinese("%(user)s joined") % {"user": "bob"}
        expect(page_a.locator("#messages .msg-system .body").first).to_have_text(joined)
        assert session_fetch(page_a, "PATCH", "/api/rooms/general/", {"topic": "茶 & (tea) 100%"}) == 200
        topic_set = chinese("%(user)s set the topic: %(topic)s") % {"user": "alice", "topic": "茶 & (tea) 100%"}
        expect(page_b.locator("#messages .msg-system .body").last).to_have_text(topic_set)

        # A refused send says why in Chinese, the server's detail included, and gives the text back.
        page_b.evaluate("document.querySelector('#body').value = 'broken \\ud800 text'")
        page_b.locator("#body").press("Enter")
        refusal = re.compile(r"^未发送：.*代理项.*你的内容已放回输入框")  # "unpaired surrogates", in Chinese
        expect(page_b.locator("#notice .notice-text")).to_have_text(refusal)

        for path, heading in (("/directory/?q=gen", "Room directory"), ("/account/", "Profile")):
            assert page_a.goto(path).status == 200
            expect(page_a.locator("main h1")).to_have_text(expected[heading])
        expect(page_a.locator("main")).to_contain_text(expected["Change password"])
        assert page_a.errors == [] and page_b.errors == []


def test_the_switcher_changes_the_language_keeps_the_page_and_persists(transactional_db, alice):
    use_server_hasher(alice)
    services.room_create(user=alice, name="General", slug="general")
    your_rooms = chinese("Your rooms")
    with run_daphne() as server, chromium() as browser:
        page = log_in(browser, server, "alice")  # an English browser
        expect(page.locator("main h1")).to_have_text("Your rooms")
        page.goto("/directory/?q=gen")
        with page.expect_navigation():
            page.locator("#language-switcher button", has_text="简体中文").click()
        assert page.url == f"{server.url}/directory/?q=gen"
        assert page.locator("html").get_attribute("lang") == "zh-hans"
        expect(page.locator("main h1")).to_have_text(chinese("Room directory"))
        assert page.goto("/").status == 200  # the cookie keeps it
        expect(page.locator("main h1")).to_have_text(your_rooms)
        open_room(page, "general", online=ONLINE[CHINESE])  # the client's own strings too
        expect(page.locator("#send")).to_have_text(chinese("Send"))

        switch_back = page.locator("#language-switcher button", has_text="English")  # by keyboard
        switch_back.focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url == f"{server.url}/rooms/general/"
        assert page.locator("html").get_attribute("lang") == "en"
        expect(page.locator("#conn-state")).to_have_text("online")
        assert page.errors == []
