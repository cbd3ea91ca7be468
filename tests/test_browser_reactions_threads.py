"""Reactions and threads in the browser client (reactions.js, thread.js), two users side by side
in headless Chromium against a real daphne: the picker by mouse and keyboard, chips live with
counts, who reacted and the pressed state; "Reply in thread", the thread panel live, "N replies"
under the root, quoted replies; a phone's full-screen sheet and picker; axe with chips and with
the panel open, light and dark; the plural in Chinese. Helpers: tests/browser.py.
"""

import re

import pytest
from playwright.sync_api import expect

from chat import services
from chat.models import Message, Reaction
from tests.browser import CHINESE, ONLINE, PHONE, axe_violations, chromium, log_in, open_room, use_server_hasher
from tests.live import run_daphne

pytestmark = pytest.mark.browser


def room_with_message(alice, bob, body="hello from alice"):
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    message, _ = services.message_send(user=alice, slug="general", body=body)
    return message


def message_item(page, message_id):
    return page.locator(f'#messages .msg[data-id="{message_id}"]')


def open_menu_item(page, message_id, label):
    item = message_item(page, message_id)
    item.hover()
    item.locator(".msg-menu-button").click()
    page.locator("#msg-menu [role=menuitem]", has_text=label).click()


def no_sideways_overflow(page):
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_reactions_by_picker_and_chips_live_between_two_users(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    message = room_with_message(alice, bob)
    with run_daphne() as server, chromium() as browser:
        page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
        open_room(page_a, "general")
        open_room(page_b, "general")

        # Alice opens the picker from the message's menu and picks 👍 by keyboard: type, arrows, Enter.
        open_menu_item(page_a, message.pk, "Add reaction")
        picker = page_a.locator("#emoji-dialog")
        expect(picker).to_be_visible()
        expect(page_a.locator("#emoji-search")).to_be_focused()
        page_a.keyboard.type("thumbs")
        expect(picker.locator(".emoji-list .emoji")).to_have_count(2)  # thumbs up, thumbs down
        page_a.keyboard.press("ArrowDown")
        expect(picker.locator(".emoji-quick .emoji").first).to_be_focused()
        page_a.keyboard.press("End")
        expect(picker.locator(".emoji-list .emoji").last).to_be_focused()
        page_a.keyboard.press("ArrowLeft")
        thumbs_up = picker.locator(".emoji-list .emoji").first
        expect(thumbs_up).to_be_focused()
        expect(thumbs_up).to_have_attribute("aria-label", "thumbs up")
        page_a.keyboard.press("Enter")
        expect(picker).to_be_hidden()
        expect(message_item(page_a, message.pk).locator(".msg-menu-button")).to_be_focused()

        # Bob sees the chip live: count 1, alice's name in its title, not pressed for him.
        chip_b = message_item(page_b, message.pk).locator('.reaction-chip[data-emoji="👍"]')
        expect(chip_b.locator(".count")).to_have_text("1")
        expect(chip_b).to_have_attribute("title", "alice reacted with 👍")
        expect(chip_b).to_have_attribute("aria-pressed", "false")
        chip_a = message_item(page_a, message.pk).locator('.reaction-chip[data-emoji="👍"]')
        expect(chip_a).to_have_attribute("aria-pressed", "true")

        # Bob's click adds his own: 2, pressed for him; both names; again and it is back to 1.
        chip_b.click()
        expect(chip_b.locator(".count")).to_have_text("2")
        expect(chip_b).to_have_attribute("aria-pressed", "true")
        expect(chip_a).to_have_attribute("title", re.compile(r"^you.*bob reacted with 👍$"))
        expect(chip_b).to_have_attribute("title", re.compile(r"^alice.*you reacted with 👍$"))
        expect(chip_a.locator(".count")).to_have_text("2")

        # Axe with chips on the page, light and dark.
        for scheme in ("light", "dark"):
            page_b.emulate_media(color_scheme=scheme)
            assert axe_violations(page_b) == [], scheme
        page_b.emulate_media(color_scheme="light")

        chip_b.click()
        expect(chip_b.locator(".count")).to_have_text("1")
        expect(chip_b).to_have_attribute("aria-pressed", "false")
        expect(chip_a.locator(".count")).to_have_text("1")

        # The picker by mouse, from the button beside the chips; Escape closes it without reacting.
        message_item(page_b, message.pk).locator(".reactions .react-button").click()
        expect(page_b.locator("#emoji-dialog")).to_be_visible()
        page_b.keyboard.press("Escape")
        expect(page_b.locator("#emoji-dialog")).to_be_hidden()
        message_item(page_b, message.pk).locator(".reactions .react-button").click()
        page_b.locator("#emoji-search").fill("party")
        page_b.locator('#emoji-dialog .emoji-list .emoji[data-emoji="🎉"]').click()
        expect(message_item(page_a, message.pk).locator('.reaction-chip[data-emoji="🎉"] .count')).to_have_text("1")

        # A muted user's reaction is refused: the notice says why and the chip does not change.
        page_a.evaluate("""async () => {
            const token = document.cookie.match(/csrftoken=([^;]+)/)[1];
            await fetch("/api/rooms/general/mutes/", {method: "POST", body: JSON.stringify({username: "bob", minutes: 5}),
                                                      headers: {"X-CSRFToken": token, "Content-Type": "application/json"}});
        }""")
        expect(page_b.locator("#composer-state")).to_be_visible()
        chip_b.click()
        expect(page_b.locator("#notice .notice-text")).not_to_be_empty()
        expect(chip_b.locator(".count")).to_have_text("1")
        assert page_a.errors == [] and page_b.errors == []

    reactions = set(Reaction.objects.filter(message=message).values_list("user__username", "emoji"))
    assert reactions == {("alice", "👍"), ("bob", "🎉")}


def test_thread_panel_live_replies_quotes_and_axe(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    root = room_with_message(alice, bob, body="what shall we eat?\nsecond line")
    with run_daphne() as server, chromium() as browser:
        page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
        open_room(page_a, "general")
        open_room(page_b, "general")
        shown = page_a.locator("#messages .msg").count()

        # Bob replies in a thread: the panel opens on the root with its composer focused.
        open_menu_item(page_b, root.pk, "Reply in thread")
        panel_b = page_b.locator("#thread-panel")
        expect(panel_b).to_be_visible()
        expect(panel_b.locator("#thread-root .body")).to_have_text("what shall we eat?\nsecond line")
        expect(page_b.locator("#thread-body")).to_be_focused()
        page_b.keyboard.type("noodles")
        page_b.keyboard.press("Enter")
        expect(panel_b.locator("#thread-replies .msg:not(.pending) .body")).to_have_text(["noodles"])
        expect(page_b.locator("#thread-count")).to_have_text("1 reply")

        # Alice sees "1 reply" appear live under the root; the reply stays out of the room's timeline.
        replies_link = message_item(page_a, root.pk).locator(".replies-link")
        expect(replies_link).to_have_text("1 reply")
        expect(page_a.locator("#messages .msg")).to_have_count(shown)
        replies_link.click()
        panel_a = page_a.locator("#thread-panel")
        expect(panel_a.locator("#thread-replies .msg .body")).to_have_text(["noodles"])

        # Alice answers bob's reply: her reply quotes his; bob sees it live, and the root says 2 replies.
        panel_a.locator("#thread-replies .msg").first.locator(".reply-to-button").click()
        expect(page_a.locator("#thread-replying")).to_contain_text("bob")
        page_a.locator("#thread-body").fill("with dumplings")
        page_a.locator("#thread-body").press("Enter")
        quote = panel_b.locator("#thread-replies .msg").nth(1).locator(".quote")
        expect(quote.locator(".quote-author")).to_have_text("bob")
        expect(quote.locator(".quote-text")).to_have_text("noodles")
        expect(message_item(page_b, root.pk).locator(".replies-link")).to_have_text("2 replies")
        expect(page_b.locator("#thread-count")).to_have_text("2 replies")
        quote.click()
        expect(panel_b.locator("#thread-replies .msg").first.locator(".msg-row")).to_have_class(
            re.compile(r"\bhighlight\b")
        )

        # Bob edits his reply from the panel's menu: alice's panel shows it, her quote of it too.
        first_b = panel_b.locator("#thread-replies .msg").first
        first_b.hover()
        first_b.locator(".msg-menu-button").click()
        page_b.locator("#msg-menu [role=menuitem]", has_text="Edit").click()
        first_b.locator(".msg-edit textarea").fill("ramen")
        first_b.locator(".msg-edit textarea").press("Enter")
        replies_a = panel_a.locator("#thread-replies .msg")
        expect(replies_a.first.locator(".body")).to_have_text("ramen")
        expect(replies_a.nth(1).locator(".quote-text")).to_have_text("ramen")

        for scheme in ("light", "dark"):
            page_a.emulate_media(color_scheme=scheme)
            assert axe_violations(page_a) == [], scheme
        page_a.emulate_media(color_scheme="light")

        # Escape closes the panel; focus goes back to the line that opened it.
        page_a.locator("#thread-body").press("Escape")
        expect(panel_a).to_be_hidden()
        expect(replies_link).to_be_focused()

        # A link to a reply opens its thread with the reply highlighted.
        reply_id = replies_a.first.get_attribute("data-id")
        page_a.goto(f"/rooms/general/#m{reply_id}")
        expect(panel_a).to_be_visible()
        expect(panel_a.locator(f'#thread-replies .msg[data-id="{reply_id}"] .msg-row')).to_have_class(
            re.compile(r"\bhighlight\b")
        )
        assert page_a.errors == [] and page_b.errors == []

    replies = Message.objects.filter(thread=root).order_by("id")
    assert [(m.author.username, m.body, m.reply_to_id) for m in replies] == [
        ("bob", "ramen", root.pk),
        ("alice", "with dumplings", replies[0].pk),
    ]


def test_phone_thread_sheet_and_picker_fit_and_chinese_plural(transactional_db, alice, bob, settings):
    settings.CHAT_RATE_PER_10S = 1000
    root = room_with_message(alice, bob, body="一个很长的问题 " * 20)
    one_reply = "1 条回复"  # djangojs.po's plural of "%(count)s reply"
    with run_daphne() as server, chromium() as browser:
        page = log_in(browser, server, "bob", viewport=PHONE, locale=CHINESE, has_touch=True)
        open_room(page, "general", online=ONLINE[CHINESE])
        item = message_item(page, root.pk)
        item.locator(".msg-menu-button").click()
        # Bob's menu on alice's message starts with 添加表情回应 (add reaction), then 在话题串中回复.
        page.locator("#msg-menu [role=menuitem]").nth(0).click()
        picker = page.locator("#emoji-dialog")
        expect(picker.locator(".emoji-list .emoji").first).to_be_visible()
        assert no_sideways_overflow(page)
        box = picker.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        page.locator("#emoji-search").fill("笑")
        expect(picker.locator(".emoji-list .emoji").first).to_be_visible()
        picker.locator(".emoji-list .emoji").first.click()
        expect(item.locator(".reaction-chip")).to_have_count(1)

        item.locator(".msg-menu-button").click()
        page.locator("#msg-menu [role=menuitem]").nth(1).click()
        sheet = page.locator("#thread-panel")
        expect(sheet).to_be_visible()
        assert sheet.bounding_box() == {"x": 0, "y": 0, "width": PHONE["width"], "height": PHONE["height"]}
        page.locator("#thread-body").fill("好主意")
        page.locator("#thread-body").press("Enter")
        expect(page.locator("#thread-count")).to_have_text(one_reply)
        assert no_sideways_overflow(page)
        assert axe_violations(page) == []
        page.locator("#thread-close").click()
        expect(item.locator(".replies-link")).to_have_text(one_reply)
        assert page.errors == []
