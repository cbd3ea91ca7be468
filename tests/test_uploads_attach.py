"""Sending uploads with a message (`attachments`), their life cycle, and exports listing them."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from chat import services
from chat.errors import Invalid
from chat.models import Message, Upload
from tests.support import joined, public_room
from tests.uploads_support import pdf, png, upload

pytestmark = pytest.mark.django_db(transaction=True)  # see test_uploads.py


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def uploaded(api, user, slug="general", content=None, name="a.png") -> dict:
    response = upload(api(user), slug, content or png(), name)
    assert response.status_code == 201, response.content
    return response.json()


def test_a_message_lists_its_files_as_the_upload_response_did(api, alice):
    public_room(alice)
    image, document = uploaded(api, alice), uploaded(api, alice, content=pdf(), name="r.pdf")
    message, created = services.message_send(
        user=alice, slug="general", body="", attachments=[image["id"], document["id"]]
    )
    assert created and message.body == ""
    history = api(alice).get("/api/rooms/general/messages/").json()["results"]
    assert history[-1]["attachments"] == [image, document]
    assert set(Upload.objects.values_list("message_id", flat=True)) == {message.pk}


def test_over_rest_with_an_empty_body(api, alice):
    public_room(alice)
    image = uploaded(api, alice)
    response = api(alice).post(
        "/api/rooms/general/messages/", {"body": "", "attachments": [image["id"]]}, format="json"
    )
    assert response.status_code == 201 and response.json()["attachments"] == [image]
    assert api(alice).post("/api/rooms/general/messages/", {"body": ""}, format="json").status_code == 400


@pytest.mark.parametrize("case", ["someone_elses", "twice", "other_room", "eleven", "unknown", "repeated"])
def test_attach_rules_refuse_with_invalid_and_change_nothing(api, alice, bob, case):
    joined(public_room(alice), bob)
    public_room(alice, slug="other")
    mine = uploaded(api, alice)
    if case == "someone_elses":
        ids = [uploaded(api, bob)["id"]]
    elif case == "twice":
        services.message_send(user=alice, slug="general", body="first", attachments=[mine["id"]])
        ids = [mine["id"]]
    elif case == "other_room":
        ids = [uploaded(api, alice, slug="other")["id"]]
    elif case == "eleven":
        ids = [uploaded(api, alice)["id"] for _ in range(11)]
    elif case == "unknown":
        ids = [987654]
    else:
        ids = [mine["id"], mine["id"]]
    before = Message.objects.count(), list(Upload.objects.order_by("pk").values_list("pk", "message_id"))
    with pytest.raises(Invalid):
        services.message_send(user=alice, slug="general", body="x", attachments=ids)
    assert (Message.objects.count(), list(Upload.objects.order_by("pk").values_list("pk", "message_id"))) == before


def test_two_sends_of_one_batch_naming_one_upload_the_first_gets_it(api, alice):
    public_room(alice)
    image = uploaded(api, alice)
    request = dict(user=alice, slug="general", body="x", attachments=[image["id"]])
    first, second = services.message_send_batch([request, dict(request, body="y")])
    assert isinstance(first, tuple) and first[0].attachments == [image]
    assert isinstance(second, Invalid)


def test_the_websocket_frame_carries_attachments_and_refuses_bad_lists():
    from chat import protocol

    frame = protocol.parse_client_frame(
        json.dumps({"type": "message.send", "room": "a", "body": "", "attachments": [1]})
    )
    assert frame.get("attachments") == [1]
    for bad in ([1] * 11, ["1"], [True], "1", [0]):
        with pytest.raises(protocol.FrameError) as refused:
            protocol.parse_client_frame(
                json.dumps({"type": "message.send", "room": "a", "body": "", "attachments": bad})
            )
        assert refused.value.code == protocol.INVALID


def test_purge_removes_the_bytes_of_deleted_messages_and_stale_uploads_only(api, alice):
    public_room(alice)
    sent, deleted, fresh, stale = (uploaded(api, alice) for _ in range(4))
    services.message_send(user=alice, slug="general", body="kept", attachments=[sent["id"]])
    gone, _ = services.message_send(user=alice, slug="general", body="gone", attachments=[deleted["id"]])
    services.message_delete(user=alice, message_id=gone.pk)
    Upload.objects.filter(pk=stale["id"]).update(created_at=timezone.now() - timedelta(hours=25))
    out = io.StringIO()
    call_command("purge_uploads", stdout=out)
    assert "2" in out.getvalue()
    rows = {upload.pk: upload for upload in Upload.objects.all()}
    for data, purged in ((sent, False), (deleted, True), (fresh, False), (stale, True)):
        row = rows[data["id"]]
        assert row.purged is purged
        assert default_storage.exists(row.name) is not purged and default_storage.exists(row.thumb) is not purged
    assert api(alice).get(stale["url"]).status_code == 404


def test_exports_list_attachments_and_never_inline_them(api, alice):
    public_room(alice)
    document = uploaded(api, alice, content=pdf(), name="r.pdf")
    services.message_send(user=alice, slug="general", body="see", attachments=[document["id"]])
    exported = b"".join(api(alice).get("/api/rooms/general/export/?format=json").streaming_content)
    assert json.loads(exported)[-1]["attachments"] == [document] and b"%PDF" not in exported
    lines = b"".join(api(alice).get("/api/rooms/general/export/?format=ndjson").streaming_content).splitlines()
    assert json.loads(lines[-1])["attachments"] == [document]
    text = b"".join(api(alice).get("/api/rooms/general/export/?format=csv").streaming_content).decode("utf-8-sig")
    row = list(csv.DictReader(io.StringIO(text)))[-1]
    assert json.loads(row["attachments"]) == [document] and "%PDF" not in text


@pytest.mark.usefixtures("fresh_layer")
async def test_a_websocket_send_carries_files_to_every_subscriber_and_refuses_anothers(alice, bob, general):
    from chat.uploads.files import Inspected
    from tests.support import connect, db

    def stored(user):
        return services.upload_create(
            user=user,
            slug="general",
            filename="r.pdf",
            size=10,
            inspected=Inspected(content_type="application/pdf"),
            name="uploads/x",
            thumb="",
        )

    await db(services.room_join)(user=bob, slug="general")
    mine, bobs = await db(stored)(alice), await db(stored)(bob)
    a, b = await connect(alice), await connect(bob)
    await a.send(type="message.send", room="general", body="", attachments=[mine.pk], client_id="c1", ref="r1")
    ack = await a.expect("message.new")
    got = await b.expect("message.new")
    assert ack["ref"] == "r1" and got["message"]["attachments"] == ack["message"]["attachments"]
    assert [item["id"] for item in got["message"]["attachments"]] == [mine.pk] and got["message"]["body"] == ""
    await a.send(type="message.send", room="general", body="x", attachments=[bobs.pk], client_id="c2", ref="r2")
    error = await a.expect("error")
    assert error["ref"] == "r2" and error["code"] == "invalid"
    assert await db(Message.objects.filter(client_id="c2").count)() == 0
    await a.close(), await b.close()
