"""Rooms in Chromium, two users side by side: new direct messages, invitations and removals reach
every open page (the room list included) with unread counts in the tab title and an opt-in
desktop notification; the members panel, invitations with suggestions, settings, leaving after
a confirmation, the directory and the create-room and direct-message dialogs.
"""

import re

import pytest
from playwright.sync_api import expect

from chat import services
from chat.models import Membership, Room
from tests.browser import chromium, log_in, open_room, session_fetch, use_server_hasher
from tests.live import run_daphne

pytestmark = pytest.mark.browser

# Records desktop notifications instead of showing them; permission granted.
FAKE_NOTIFICATION = """
window.shown = [];
window.Notification = class { constructor(title, options) { window.shown.push([title, options.body]); }
  addEventListener() {} static get permission() { return "granted"; } static requestPermission() { return Promise.resolve("granted"); } };
"""


def test_new_rooms_invitations_and_removals_reach_every_open_page(transactional_db, alice, bob, carol, settings):
    settings.CHAT_RATE_PER_10S = 1000
    alice.is_staff = True
    alice.save()
    use_server_hasher(alice, bob, carol)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    services.room_create(user=alice, name="Secret", slug="secret", kind="private")

    with run_daphne() as server, chromium() as browser:
        page_a = log_in(browser, server, "alice")
        page_b = log_in(browser, server, "bob")
        page_b.context.add_init_script(FAKE_NOTIFICATION)
        page_b.reload()  # bob stays on the room list page
        expect(page_b.locator("#my-rooms li[data-room]")).to_have_count(1)
        page_b.click("#enable-notifications")
        expect(page_b.locator("#enable-notifications")).to_be_hidden()
        open_room(page_a, "general")

        # Alice opens a direct conversation with bob from the room page's dialog and writes.
        page_a.click("button[data-open-dialog=direct-dialog]")
        expect(page_a.locator("#direct-dialog")).to_be_visible()
        expect(page_a.locator("#dialog-direct-username")).to_be_focused()
        page_a.fill("#dialog-direct-username", "bo")
        expect(page_a.locator("#direct-suggestions option[value=bob]")).to_have_count(1)
        page_a.fill("#dialog-direct-username", "bob")
        page_a.click("#direct-dialog button[type=submit]")
        page_a.wait_for_url(re.compile(r"/rooms/dm-\d+-\d+/$"))
        expect(page_a.locator("#conn-state")).to_have_text("online")
        page_a.locator("#body").fill("hi bob, privately")
        page_a.locator("#body").press("Enter")

        # Bob's room list gains the conversation with its unread count, the tab title counts it,
        # and a desktop notification says who wrote.
        dm = page_b.locator("#my-rooms li[data-room^=dm-]")
        expect(dm).to_have_count(1)
        expect(dm.locator(".badge.unread")).to_have_text("1")
        expect(page_b).to_have_title(re.compile(r"^\(1\) "))
        assert page_b.evaluate("window.shown") == [["alice", "hi bob, privately"]]

        # A staff notice reaches the room list page too, and can be dismissed there.
        assert session_fetch(page_a, "POST", "/api/notices/", {"text": "Upgrade tonight"}) == 202
        notice = page_b.locator("#notices .notice", has_text="Upgrade tonight")
        notice.get_by_role("button", name="Dismiss").click()
        expect(notice).to_have_count(0)

        # An invitation appears in the switcher of an open room page, a removal takes it away.
        open_room(page_b, "general")
        assert session_fetch(page_a, "POST", "/api/rooms/secret/members/", {"username": "bob"}) == 201
        expect(page_b.locator("#room-nav li[data-room=secret]")).to_have_count(1)
        assert session_fetch(page_a, "DELETE", "/api/rooms/secret/members/bob/") == 204
        expect(page_b.locator("#room-nav li[data-room=secret]")).to_have_count(0)
        expect(page_b.locator("#room-nav li[data-room^=dm-] .badge.unread")).to_have_text("1")
        assert page_a.errors == [] and page_b.errors == []


