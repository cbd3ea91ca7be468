"""Conversations in Chromium (issue 19, the web client): Markdown rendered by the server and shown
as HTML (raw HTML as text), @mention suggestions by keyboard and the reader's own mentions
highlighted, resuming with both cursors (an edit and a delete made while away), "@" mention
badges that clear on reading, the per-room notify setting, the mentions inbox, and axe-core on
the new views in light, dark and Chinese. Helpers: tests/browser.py.
"""

import json
import re

import pytest
from playwright.sync_api import expect

from chat import services
from chat.models import Membership
from tests.browser import (
    CHINESE,
    ONLINE,
    PHONE,
    axe_violations,
    chromium,
    in_thread,
    log_in,
    open_room,
    screenshot,
    use_server_hasher,
)
from tests.live import start_daphne

pytestmark = pytest.mark.browser

LONG_CODE = "x = " + "+".join(["1234567890"] * 40)
MARKDOWN = (
    f"**bold** and `inline`\n\n```python\n{LONG_CODE}\n```\n\n> quoted\n\n- one\n- two\n\nsee https://example.com"
)
HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)>"


def type_into(page, text):
    """Set the composer's text (new lines included) as a paste would, then send it with Enter."""
    page.locator("#body").fill(text)
    page.locator("#body").press("Enter")


def record_frames(page) -> list[dict]:
    """Every frame the page's sockets receive from now on, decoded."""
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(json.loads(frame))))
    return frames


def wait_for_frame(page, frames, **fields):
    """Until a received frame has these fields (polling: the frames arrive on the browser's side)."""
    for _ in range(150):
        if any(all(frame.get(k) == v for k, v in fields.items()) for frame in frames):
            return
        page.wait_for_timeout(100)
    pytest.fail(f"no frame with {fields}")


