"""The message pane in Chromium: it scrolls by itself while the rest of the page stays put,
follows new messages at the bottom and counts them otherwise, loads older pages as the reader
scrolls up, marks days, groups authors, shows the first unread, opens at a linked message and
loads newer pages as the reader scrolls down from it, and each message's actions (edit, delete,
report, copy link) work by mouse, keyboard and a long press on a phone.
"""

import re

import pytest
from playwright.sync_api import expect

from chat import services
from chat.models import Membership, Message, Report
from tests.browser import PHONE, chromium, log_in, message_ids, open_room, screenshot, use_server_hasher
from tests.live import run_daphne

pytestmark = pytest.mark.browser


def scroll_state(page) -> dict:
    return page.evaluate("""() => { const s = document.getElementById('scroller');
        return {top: s.scrollTop, height: s.scrollHeight, client: s.clientHeight,
                page: document.documentElement.scrollHeight, window: innerHeight}; }""")


def test_the_pane_scrolls_follows_counts_and_pages_history(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 10000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="Busy", slug="busy")
    services.room_join(user=bob, slug="busy")
    for n in range(505):
        services.message_send(user=alice if n % 7 else bob, slug="busy", body=f"old {n}")
    total = Message.objects.filter(room__slug="busy").count()
    bob_read = Message.objects.filter(room__slug="busy", body="old 480").get().pk
    Membership.objects.filter(room__slug="busy", user=bob).update(last_read_id=bob_read)

    with run_daphne() as server, chromium() as browser:
        page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
        open_room(page_a, "busy")
        open_room(page_b, "busy")

        # The page itself never scrolls: the pane does, and it opens at the bottom.
        state = scroll_state(page_b)
        assert state["page"] <= state["window"]
        assert state["height"] > state["client"]
        assert state["top"] + state["client"] >= state["height"] - 2
        expect(page_b.locator("#composer")).to_be_in_viewport()
        expect(page_b.locator("#room-name")).to_be_in_viewport()

        # Days are marked, each time has its full date on hover, consecutive messages of one author group.
        expect(page_b.locator("#messages .day:visible").first).to_have_text("Today")
        title = page_b.locator("#messages .msg time").last.get_attribute("title")
        assert re.search(r"\d{4}", title) and ":" in title
        assert page_b.locator("#messages .msg.grouped").count() > 10
        assert page_b.locator("#messages .msg .avatar").first.text_content() in ("AL", "BO")

        # The first unread message has the New messages line, and the rest of the history is older.
        line = page_b.locator("#messages .new-line:visible")
        expect(line).to_have_count(1)
        first_unread = line.locator("xpath=..")
        expect(first_unread.locator(".body")).to_have_text("old 481")
        expect(line).not_to_be_in_viewport()
        expect(page_b.locator("#jump-unread")).to_be_visible()
        page_b.click("#jump-unread")
        expect(line).to_be_in_viewport()
        expect(page_b.locator("#jump-unread")).to_be_hidden()
        page_b.evaluate("document.getElementById('scroller').scrollTop = 1e9")

        # At the bottom, a new message is followed; scrolled up, it is counted on a button instead.
        page_a.locator("#body").fill("live one")
        page_a.locator("#body").press("Enter")
        expect(page_b.locator("#messages .msg .body").last).to_have_text("live one")
        expect(page_b.locator("#messages .msg").last).to_be_in_viewport()
        page_b.evaluate("document.getElementById('scroller').scrollTop = 400")
        page_b.wait_for_timeout(300)
        for text in ("live two", "live three"):
            page_a.locator("#body").fill(text)
            page_a.locator("#body").press("Enter")
        expect(page_b.locator("#jump-new")).to_have_text("2 new messages ↓")
        expect(page_b.locator("#messages .msg").last).not_to_be_in_viewport()
        page_b.click("#jump-new")
        expect(page_b.locator("#messages .msg").last).to_be_in_viewport()
        expect(page_b.locator("#jump-new")).to_be_hidden()

        # Scrolling to the top loads older pages by itself and keeps the reader's place.
        for _ in range(15):
            if page_b.locator("#load-older").is_hidden():
                break
            anchor = page_b.locator("#messages .msg").first
            anchor_id = anchor.get_attribute("data-id")
            page_b.evaluate("document.getElementById('scroller').scrollTop = 0")
            expect(page_b.locator("#messages .msg").first).not_to_have_attribute("data-id", anchor_id)
            top = page_b.locator(f'#messages .msg[data-id="{anchor_id}"]').bounding_box()["y"]
            assert top > 100  # the message that was at the top stays where it was, below the new page
        expect(page_b.locator("#messages .msg")).to_have_count(total + 3)
        ids = message_ids(page_b)
        assert ids == sorted(set(ids))
        assert page_b.errors == [] and page_a.errors == []


