"""Files in the browser client (uploads.js) against a real daphne: an image and a PDF attached by
the button, each with its progress bar, sent with an empty text; the other member sees the
image's preview (larger on click) and the PDF's card with its download link."""

import pytest
from playwright.sync_api import expect

from chat import services
from chat.models import Message, Upload
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
        ids = dict(in_thread(lambda: list(Upload.objects.values_list("filename", "pk"))))

        for page in (page_a, page_b):
            message = page.locator("#messages .msg").last
            thumb = message.locator(".attachment-image img")
            expect(thumb).to_have_attribute("alt", "red.png")
            expect(thumb).to_have_js_property("complete", True)
            assert thumb.evaluate("img => img.naturalWidth") == 300  # the preview, smaller than its bound
            card = message.locator(".attachment-card")
            expect(card.locator(".attachment-name")).to_have_text("report.pdf")
            expect(card.locator("a.attachment-download")).to_have_attribute(
                "href", f"/api/uploads/{ids['report.pdf']}/"
            )
        page_b.locator("#messages .msg").last.locator(".attachment-image").click()
        expect(page_b.locator("#image-viewer img")).to_have_attribute("src", f"/api/uploads/{ids['red.png']}/")
        expect(page_b.locator("#image-viewer")).to_be_visible()
        stored = in_thread(Message.objects.get, author_id=alice.pk, kind="user")
        assert stored.body == "" and [item["name"] for item in stored.attachments] == ["red.png", "report.pdf"]


DROP_AND_PASTE = """async () => {
    const png = Uint8Array.from(atob("%s"), (c) => c.charCodeAt(0));  // the page's policy forbids data: fetches
    const pasted = new DataTransfer();
    pasted.items.add(new File([png], "pasted.png", {type: "image/png"}));
    document.getElementById("body").dispatchEvent(new ClipboardEvent("paste", {clipboardData: pasted, bubbles: true, cancelable: true}));
    const dropped = new DataTransfer();
    dropped.items.add(new File(["plain notes"], "notes.txt", {type: "text/plain"}));
    document.getElementById("composer").dispatchEvent(new DragEvent("drop", {dataTransfer: dropped, bubbles: true, cancelable: true}));
}"""


def test_files_pasted_and_dropped_are_sent_with_the_text(transactional_db, alice, tmp_path):
    import base64

    use_server_hasher(alice)
    services.room_create(user=alice, name="General", slug="general")
    with run_daphne({"MEDIA_ROOT": str(tmp_path / "media")}) as server, chromium() as browser:
        page = log_in(browser, server, "alice")
        open_room(page, "general")
        page.evaluate(DROP_AND_PASTE % base64.b64encode(png((20, 20))).decode())
        expect(page.locator("#upload-tray .upload-item.uploaded")).to_have_count(2)
        page.locator("#body").fill("two files")
        page.locator("#body").press("Enter")
        message = page.locator("#messages .msg").last
        expect(message.locator(".body")).to_have_text("two files")
        expect(message.locator(".attachment-image img")).to_have_attribute("alt", "pasted.png")
        expect(message.locator(".attachment-card .attachment-name")).to_have_text("notes.txt")