def test_members_invitations_settings_leaving_and_the_directory(transactional_db, alice, bob, carol, settings):
    settings.CHAT_RATE_PER_10S = 1000
    use_server_hasher(alice, bob, carol)
    services.room_create(user=alice, name="Team", slug="team", kind="private")
    services.member_invite(actor=alice, slug="team", username="bob")
    services.room_create(user=carol, name="Gardening club", slug="garden", topic="Roses")
    services.room_create(user=carol, name="Chess", slug="chess")

    with run_daphne() as server, chromium() as browser:
        page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
        open_room(page_a, "team")
        open_room(page_b, "team")

        # Members: online first, with roles.
        members = page_a.locator("#members li")
        expect(members).to_have_count(2)
        expect(members.first).to_have_class(re.compile(r"\bonline\b"))
        expect(page_a.locator("#members li[data-user=alice] .role")).to_have_text("owner")

        # Invite carol with the suggestions; bob's panel shows her as a member.
        page_a.fill("#invite-username", "ca")
        expect(page_a.locator("#user-suggestions option[value=carol]")).to_have_count(1)
        page_a.fill("#invite-username", "carol")
        page_a.click("#invite-form button[type=submit]")
        expect(page_a.locator("#toast")).to_have_text("carol is invited.")
        expect(page_b.locator("#members li[data-user=carol]")).to_have_class(re.compile(r"\boffline\b"))

        # The owner renames the room and sets its topic; bob sees both live.
        page_a.click("#room-settings")
        page_a.fill("#settings-name", "Team room")
        page_a.fill("#settings-topic", "Plans for the week")
        page_a.click("#settings-dialog button[value=ok]")
        expect(page_b.locator("#room-name")).to_have_text("Team room")
        expect(page_b.locator("#room-topic")).to_have_text("Plans for the week")
        expect(page_b).to_have_title(re.compile("Team room"))

        # Leaving asks first: Cancel stays, Leave leaves.
        page_b.click("#leave-form button[type=submit]")
        expect(page_b.locator("#confirm-dialog")).to_be_visible()
        expect(page_b.locator("#confirm-title")).to_have_text("Leave Team room?")
        page_b.keyboard.press("Escape")
        expect(page_b.locator("#confirm-dialog")).to_be_hidden()
        expect(page_b).to_have_url(re.compile(r"/rooms/team/$"))
        page_b.click("#leave-form button[type=submit]")
        page_b.click("#confirm-ok")
        page_b.wait_for_url(f"{server.url}/")
        expect(page_a.locator("#members li[data-user=bob]")).to_have_count(0)

        # The directory finds rooms by name or topic, and joins.
        page_b.goto("/directory/?q=rose")
        expect(page_b.locator("#directory-rooms li[data-room]")).to_have_count(1)
        page_b.fill("#directory-q", "chess")
        page_b.press("#directory-q", "Enter")
        expect(page_b.locator("#directory-rooms li[data-room]")).to_have_text(re.compile("Chess"))
        page_b.click("#directory-rooms li[data-room=chess] button[type=submit]")
        page_b.wait_for_url(re.compile(r"/rooms/chess/$"))
        expect(page_b.locator("#conn-state")).to_have_text("online")

        # A new room from the room page's dialog.
        page_b.click("button[data-open-dialog=create-room-dialog]")
        page_b.fill("#dialog-room-name", "Book club")
        page_b.select_option("#dialog-room-kind", "private")
        page_b.click("#create-room-dialog button[type=submit]")
        page_b.wait_for_url(re.compile(r"/rooms/book-club/$"))
        assert page_a.errors == [] and page_b.errors == []

    assert not Membership.objects.filter(room__slug="team", user__username="bob").exists()
    assert Room.objects.get(slug="team").topic == "Plans for the week"
    assert Room.objects.get(slug="book-club").kind == "private"
