"""Staff notices: `services.notice_send`, `POST /api/notices/`, `manage.py send_notice`, and what
connections receive, in one process (WebsocketCommunicator) and across two daphne processes."""

import asyncio
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from chat import events, services
from chat.errors import Forbidden, Gone, Invalid, NotFound
from tests.support import connect, db, frames, ws_connect

pytestmark = pytest.mark.usefixtures("fresh_layer")


# The service


def test_global_notice_goes_to_everyone(published, django_capture_on_commit_callbacks, staff):
    with django_capture_on_commit_callbacks(execute=True):
        frame = services.notice_send(text="Restart at 22:00", level="warning", actor=staff)
    assert frame == {"type": "notice", "level": "warning", "text": "Restart at 22:00"}
    assert [(group, event["type"], event["frame"]) for group, event in published] == [
        (events.everyone_group(), "chat.frame", frame)
    ]


def test_room_notice_goes_to_the_room_group(published, django_capture_on_commit_callbacks, general_with_bob):
    with django_capture_on_commit_callbacks(execute=True):
        frame = services.notice_send(text="Be nice ✨", room="general")
    assert frame == {"type": "notice", "level": "info", "text": "Be nice ✨", "room": "general"}
    assert [(group, event["frame"], event["room_id"]) for group, event in published] == [
        (events.room_group(general_with_bob.pk), frame, general_with_bob.pk)
    ]


def test_notice_inside_a_transaction_waits_for_commit(published, django_capture_on_commit_callbacks, db):
    with pytest.raises(RuntimeError), django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            services.notice_send(text="never sent")
            raise RuntimeError("rolled back")
    assert published == []
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        services.notice_send(text="sent on commit")
        assert published == []
    assert frames(published, "notice") == [{"type": "notice", "level": "info", "text": "sent on commit"}]


def test_text_may_be_exactly_the_limit(published, django_capture_on_commit_callbacks, settings, db):
    with django_capture_on_commit_callbacks(execute=True):
        services.notice_send(text="x" * settings.CHAT_MAX_BODY)
    assert len(frames(published, "notice")[0]["text"]) == settings.CHAT_MAX_BODY


@pytest.mark.parametrize(
    "kwargs, error, detail",
    [
        ({"text": ""}, Invalid, "text: must be a non-empty string."),
        ({"text": "  \n"}, Invalid, "text: must be a non-empty string."),
        ({"text": None}, Invalid, "text: must be a non-empty string."),
        ({"text": "x" * 4001}, Invalid, "text: 4001 characters; the limit is 4000."),
        ({"text": "hi", "level": "error"}, Invalid, "level: use 'info' or 'warning'."),
        ({"text": "hi", "room": "nope"}, NotFound, "No room 'nope'."),
        ({"text": "hi", "room": "old"}, Gone, "Room 'old' is archived."),
        ({"text": "hi", "actor": "bob"}, Forbidden, "Only staff can send notices."),
    ],
)
def test_bad_notices_publish_nothing(
    published, django_capture_on_commit_callbacks, settings, alice, bob, kwargs, error, detail
):
    settings.CHAT_MAX_BODY = 4000
    services.room_create(user=alice, name="Old", slug="old")
    services.room_archive(user=alice, slug="old")
    published.clear()
    if kwargs.get("actor") == "bob":
        kwargs = {**kwargs, "actor": bob}
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(error) as exc:
        services.notice_send(**kwargs)
    assert type(exc.value) is error and exc.value.detail == detail
    assert published == []


# REST


def test_api_notice_is_staff_only(api, published, django_capture_on_commit_callbacks, alice, staff, general_with_bob):
    assert api().post("/api/notices/", {"text": "hi"}, format="json").status_code == 401
    refused = api(alice).post("/api/notices/", {"text": "hi"}, format="json")  # alice owns a room, but isn't staff
    assert refused.status_code == 403
    assert published == []
    with django_capture_on_commit_callbacks(execute=True):
        body = {"text": "hi", "level": "warning", "room": "general"}
        response = api(staff).post("/api/notices/", body, format="json")
    assert response.status_code == 202
    assert response.json() == {"type": "notice", "level": "warning", "text": "hi", "room": "general"}
    assert [(group, event["frame"]) for group, event in published] == [
        (events.room_group(general_with_bob.pk), response.json())
    ]


