"""Uploads (PROTOCOL.md, "Files"): the upload response, what is served and how, who may fetch."""

import io

import pytest
from asgiref.sync import async_to_sync
from django.core.files.storage import default_storage
from PIL import Image

from chat.models import Upload
from tests.support import joined, private_room, public_room
from tests.uploads_support import GPS_TAG, jpeg_with_exif, pdf, png, upload

# The views run their database steps through `database_sync_to_async`, which closes a connection
# found inside a transaction: each test commits for real.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def body(response) -> bytes:
    """A download's bytes (streamed by an async iterator, as daphne reads it)."""

    async def read():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)() if response.streaming else response.content


def test_an_image_upload_answers_201_with_its_metadata_and_preview(api, alice):
    public_room(alice)
    response = upload(api(alice), "general", png((40, 30)), "red.png", "image/png")
    assert response.status_code == 201
    data = response.json()
    assert set(data) == {"id", "name", "size", "content_type", "url", "thumb_url", "width", "height"}
    assert (data["name"], data["size"], data["content_type"]) == ("red.png", len(png((40, 30))), "image/png")
    assert (data["width"], data["height"]) == (40, 30)
    assert data["url"] == f"/api/uploads/{data['id']}/" and data["thumb_url"] == f"/api/uploads/{data['id']}/thumb/"
    stored = Upload.objects.get(pk=data["id"])
    assert default_storage.exists(stored.name) and default_storage.exists(stored.thumb)
    assert "red" not in stored.name  # storage names carry nothing of the client's


def test_images_are_served_inline_and_everything_else_as_an_attachment_with_nosniff(api, alice):
    public_room(alice)
    image = upload(api(alice), "general", png(), "a.png", "image/png").json()
    document = upload(api(alice), "general", pdf(), "report.pdf", "application/pdf").json()
    assert document["content_type"] == "application/pdf" and "thumb_url" not in document and "width" not in document
    shown = api(alice).get(image["url"])
    assert shown.status_code == 200 and shown["Content-Type"] == "image/png"
    assert shown["Content-Disposition"].startswith("inline;") and shown["X-Content-Type-Options"] == "nosniff"
    assert body(shown) == png()
    fetched = api(alice).get(document["url"])
    assert fetched["Content-Type"] == "application/pdf" and fetched["X-Content-Type-Options"] == "nosniff"
    assert (
        fetched["Content-Disposition"].startswith("attachment;")
        and 'filename="report.pdf"' in fetched["Content-Disposition"]
    )
    assert body(fetched) == pdf()


@pytest.mark.parametrize(
    ("name", "content", "declared"),
    [
        ("page.html", b"<!doctype html><script>alert(1)</script>", "text/html"),
        ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml"),
        ("run.js", b"alert(document.cookie)", "application/javascript"),
    ],
)
def test_html_svg_and_scripts_are_never_inline(api, alice, name, content, declared):
    public_room(alice)
    response = upload(api(alice), "general", content, name, declared)
    if response.status_code == 415:  # refused outright (an SVG claims to be an image): never served at all
        assert response.json()["code"] == "unsupported_type"
        return
    data = response.json()
    assert response.status_code == 201 and data["content_type"] in ("text/plain", "application/octet-stream")
    served = api(alice).get(data["url"])
    assert served["Content-Disposition"].startswith("attachment;")
    assert served["Content-Type"] in ("text/plain", "application/octet-stream")
    assert served["X-Content-Type-Options"] == "nosniff"


def test_a_file_named_as_an_image_that_is_not_one_is_refused_415(api, alice):
    public_room(alice)
    response = upload(api(alice), "general", b"MZ\x90\x00 not a picture", "cat.jpg", "image/jpeg")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_type"
    assert not Upload.objects.exists()


def test_the_type_comes_from_the_content_not_the_name(api, alice):
    public_room(alice)
    data = upload(api(alice), "general", png(), "notes.txt", "text/plain").json()
    assert data["content_type"] == "image/png" and "thumb_url" in data


def test_a_decompression_bomb_is_refused_before_decoding(api, alice, settings):
    settings.CHAT_MAX_IMAGE_PIXELS = 1000 * 1000
    public_room(alice)
    out = io.BytesIO()
    Image.new("1", (3000, 3000)).save(out, "PNG")  # a few kilobytes, nine million pixels
    response = upload(api(alice), "general", out.getvalue(), "bomb.png", "image/png")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_type"
    assert not Upload.objects.exists()


