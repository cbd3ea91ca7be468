"""The in-process channel layer of the embedded defaults."""

from chat import metrics
from chat.realtime.layers import LocalChannelLayer


async def test_group_send_reaches_every_member_once_sharing_one_event():
    layer = LocalChannelLayer()
    a, b, outsider = await layer.new_channel(), await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room.1", a)
    await layer.group_add("room.1", b)
    event = {"type": "chat.frame", "text": "{}"}
    await layer.group_send("room.1", event)
    assert await layer.receive(a) is event and await layer.receive(b) is event
    assert layer.channels[a].empty() and layer.channels[b].empty() and outsider not in layer.channels


async def test_a_full_member_queue_drops_and_counts_without_blocking_the_others():
    layer = LocalChannelLayer(capacity=2)
    slow, fast = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room.1", slow)
    await layer.group_add("room.1", fast)
    before = metrics.LAYER_DROPS._value.get()
    for i in range(3):
        await layer.group_send("room.1", {"type": "chat.frame", "n": i})
        assert (await layer.receive(fast))["n"] == i
    assert metrics.LAYER_DROPS._value.get() == before + 1
    assert [(await layer.receive(slow))["n"] for _ in range(2)] == [0, 1]


async def test_expired_events_still_leave_the_group():
    layer = LocalChannelLayer(expiry=-1)  # everything queued is already expired
    gone = await layer.new_channel()
    await layer.group_add("room.1", gone)
    await layer.group_send("room.1", {"type": "chat.frame"})
    layer._cleaned_at = 0.0
    layer._clean_expired()
    assert gone not in layer.groups.get("room.1", {})
