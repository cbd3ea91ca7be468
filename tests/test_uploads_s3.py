"""Uploads on an S3-compatible store (django-storages), against moto's server run as a real process:
stored there, downloads redirected to signed URLs that carry our headers, purged there."""

import subprocess
import sys
import urllib.request

import boto3
import pytest
from django.test import override_settings

from chat import services
from chat.models import Upload
from tests.live import BASE_DIR, free_port, wait_for_port
from tests.support import public_room
from tests.uploads_support import pdf, png, upload

pytestmark = [pytest.mark.s3, pytest.mark.django_db(transaction=True)]
BUCKET = "chat-files"
KEYS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, 30)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, **KEYS).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def s3(s3_endpoint):
    options = {
        "bucket_name": BUCKET,
        "endpoint_url": s3_endpoint,
        "region_name": KEYS["region_name"],
        "access_key": KEYS["aws_access_key_id"],
        "secret_key": KEYS["aws_secret_access_key"],
        "default_acl": None,
        "querystring_auth": True,
        "file_overwrite": False,
    }
    storages = {
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages):
        yield boto3.client("s3", endpoint_url=s3_endpoint, **KEYS)


def keys(client) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_files_are_stored_in_the_bucket_and_served_by_signed_redirects(api, alice, s3):
    public_room(alice)
    image = upload(api(alice), "general", png(), "a.png").json()
    document = upload(api(alice), "general", pdf(), "report.pdf").json()
    rows = {row.pk: row for row in Upload.objects.all()}
    assert {rows[image["id"]].name, rows[image["id"]].thumb, rows[document["id"]].name} <= keys(s3)
    services.message_send(user=alice, slug="general", body="", attachments=[image["id"], document["id"]])
    redirect = api(alice).get(document["url"])
    assert redirect.status_code == 302 and redirect["X-Content-Type-Options"] == "nosniff"
    assert "Signature=" in redirect["Location"] or "X-Amz-Signature=" in redirect["Location"]
    with urllib.request.urlopen(redirect["Location"]) as stored:
        assert stored.read() == pdf()
        assert stored.headers["Content-Type"] == "application/pdf"
        assert stored.headers["Content-Disposition"].startswith("attachment;")
    with urllib.request.urlopen(api(alice).get(image["url"])["Location"]) as stored:
        assert stored.read() == png() and stored.headers["Content-Disposition"].startswith("inline;")
    assert api(alice).get("/api/rooms/general/messages/").json()["results"][-1]["attachments"] == [image, document]


def test_purging_deletes_the_objects(api, alice, s3):
    public_room(alice)
    data = upload(api(alice), "general", pdf(), "r.pdf").json()
    message, _ = services.message_send(user=alice, slug="general", body="x", attachments=[data["id"]])
    name = Upload.objects.get(pk=data["id"]).name
    assert name in keys(s3)
    services.message_delete(user=alice, message_id=message.pk)
    assert api(alice).get(data["url"]).status_code == 404
    assert services.uploads_purge() == 1
    assert name not in keys(s3)