def test_api_notice_to_everyone(api, published, django_capture_on_commit_callbacks, staff):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(staff).post("/api/notices/", {"text": "hello all"}, format="json")
    assert response.status_code == 202
    assert response.json() == {"type": "notice", "level": "info", "text": "hello all"}
    assert [(group, event["frame"]) for group, event in published] == [(events.everyone_group(), response.json())]


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({}, 400, "text"),
        ({"text": " "}, 400, "detail"),
        ({"text": "hi", "level": "loud"}, 400, "level"),
        ({"text": "hi", "room": ""}, 400, "room"),
        ({"text": "hi", "room": "nope"}, 404, "detail"),
        ({"text": "hi", "room": "old"}, 410, "detail"),
    ],
)
def test_api_bad_notice(api, published, django_capture_on_commit_callbacks, alice, staff, body, status, field):
    services.room_create(user=alice, name="Old", slug="old")
    services.room_archive(user=alice, slug="old")
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = api(staff).post("/api/notices/", body, format="json")
    assert response.status_code == status
    assert field in response.json(), response.json()
    assert published == []


# The command


def test_command_sends_a_notice(published, django_capture_on_commit_callbacks, settings, general_with_bob):
    settings.REDIS_URL = "redis://servers-redis"  # `published` replaces the send
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("send_notice", "Maintenance soon", "--room", "general", "--level", "warning", stdout=out)
    assert [(group, event["frame"]) for group, event in published] == [
        (
            events.room_group(general_with_bob.pk),
            {"type": "notice", "level": "warning", "text": "Maintenance soon", "room": "general"},
        )
    ]
    assert out.getvalue() == "Sent a warning notice to room 'general'.\n"
    with django_capture_on_commit_callbacks(execute=True):
        call_command("send_notice", "Hello", stdout=out)
    assert published[-1][0] == events.everyone_group()
    assert published[-1][1]["frame"] == {"type": "notice", "level": "info", "text": "Hello"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["hi", "--room", "nope"], "No room 'nope'."),
        (["", "--room", "general"], "text: must be a non-empty string."),
        (["hi", "--level", "loud"], "argument --level: invalid choice: 'loud' (choose from 'info', 'warning')"),
    ],
)
def test_command_errors_clearly(
    published, django_capture_on_commit_callbacks, settings, general_with_bob, args, message
):
    settings.REDIS_URL = "redis://servers-redis"
    published.clear()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(CommandError) as exc:
        call_command("send_notice", *args, stdout=StringIO())
    assert message in str(exc.value)
    assert published == []


def test_command_without_redis_refuses(published, settings, db):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL is not set"):
        call_command("send_notice", "hi", stdout=StringIO())
    assert published == []


# Connections


async def expect_notice(client, **frame):
    got = await client.expect("notice")
    assert got == {"type": "notice", **frame}


@pytest.mark.django_db(transaction=True)
async def test_global_notice_reaches_every_connection(alice, bob, carol, general_with_bob):
    clients = [await connect(alice), await connect(alice), await connect(bob), await connect(carol)]
    await db(services.notice_send)(text="Server restart in 5 minutes", level="warning")
    for client in clients:
        await expect_notice(client, level="warning", text="Server restart in 5 minutes")
    for client in clients:
        await client.close()


@pytest.mark.django_db(transaction=True)
async def test_room_notice_reaches_only_that_rooms_connections(alice, bob, carol, general_with_bob):
    await db(services.room_create)(user=carol, name="Elsewhere", slug="elsewhere")
    a, b, c = await connect(alice), await connect(bob), await connect(carol)
    await db(services.notice_send)(text="Topic is on-call", room="general")
    for client in (a, b):
        await expect_notice(client, level="info", text="Topic is on-call", room="general")
    assert not [f for f in await c.drain(0.3) if f["type"] == "notice"]
    await b.send(type="leave", room="general", ref="l")  # left: no longer subscribed
    await b.expect("room.left", ref="l")
    await db(services.notice_send)(text="second", room="general")
    await expect_notice(a, level="info", text="second", room="general")
    assert not [f for f in await b.drain(0.3) if f["type"] == "notice"]
    for client in (a, b, c):
        await client.close()


def in_a_plain_thread(fn, **kwargs):
    """Run `fn` in a new thread with no event loop and no asgiref context, as a background worker would."""

    def run():
        try:
            fn(**kwargs)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


@pytest.mark.live
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_notice_from_this_process_reaches_both_daphnes(
    redis_url, daphne_a, daphne_b, alice, bob, carol, general_with_bob
):
    a, b, c = await ws_connect(daphne_a, alice), await ws_connect(daphne_b, bob), await ws_connect(daphne_b, carol)
    await db(services.notice_send)(text="Global notice", level="warning")
    for client in (a, b, c):
        assert await client.expect("notice") == {"type": "notice", "level": "warning", "text": "Global notice"}
    await asyncio.to_thread(in_a_plain_thread, services.notice_send, text="Room notice", room="general")
    for client in (a, b):
        assert await client.expect("notice") == {
            "type": "notice",
            "level": "info",
            "text": "Room notice",
            "room": "general",
        }
    assert not [f for f in await c.drain(0.5) if f["type"] == "notice"]
    for client in (a, b, c):
        await client.close()