def test_message_actions_by_mouse_keyboard_and_links(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 10000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    linked, _ = services.message_send(user=bob, slug="general", body="the linked one")
    for n in range(120):
        services.message_send(user=alice, slug="general", body=f"filler {n}")
    services.message_send(user=bob, slug="general", body="bob says something rude")

    with run_daphne() as server, chromium() as browser:
        page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
        open_room(page_a, "general")
        open_room(page_b, "general")

        # Up arrow in the empty composer edits alice's last message in place; Enter saves.
        page_a.locator("#body").press("ArrowUp")
        editor = page_a.locator("#messages .msg-edit textarea")
        expect(editor).to_be_focused()
        expect(editor).to_have_value("filler 119")
        editor.fill("filler 119, corrected")
        editor.press("Enter")
        edited = page_b.locator("#messages .msg", has_text="filler 119, corrected")
        expect(edited.locator(".edited")).to_be_visible()

        # Escape cancels an edit.
        page_a.locator("#body").press("ArrowUp")
        page_a.locator("#messages .msg-edit textarea").fill("never sent")
        page_a.locator("#messages .msg-edit textarea").press("Escape")
        expect(page_a.locator("#messages .msg-edit")).to_have_count(0)
        expect(page_a.locator("#messages .msg", has_text="filler 119, corrected")).to_have_count(1)

        # The keyboard opens a message's menu; Delete asks first, and Cancel keeps it.
        target = page_a.locator("#messages .msg", has_text="filler 118")
        target.locator(".msg-menu-button").focus()
        page_a.keyboard.press("Enter")
        expect(page_a.locator("#msg-menu [role=menuitem]").first).to_be_focused()
        page_a.keyboard.press("ArrowDown")
        expect(page_a.locator("#msg-menu [role=menuitem]", has_text="Delete")).to_be_focused()
        page_a.keyboard.press("Enter")
        expect(page_a.locator("#confirm-dialog")).to_be_visible()
        page_a.click("#confirm-dialog button[value=cancel]")
        expect(target.locator(".msg-menu-button")).to_be_focused()
        expect(target).not_to_have_class(re.compile(r"\bdeleted\b"))
        deleted_id = int(target.get_attribute("data-id"))
        target.locator(".msg-menu-button").click()
        page_a.click("#msg-menu [role=menuitem]:has-text('Delete')")
        page_a.click("#confirm-ok")
        deleted_on_b = page_b.locator(f'#messages .msg[data-id="{deleted_id}"]')
        expect(deleted_on_b).to_have_class(re.compile(r"\bdeleted\b"))

        # Alice reports bob's message with a reason; she cannot edit it.
        rude = page_a.locator("#messages .msg", has_text="bob says something rude")
        rude.locator(".msg-menu-button").click()
        expect(page_a.locator("#msg-menu [role=menuitem]")).to_have_text(
            ["Delete", "Add reaction", "Reply in thread", "Report", "Copy link"]
        )
        screenshot(page_a, "room-message-menu")
        page_a.click("#msg-menu [role=menuitem]:has-text('Report')")
        page_a.fill("#report-reason", "insults")
        page_a.click("#report-dialog button[value=ok]")
        expect(page_a.locator("#toast")).to_have_text("Thank you: a moderator will look at it.")

        # Copy link gives /rooms/<slug>/#m<id>, which opens the room around that message, far back.
        page_a.context.grant_permissions(["clipboard-read", "clipboard-write"])
        old = page_a.locator("#messages .msg").last
        old.locator(".msg-menu-button").click()
        page_a.click("#msg-menu [role=menuitem]:has-text('Copy link')")
        expect(page_a.locator("#toast")).to_have_text("Link copied.")
        link = page_a.evaluate("navigator.clipboard.readText()")
        assert link == f"{server.url}/rooms/general/#m{old.get_attribute('data-id')}"
        page_b.goto(f"/rooms/general/#m{linked.pk}")
        expect(page_b.locator(f"#m{linked.pk}")).to_be_in_viewport()
        expect(page_b.locator(f"#m{linked.pk} .msg-row")).to_have_class(re.compile(r"\bhighlight\b"))
        expect(page_b.locator("#load-newer")).to_be_visible()
        # A live message meanwhile waits until the reader comes back to the newest page.
        page_a.locator("#body").fill("while bob reads old things")
        page_a.locator("#body").press("Enter")
        expect(page_b.locator("#jump-new")).to_have_text("1 new message ↓")
        page_b.click("#jump-new")
        expect(page_b.locator("#messages .msg .body").last).to_have_text("while bob reads old things")
        assert page_a.errors == [] and page_b.errors == []

    assert Message.objects.get(body="filler 119, corrected").edited_at is not None
    assert Message.objects.get(pk=deleted_id).deleted
    report = Report.objects.get()
    assert report.reason == "insults" and report.message.body == "bob says something rude"


def test_a_link_into_the_past_loads_newer_pages_as_the_reader_scrolls_down(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 10000
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="Long", slug="long")
    services.room_join(user=bob, slug="long")
    sent = [services.message_send(user=alice, slug="long", body=f"line {n}")[0] for n in range(300)]
    linked = sent[100]  # the page around it ends 25 messages later: 175 newer ones, four pages, remain

    with run_daphne() as server, chromium() as browser:
        page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
        open_room(page_a, "long")
        page_b.goto(f"/rooms/long/#m{linked.pk}")
        expect(page_b.locator("#conn-state")).to_have_text("online")
        expect(page_b.locator(f"#m{linked.pk}")).to_be_in_viewport()
        expect(page_b.locator("#load-newer")).to_be_visible()
        expect(page_b.locator(f"#m{sent[-1].pk}")).to_have_count(0)

        # A live message meanwhile waits below the pages still to load.
        page_a.locator("#body").fill("sent while bob reads old things")
        page_a.locator("#body").press("Enter")
        expect(page_b.locator("#jump-new")).to_have_text("1 new message ↓")

        # Each scroll to the bottom brings the next newer page, without a click, up to the newest.
        pages = 0
        while page_b.locator("#load-newer").is_visible() and pages < 10:
            newest_shown = message_ids(page_b)[-1]
            page_b.evaluate("document.getElementById('scroller').scrollTop = 1e9")
            expect(page_b.locator("#messages .msg").last).not_to_have_attribute("data-id", str(newest_shown))
            pages += 1
        assert pages >= 3
        expect(page_b.locator("#load-newer")).to_be_hidden()
        expect(page_b.locator("#messages .msg .body").last).to_have_text("sent while bob reads old things")
        ids = message_ids(page_b)
        assert ids == sorted(set(ids)) and {m.pk for m in sent[100:]} <= set(ids)  # no gap, no repeat

        # Back at the bottom, the pane is live again: it follows the next message.
        page_b.evaluate("document.getElementById('scroller').scrollTop = 1e9")
        expect(page_b.locator("#jump-new")).to_be_hidden()
        page_a.locator("#body").fill("and now live")
        page_a.locator("#body").press("Enter")
        expect(page_b.locator("#messages .msg .body").last).to_have_text("and now live")
        expect(page_b.locator("#messages .msg").last).to_be_in_viewport()
        assert page_a.errors == [] and page_b.errors == []


def test_a_long_press_on_a_phone_opens_the_message_menu(transactional_db, alice, bob):
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    services.message_send(user=alice, slug="general", body="press me")
    services.message_send(user=bob, slug="general", body="or me")

    with run_daphne() as server, chromium() as browser:
        page = log_in(browser, server, "bob", viewport=PHONE, has_touch=True)
        open_room(page, "general")
        target = page.locator("#messages .msg", has_text="press me")
        box = target.locator(".body").bounding_box()
        point = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
        touch = page.context.new_cdp_session(page)  # a real finger: touchstart, held, then touchend

        def touch_event(kind: str) -> None:
            touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [point] if kind != "touchEnd" else []})

        # A tap is not a long press: no menu.
        touch_event("touchStart")
        touch_event("touchEnd")
        page.wait_for_timeout(1000)
        expect(page.locator("#msg-menu")).to_be_hidden()

        # Held, the press opens the message's menu, focused on its first item, and it stays open after.
        touch_event("touchStart")
        expect(page.locator("#msg-menu")).to_be_visible()
        touch_event("touchEnd")  # and lifting the finger clicks nothing: the menu keeps the focus
        expect(page.locator("#msg-menu [role=menuitem]")).to_have_text(
            ["Add reaction", "Reply in thread", "Report", "Copy link"]
        )
        expect(page.locator("#msg-menu [role=menuitem]").first).to_be_focused()
        expect(target).to_have_class(re.compile(r"\bmenu-open\b"))
        page.keyboard.press("Escape")
        expect(page.locator("#msg-menu")).to_be_hidden()
        expect(target.locator(".msg-menu-button")).to_be_focused()
        assert page.errors == []
