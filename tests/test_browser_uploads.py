"""Files in the browser client (uploads.js) against a real daphne: an image and a PDF attached by
the button, each with its progress bar, sent with an empty text; the other member sees the
image's preview (larger on click) and the PDF's card with its download link."""

import pytest
from playwright.sync_api import expect

from chat import services
from chat.models import Message
from tests.browser import chromium, in_thread, log_in, open_room, use_server_hasher
from tests.live import run_daphne
from tests.uploads_support import pdf, png

pytestmark = pytest.mark.browser


def test_attach_an_image_and_a_pdf_and_both_members_see_them(transactional_db, alice, bob, tmp_path):
    use_server_hasher(alice, bob)
    services.room_create(user=alice, name="General", slug="general")
    services.room_join(user=bob, slug="general")
    (tmp_path / "red.png").write_bytes(png((300, 200)))
    (tmp_path / "report.pdf").write_bytes(pdf())
    with run_daphne({"MEDIA_ROOT": str(tmp_path / "media")}) as server, chromium() as browser:
        page_a, page_b = log_in(browser, server, "alice"), log_in(browser, server, "bob")
        open_room(page_a, "general")
        open_room(page_b, "general")

        page_a.locator("#attach-input").set_input_files([str(tmp_path / "red.png"), str(tmp_path / "report.pdf")])
        tray = page_a.locator("#upload-tray .upload-item")
        expect(tray).to_have_count(2)
        expect(page_a.locator("#upload-tray .upload-item.uploaded")).to_have_count(2)
        expect(page_a.locator("#upload-tray progress").first).to_have_attribute("value", "100")
        page_a.locator("#send").click()
        expect(page_a.locator("#upload-tray")).to_be_hidden()

        for page in (page_a, page_b):
            message = page.locator("#messages .msg").last
            thumb = message.locator(".attachment-image img")
            expect(thumb).to_have_attribute("alt", "red.png")
            expect(thumb).to_have_js_property("complete", True)
            assert thumb.evaluate("img => img.naturalWidth") == 300  # the preview, smaller than its bound
            card = message.locator(".attachment-card")
            expect(card.locator(".attachment-name")).to_have_text("report.pdf")
            expect(card.locator("a.attachment-download")).to_have_attribute("href", "/api/uploads/2/")
        page_b.locator("#messages .msg").last.locator(".attachment-image").click()
        expect(page_b.locator("#image-viewer img")).to_have_attribute("src", "/api/uploads/1/")
        expect(page_b.locator("#image-viewer")).to_be_visible()
        stored = in_thread(Message.objects.get, author_id=alice.pk, kind="user")
        assert stored.body == "" and [item["name"] for item in stored.attachments] == ["red.png", "report.pdf"]
