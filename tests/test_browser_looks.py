"""Every page of ours in English and Chinese, light and dark, on a desktop and a phone: axe-core
finds no violation, nothing overflows sideways, touch targets on a phone are at least 44 px, the
page says its language, and a non-member's preview shows the browser's time zone and locale.
Screenshots go to /tmp/web-shots/ (English) and /tmp/web-shots-zh/ for a person to look at.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from chat import services
from tests.browser import (
    CHINESE,
    DESKTOP,
    ONLINE,
    PHONE,
    SHOTS,
    SHOTS_CHINESE,
    axe_violations,
    chromium,
    log_in,
    new_page,
    open_room,
    screenshot,
    use_server_hasher,
)
from tests.live import run_daphne
from tests.uploads_support import pdf, png, upload

pytestmark = pytest.mark.browser

# Per browser locale: the page's <html lang>, its language's text on every page, a message's time.
LANGUAGES = {"en-US": ("en", "Log", "%I:%M %p", SHOTS), CHINESE: ("zh-hans", "登录", "%H:%M", SHOTS_CHINESE)}
PAGES = {
    "rooms": "/",
    "room": "/rooms/general/",
    "directory": "/directory/?q=gen",
    "profile": "/account/",
    "password": "/account/password/",
    "preview": "/rooms/lobby/",
}


def no_sideways_overflow(page):
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def small_targets(page) -> list[str]:
    """Visible buttons, links and fields smaller than 44 px in either direction (links in text excepted)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('button, a, input, select, textarea'))
        .filter(el => el.offsetParent !== null && !el.closest('p, dd, .skip-link'))
        .filter(el => { const r = el.getBoundingClientRect(); return r.width > 0 && (r.width < 44 || r.height < 44); })
        .map(el => el.outerHTML.slice(0, 80))""")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "phone"])
@pytest.mark.parametrize("locale", LANGUAGES)
def test_every_page_passes_axe_in_both_languages_themes_and_sizes(
    transactional_db, alice, bob, locale, scheme, size, settings, tmp_path
):
    settings.CHAT_RATE_PER_10S = 1000
    settings.MEDIA_ROOT = str(tmp_path / "media")
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general", topic="Everything and anything")
    services.room_create(user=bob, name="Lobby", slug="lobby")
    services.room_join(user=bob, slug="general")
    for n in range(8):
        services.message_send(user=bob if n % 3 else alice, slug="general", body=f"message {n} " + "words " * n)
    services.message_send(user=bob, slug="lobby", body="a room alice has not joined")
    # Version 2: a formatted message with a mention, a reaction and a reply in its thread.
    formatted, _ = services.message_send(
        user=alice, slug="general", body="**Release** notes: `v2` ships, see https://example.com @bob\n> quoted\n- one"
    )
    services.reaction_add(user=bob, message_id=formatted.pk, emoji="👍")
    services.message_send(user=bob, slug="general", body="On it", reply_to=formatted.pk)
    # Files: an image preview and a file card (issue 20).
    client = APIClient()
    client.force_authenticate(bob)
    files = [upload(client, "general", png((320, 200)), "chart.png").json()["id"]]
    files.append(upload(client, "general", pdf(), "minutes.pdf").json()["id"])
    services.message_send(user=bob, slug="general", body="the chart and the minutes", attachments=files)
    services.message_send(user=bob, slug="general", body="שלום לכולם")  # right-to-left text
    viewport = DESKTOP if size == "desktop" else PHONE
    lang, word, time_format, shots = LANGUAGES[locale]
    options = {"viewport": viewport, "color_scheme": scheme, "locale": locale}
    with run_daphne({"MEDIA_ROOT": settings.MEDIA_ROOT}) as server, chromium() as browser:
        anonymous = new_page(browser, server, **options)
        for name, path in (("login", "/login/"), ("register", "/register/")):
            assert anonymous.goto(path).status == 200
            assert anonymous.locator("html").get_attribute("lang") == lang, name
            assert word in anonymous.locator("header").text_content(), name
            assert axe_violations(anonymous) == [], name
            assert no_sideways_overflow(anonymous), name
            screenshot(anonymous, f"{name}-{scheme}-{size}", shots)
        page = log_in(browser, server, "alice", **options)
        for name, path in PAGES.items():
            if name == "room":
                open_room(page, "general", online=ONLINE[locale])
            else:
                assert page.goto(path).status == 200
            assert page.locator("html").get_attribute("lang") == lang, name
            assert axe_violations(page) == [], name
            assert no_sideways_overflow(page), name
            if size == "phone":
                assert small_targets(page) == [], name
            screenshot(page, f"{name}-{scheme}-{size}", shots)
            if name == "room":  # and with search results shown (issue 20)
                if size == "phone":  # the search box is in the sidebar, behind its button
                    page.locator("#toggle-sidebar").click()
                page.locator("#search-q").fill("message")
                page.locator("#search-q").press("Enter")
                page.locator("#search-results mark").first.wait_for()
                assert axe_violations(page) == [], "search"
                assert no_sideways_overflow(page), "search"
                if size == "phone":
                    assert small_targets(page) == [], "search"
                screenshot(page, f"search-{scheme}-{size}", shots)
            if name == "room":  # right-to-left text is laid out right to left, the rest left to right
                bodies = page.locator("#messages .msg .body")
                assert bodies.last.evaluate("node => getComputedStyle(node).direction") == "rtl"
                assert bodies.first.evaluate("node => getComputedStyle(node).direction") == "ltr"
            if name == "preview":  # a non-member's preview shows the browser's time zone and locale, not UTC
                time = page.locator("#messages .msg time").last
                local = datetime.fromisoformat(time.get_attribute("datetime")).astimezone(ZoneInfo("Europe/Paris"))
                assert time.text_content() == local.strftime(time_format)
                assert str(local.year) in time.get_attribute("title")
        assert page.errors == []