def test_the_preview_is_bounded_and_carries_no_exif(api, alice, settings):
    settings.CHAT_THUMB_PX = 200
    public_room(alice)
    original = jpeg_with_exif((1200, 900))
    assert Image.open(io.BytesIO(original)).getexif().get(0x0110) == "SecretCam 3000"  # the test's premise
    data = upload(api(alice), "general", original, "holiday.jpg", "image/jpeg").json()
    assert (data["width"], data["height"]) == (1200, 900)
    thumb = api(alice).get(data["thumb_url"])
    assert thumb.status_code == 200 and thumb["X-Content-Type-Options"] == "nosniff"
    preview = Image.open(io.BytesIO(body(thumb)))
    assert max(preview.size) == 200
    exif = preview.getexif()
    assert len(exif) == 0 and GPS_TAG not in exif and b"SecretCam" not in body(thumb)


def test_over_the_limit_is_413_too_large(api, alice, settings):
    settings.CHAT_MAX_UPLOAD_BYTES = 1000
    public_room(alice)
    response = upload(api(alice), "general", b"x" * 1001, "big.txt", "text/plain")
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert not Upload.objects.exists()


def test_uploading_needs_the_right_to_send(api, alice, bob, carol):
    private_room(alice, members=[bob])
    assert upload(api(carol), "secret", png(), "a.png").status_code == 403
    assert upload(api(), "secret", png(), "a.png").status_code == 401
    assert upload(api(bob), "nowhere", png(), "a.png").status_code == 404
    assert not Upload.objects.exists()
    assert api(bob).post("/api/rooms/secret/uploads/", {}, format="multipart").json()["code"] == "invalid"


def test_a_bad_token_is_refused_as_the_rest_views_refuse_it(api, alice):
    public_room(alice)
    client = api()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    refused = upload(client, "general", png(), "a.png")
    rest = client.get("/api/rooms/")
    assert refused.status_code == rest.status_code == 401
    assert refused.json()["code"] == rest.json()["code"] == "token_not_valid"
    assert refused.json()["detail"] == rest.json()["detail"]
    assert not Upload.objects.exists()


def test_downloads_are_checked_against_room_access_every_time(api, alice, bob, carol):
    from chat import services

    private_room(alice, members=[bob])
    data = upload(api(alice), "secret", png(), "a.png").json()
    # Unattached: only its uploader.
    assert api(alice).get(data["url"]).status_code == 200
    assert api(bob).get(data["url"]).status_code == 404
    message, _ = services.message_send(user=alice, slug="secret", body="", attachments=[data["id"]])
    assert api(bob).get(data["url"]).status_code == 200 and api(bob).get(data["thumb_url"]).status_code == 200
    for outsider in (carol, None):
        assert api(outsider).get(data["url"]).status_code in (404, 401)
    assert api(carol).get(data["url"]).status_code == 404 and api(carol).get(data["thumb_url"]).status_code == 404
    services.member_remove(actor=alice, slug="secret", username="bob")
    assert api(bob).get(data["url"]).status_code == 404
    assert api(alice).get("/api/uploads/999999/").status_code == 404


def test_deleting_the_message_makes_its_files_unreachable_at_once(api, alice, bob):
    from chat import services

    joined(public_room(alice), bob)
    data = upload(api(alice), "general", pdf(), "r.pdf").json()
    message, _ = services.message_send(user=alice, slug="general", body="see", attachments=[data["id"]])
    assert api(bob).get(data["url"]).status_code == 200
    services.message_delete(user=alice, message_id=message.pk)
    assert api(bob).get(data["url"]).status_code == 404
    assert api(alice).get(data["url"]).status_code == 404
    history = api(bob).get("/api/rooms/general/messages/").json()["results"]
    assert [m["attachments"] for m in history if m["id"] == message.pk] == [[]]


def test_uploads_spend_a_budget_per_user(api, alice, settings):
    settings.CHAT_WRITE_RATES = {**settings.CHAT_WRITE_RATES, "upload": (2, 60)}
    public_room(alice)
    assert [upload(api(alice), "general", pdf(), "r.pdf").status_code for _ in range(2)] == [201, 201]
    refused = upload(api(alice), "general", pdf(), "r.pdf")
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited" and int(refused["Retry-After"]) > 0
    assert Upload.objects.count() == 2