def no_sideways_overflow(page):
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_formatting_mentions_and_resume(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    fillers = [services.message_send(user=alice, slug="general", body=f"filler {n}")[0].pk for n in range(6)]
    env = {"CHAT_REPLAY_LIMIT": "5"}

    server = start_daphne(env)
    try:
        with chromium() as browser:
            page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
            open_room(page_a, "general")
            open_room(page_b, "general")
            expect(page_a.locator("#members li", has_text="bob")).to_be_visible()
            frames_b = record_frames(page_b)

            # Markdown comes back as the server's HTML: bold, a code block, a quote, a list, a link.
            type_into(page_a, MARKDOWN)
            formatted = page_b.locator("#messages .msg").last
            expect(formatted.locator(".body strong")).to_have_text("bold")
            expect(formatted.locator(".body pre code")).to_contain_text(LONG_CODE)
            expect(formatted.locator(".body blockquote")).to_contain_text("quoted")
            expect(formatted.locator(".body ul li")).to_have_count(2)
            link = formatted.locator('.body a[href="https://example.com"]')
            expect(link).to_have_attribute("target", "_blank")
            expect(link).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
            # Long code scrolls inside the message; the page never scrolls sideways.
            code = formatted.locator(".body pre")
            assert code.evaluate("node => node.scrollWidth > node.clientWidth")
            assert no_sideways_overflow(page_b)

            # Raw HTML is text: no script element, no image, nothing ran.
            type_into(page_a, HOSTILE)
            hostile = page_b.locator("#messages .msg").last
            expect(hostile.locator(".body")).to_have_text(HOSTILE)
            assert hostile.locator(".body script, .body img").count() == 0
            assert page_b.errors == [] and page_a.errors == []

            # @ and a prefix open the suggestions; Down, Up and Enter pick bob; Enter then sends.
            page_a.locator("#body").press_sequentially("hello @b", delay=20)
            listbox = page_a.locator("#mention-list")
            expect(listbox).to_be_visible()
            expect(page_a.locator("#body")).to_have_attribute("aria-activedescendant", "mention-option-0")
            expect(listbox.locator("[role=option]").first).to_have_text("@bob")
            page_a.locator("#body").press("ArrowDown")
            page_a.locator("#body").press("ArrowUp")
            expect(listbox.locator('[aria-selected="true"]')).to_have_text("@bob")
            page_a.locator("#body").press("Enter")
            expect(listbox).to_be_hidden()
            expect(page_a.locator("#body")).to_have_value("hello @bob ")
            page_a.locator("#body").press_sequentially("how are you", delay=10)
            page_a.locator("#body").press("Escape")  # nothing open: Escape changes nothing
            page_a.locator("#body").press("Enter")
            # Bob sees himself mentioned, strongly, and the message marked; alice sees a plain mention.
            mention_b = page_b.locator("#messages .msg").last
            expect(mention_b.locator('.mention[data-user="bob"]')).to_have_class(re.compile(r"\bmention-me\b"))
            expect(mention_b).to_have_class(re.compile(r"\bmentions-me\b"))
            mention_a = page_a.locator("#messages .msg").last
            expect(mention_a.locator('.mention[data-user="bob"]')).to_be_visible()
            expect(mention_a.locator(".mention-me")).to_have_count(0)
            expect(mention_a).not_to_have_class(re.compile(r"\bmentions-me\b"))
            # Escape closes the suggestions without inserting anything.
            page_a.locator("#body").press_sequentially("@b", delay=20)
            expect(listbox).to_be_visible()
            page_a.locator("#body").press("Escape")
            expect(listbox).to_be_hidden()
            expect(page_a.locator("#body")).to_have_value("@b")
            page_a.locator("#body").fill("")
            screenshot(page_b, "conversations-room")

            # Bob is away while alice edits one message and deletes another: resuming brings both.
            ids = page_b.eval_on_selector_all("#messages .msg", "items => items.map(node => Number(node.dataset.id))")
            edited, deleted = ids[-1], ids[-2]
            port = server.port
            server.stop()
            expect(page_b.locator("#conn-state")).to_have_class(re.compile(r"\boffline\b"))
            in_thread(lambda: services.message_edit(user=alice, message_id=edited, body="now **changed**"))
            in_thread(lambda: services.message_delete(user=alice, message_id=deleted))
            server = start_daphne(env, port=port)
            expect(page_b.locator("#conn-state")).to_have_text("online", timeout=30_000)
            item = page_b.locator(f'#messages .msg[data-id="{edited}"]')
            expect(item.locator(".body strong")).to_have_text("changed")
            expect(item.locator(".edited")).to_be_visible()
            gone = page_b.locator(f'#messages .msg[data-id="{deleted}"]')
            expect(gone).to_have_class(re.compile(r"\bdeleted\b"))
            expect(gone.locator(".body")).to_have_text("")

            # More messages changed while away than the server replays (5 here): the client reloads the view.
            server.stop()
            expect(page_b.locator("#conn-state")).to_have_class(re.compile(r"\boffline\b"))
            in_thread(lambda: [services.message_edit(user=alice, message_id=pk, body=f"_took_ {pk}") for pk in fillers])
            server = start_daphne(env, port=port)
            expect(page_b.locator("#conn-state")).to_have_text("online", timeout=30_000)
            for pk in fillers:
                expect(page_b.locator(f'#messages .msg[data-id="{pk}"] .body em')).to_have_text("took")
            gaps = [frame for frame in frames_b if frame["type"] == "room.gap"]
            assert [gap.get("changes") for gap in gaps] == [True]  # the way this test meant to take
            expect(gone).to_have_class(re.compile(r"\bdeleted\b"))
            assert page_b.errors == [], page_b.errors
    finally:
        server.stop()


def test_mention_badges_notify_setting_and_inbox(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_create(user=alice, name="Random", slug="random")
    services.room_join(user=bob, slug="general")
    services.room_join(user=bob, slug="random")
    services.message_send(user=alice, slug="general", body="an older @bob mention")

    server = start_daphne()
    try:
        with chromium() as browser:
            page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
            open_room(page_a, "general")

            # On the room list, a mention shows as an "@" badge beside the unread count, live.
            general_item = page_b.locator('#my-rooms li[data-room="general"]')
            expect(general_item.locator(".badge.mention")).to_have_text("@1")
            page_a.locator("#body").fill("@bob look at this")
            page_a.locator("#body").press("Enter")
            expect(general_item.locator(".badge.mention")).to_have_text("@2")
            expect(page_b).to_have_title(re.compile(r"@2"))

            # In another room's switcher too; opening the room reads it, and the badge goes.
            open_room(page_b, "random")
            switcher = page_b.locator('#room-nav li[data-room="general"]')
            expect(switcher.locator(".badge.mention")).to_have_text("@2")
            expect(page_b).to_have_title(re.compile(r"@2"))
            frames_b = record_frames(page_b)
            switcher.locator("a").click()
            page_b.wait_for_url(re.compile(r"/rooms/general/$"))
            expect(page_b.locator("#conn-state")).to_have_text("online")
            expect(page_b.locator('#room-nav li[data-room="general"] .badge.mention')).to_have_text("")
            expect(page_b).not_to_have_title(re.compile(r"@"))  # the room on screen never counts
            wait_for_frame(page_b, frames_b, type="unread", room="general", count=0)  # read: the server knows
            open_room(page_b, "random")
            expect(page_b.locator('#room-nav li[data-room="general"] .badge.mention')).to_have_text("")
            assert page_b.goto("/").status == 200
            expect(general_item.locator(".badge.mention")).to_have_text("")

            # The notify setting: saved with PATCH, and still chosen after a reload.
            open_room(page_b, "general")
            setting = page_b.locator("#notify-setting")
            expect(setting).to_have_value("mentions")
            with page_b.expect_response(
                lambda r: r.url.endswith("/api/rooms/general/membership/") and r.request.method == "PATCH"
            ) as patched:
                setting.select_option("none")
            assert patched.value.status == 200
            page_b.reload()
            expect(page_b.locator("#conn-state")).to_have_text("online")
            expect(setting).to_have_value("none")

            # The mentions inbox: newest first, each linking to the room at the message.
            page_b.locator("#mentions-link").click()
            items = page_b.locator("#mentions .mention-item")
            expect(items).to_have_count(2)
            expect(items.first.locator(".body")).to_contain_text("look at this")
            expect(items.nth(1).locator(".body")).to_contain_text("an older")
            expect(items.first.locator(".mention-room")).to_have_text("General")
            expect(items.first.locator(".author")).to_have_text("alice")
            href = items.first.locator("a.mention-room").get_attribute("href")
            assert re.fullmatch(r"/rooms/general/#m\d+", href), href
            items.first.locator("a.mention-room").click()
            page_b.wait_for_url(re.compile(r"/rooms/general/#m\d+$"))
            expect(page_b.locator(f"#messages {href.split('/')[-1]}")).to_be_visible()
            assert page_b.errors == [], page_b.errors
    finally:
        server.stop()

    assert Membership.objects.get(room__slug="general", user=bob).notify == "none"


def test_mentions_inbox_pages_with_load_more(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    for n in range(25):
        services.message_send(user=alice, slug="general", body=f"@bob number {n}")

    server = start_daphne()
    try:
        with chromium() as browser:
            page = log_in(browser, server, "bob")
            assert page.goto("/mentions/").status == 200
            items = page.locator("#mentions .mention-item")
            expect(items).to_have_count(20)
            expect(items.first).to_contain_text("number 24")
            page.locator("#mentions-more").click()
            expect(items).to_have_count(25)
            expect(items.last).to_contain_text("number 0")
            expect(page.locator("#mentions-more")).to_be_hidden()
    finally:
        server.stop()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_formatted_room_and_inbox_pass_axe(transactional_db, alice, bob, scheme, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    services.message_send(user=alice, slug="general", body=MARKDOWN)
    services.message_send(user=alice, slug="general", body="~~old~~ _new_ @bob and @room")
    services.message_send(user=bob, slug="general", body="@alice thanks")

    server = start_daphne()
    try:
        with chromium() as browser:
            for viewport, size in ((None, "desktop"), (PHONE, "phone")):
                page = log_in(browser, server, "bob", color_scheme=scheme, viewport=viewport)
                open_room(page, "general")
                page.locator("#format-help summary").click()
                expect(page.locator("#format-help li").first).to_be_visible()
                page.locator("#body").press_sequentially("@a", delay=20)
                expect(page.locator("#mention-list")).to_be_visible()
                screenshot(page, f"conversations-room-{scheme}-{size}")
                assert axe_violations(page) == [], size
                assert no_sideways_overflow(page), size
                assert page.goto("/mentions/").status == 200
                expect(page.locator("#mentions .mention-item")).to_have_count(1)
                assert axe_violations(page) == [], size
                assert no_sideways_overflow(page), size
                screenshot(page, f"conversations-mentions-{scheme}-{size}")
                page.context.close()
    finally:
        server.stop()


def test_conversations_in_chinese(transactional_db, alice, bob, settings):
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="综合", slug="general")
    services.room_join(user=bob, slug="general")
    services.message_send(user=alice, slug="general", body="**你好** @bob，看看 `代码`")

    server = start_daphne()
    try:
        with chromium() as browser:
            page = log_in(browser, server, "bob", locale=CHINESE)
            open_room(page, "general", online=ONLINE[CHINESE])
            expect(page.locator("#format-help summary")).to_have_text("格式帮助")
            expect(page.locator("#notify-setting option:checked")).to_have_text("仅提及")
            expect(page.locator("#messages .msg .mention-me")).to_have_text("@bob")
            assert axe_violations(page) == []
            assert page.goto("/mentions/").status == 200
            expect(page.locator("h1")).to_have_text("提及")
            expect(page.locator("#mentions .mention-item")).to_have_count(1)
            assert axe_violations(page) == []
            screenshot(page, "conversations-mentions-zh")
    finally:
        server.stop()
