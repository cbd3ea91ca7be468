"""/metrics: this process's Prometheus counters move with what the server does."""

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from chat import services
from chat.models import Message
from tests.support import connect, db

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_layer")]


def scrape() -> dict[str, float]:
    response = Client().get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if not sample.labels or "le" not in sample.labels
    }


async def test_counters_follow_sends_and_deliveries(alice, bob):
    await db(services.room_create)(user=alice, name="General", slug="general")
    await db(services.room_join)(user=bob, slug="general")
    before = await db(scrape)()
    a, b = await connect(alice), await connect(bob)
    assert (await db(scrape)())["chat_open_connections"] == before["chat_open_connections"] + 2
    await a.send(type="message.send", room="general", body="counted", client_id="c1")
    await a.expect("message.new")
    await b.expect("message.new", where=lambda f: f["message"]["body"] == "counted")
    await a.send(type="message.send", room="general", body="counted", client_id="c1")  # a duplicate
    await a.expect("message.new")
    after = await db(scrape)()
    assert after["chat_messages_accepted_total"] == before["chat_messages_accepted_total"] + 1
    assert after["chat_messages_delivered_total"] >= before["chat_messages_delivered_total"] + 3
    assert after["chat_send_to_persist_seconds_count"] == before["chat_send_to_persist_seconds_count"] + 1
    await a.close(), await b.close()
    assert (await db(scrape)())["chat_open_connections"] == before["chat_open_connections"]


def test_a_failed_publish_is_counted_and_raised(monkeypatch):
    from chat import events, metrics

    class DownLayer:
        async def group_send(self, group, event):
            raise ConnectionError("Redis is away")

    monkeypatch.setattr(events, "get_channel_layer", lambda: DownLayer())
    before = metrics.PUBLISH_FAILURES._value.get()
    with pytest.raises(ConnectionError):
        events.send("room.1", {"type": "chat.frame", "text": "{}"})
    assert metrics.PUBLISH_FAILURES._value.get() == before + 1


async def test_layer_drops_are_scraped():
    from chat.realtime.layers import LocalChannelLayer

    layer = LocalChannelLayer(capacity=1)
    stuck = await layer.new_channel()
    await layer.group_add("room.1", stuck)
    before = (await db(scrape)())["chat_layer_drops_total"]
    for _ in range(3):
        await layer.group_send("room.1", {"type": "chat.frame"})
    assert (await db(scrape)())["chat_layer_drops_total"] == before + 2


async def test_a_publish_that_fails_after_the_write_is_counted_and_the_write_stands(alice, monkeypatch):
    """From the consumer, events are sent once the write returns: a failure there is
    logged and counted, and the caller still gets its result."""
    from chat import events, metrics

    class DownLayer:
        async def group_send(self, group, event):
            raise ConnectionError("Redis is away")

    await db(services.room_create)(user=alice, name="General", slug="general")
    monkeypatch.setattr(events, "get_channel_layer", lambda: DownLayer())
    before = metrics.PUBLISH_FAILURES._value.get()
    message, created = await events.run_sync(services.message_send)(user=alice, slug="general", body="kept")
    assert created and metrics.PUBLISH_FAILURES._value.get() == before + 1
    assert await db(Message.objects.filter(pk=message.pk).exists)()
