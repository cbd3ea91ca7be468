"""The process's hub: one layer membership per group per process, events handed to local members in order."""

import asyncio

import pytest

from chat.realtime.hub import Hub
from chat.realtime.layers import LocalChannelLayer


class Member:
    def __init__(self, fail=False, name="conn.member", user_id=None):
        self.got, self.fail, self.channel_name, self.user_id = [], fail, name, user_id

    def deliver(self, event, frame):
        if self.fail:
            raise RuntimeError("broken connection")
        self.got.append(event["n"])


class SlowLayer(LocalChannelLayer):
    """Every layer call takes a while, as a Redis round trip does."""

    async def new_channel(self, prefix="specific."):
        await asyncio.sleep(0.01)
        return await super().new_channel(prefix)

    async def group_add(self, group, channel):
        await asyncio.sleep(0.01)
        await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        await asyncio.sleep(0.01)
        await super().group_discard(group, channel)


async def send(hub, group, n):
    await hub.layer.group_send(group, {"type": "chat.frame", "group": group, "n": n})


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_many_local_members_are_one_layer_member_and_get_every_event_in_order():
    hub = Hub(LocalChannelLayer())
    members = [Member() for _ in range(3)]
    for member in members:
        await hub.join("room.1", member)
    assert hub.layer.groups["room.1"].keys() == {hub.channel}
    for n in range(3):
        await send(hub, "room.1", n)
    await settle()
    assert [m.got for m in members] == [[0, 1, 2]] * 3

    await hub.leave(["room.1"], members[0])
    await hub.leave(["room.1"], members[1])
    assert hub.layer.groups["room.1"].keys() == {hub.channel}  # one member is left
    await hub.leave(["room.1"], members[2])
    assert not hub.layer.groups.get("room.1")
    await send(hub, "room.1", 3)
    await settle()
    assert [m.got for m in members] == [[0, 1, 2]] * 3
    hub.reader.cancel()


async def test_an_event_naming_its_users_is_handed_to_their_connections_only():
    """A `notification` goes to its room's group naming the users to alert: the hub hands it to
    their connections alone, not to every connection of the room to drop."""
    hub = Hub(LocalChannelLayer())
    members = [Member(name=f"conn.{n}", user_id=n) for n in (1, 2, 3, 3)]
    for member in members:
        await hub.join("room.1", member)
    await hub.layer.group_send("room.1", {"type": "chat.frame", "group": "room.1", "n": 0, "notify_users": [1, 3]})
    await send(hub, "room.1", 1)
    await settle()
    assert [m.got for m in members] == [[0, 1], [1], [0, 1], [0, 1]]


async def test_concurrent_first_joins_share_one_channel():
    hub = Hub(SlowLayer())
    members = [Member() for _ in range(5)]
    await asyncio.gather(*(hub.join(f"user.{i}", m) for i, m in enumerate(members)))
    assert {channel for i in range(5) for channel in hub.layer.groups[f"user.{i}"]} == {hub.channel}
    for i in range(5):
        await send(hub, f"user.{i}", i)
    await settle()
    assert [m.got for m in members] == [[0], [1], [2], [3], [4]]
    hub.reader.cancel()


async def test_a_join_racing_the_last_leave_stays_subscribed():
    hub = Hub(SlowLayer())
    leaving, joining = Member(), Member()
    await hub.join("room.1", leaving)
    await asyncio.gather(hub.leave(["room.1"], leaving), hub.join("room.1", joining))
    assert hub.layer.groups["room.1"].keys() == {hub.channel}
    await send(hub, "room.1", 7)
    await asyncio.sleep(0.05)
    assert (leaving.got, joining.got) == ([], [7])
    hub.reader.cancel()


async def test_a_failing_member_does_not_stop_the_others():
    hub = Hub(LocalChannelLayer())
    broken, fine = Member(fail=True), Member()
    await hub.join("room.1", broken)
    await hub.join("room.1", fine)
    await send(hub, "room.1", 1)
    await settle()
    assert fine.got == [1]
    hub.reader.cancel()


async def test_the_connections_that_sent_a_bundles_messages_get_them_first_each_in_order():
    """A sender's copy of its own message is its acknowledgement: it goes before the others'."""
    hub = Hub(LocalChannelLayer())
    order = []

    class Logged(Member):
        def deliver(self, event, frame):
            super().deliver(event, frame)
            order.append((self.channel_name, event["n"]))

    members = [Logged(name=f"conn.{name}") for name in "abcd"]
    for member in members:
        await hub.join("room.1", member)
    sent = [(1, "conn.c"), (2, "conn.a"), (3, None)]  # (n, the connection that sent it)
    events = [{"type": "chat.frame", "n": n, "origin": origin} for n, origin in sent]
    hub.dispatch({"type": "chat.bundle", "group": "room.1", "events": events})
    assert {name for name, _ in order[:6]} == {"conn.a", "conn.c"}  # both senders, before anyone else
    assert [m.got for m in members] == [[1, 2, 3]] * 4  # and each member in order
    order.clear()
    hub.dispatch({"type": "chat.frame", "group": "room.1", "n": 4, "origin": "conn.d"})
    assert order[0] == ("conn.d", 4)
    hub.reader.cancel()


def new(group, message_id, prev_id):
    return {
        "type": "chat.frame",
        "group": group,
        "n": message_id,
        "message_id": message_id,
        "prev_id": prev_id,
        "room_id": 1,
    }


async def test_a_message_that_overtook_its_predecessor_waits_for_it():
    hub = Hub(LocalChannelLayer())
    member = Member()
    await hub.join("room.1", member)
    hub.dispatch(new("room.1", 1, 0))
    hub.dispatch(new("room.1", 4, 3))  # from another process, ahead of 2 and 3
    hub.dispatch(new("room.1", 3, 2))
    hub.dispatch({"type": "chat.frame", "group": "room.1", "n": "typing"})  # not a message: not held
    assert member.got == [1, "typing"]
    hub.dispatch(new("room.1", 2, 1))
    assert member.got == [1, "typing", 2, 3, 4] and not hub.held and not hub.timers
    hub.reader.cancel()


async def test_a_held_message_goes_on_alone_when_its_predecessor_never_comes(monkeypatch):
    from chat.realtime import hub as hub_module

    monkeypatch.setattr(hub_module, "REORDER_WAIT_S", 0.01)
    hub = Hub(LocalChannelLayer())
    member = Member()
    await hub.join("room.1", member)
    hub.dispatch(new("room.1", 1, 0))
    hub.dispatch(new("room.1", 5, 4))
    hub.dispatch(new("room.1", 3, 2))
    await asyncio.sleep(0.05)  # 2 and 4 were lost: the connections read them from the database
    assert member.got == [1, 3, 5]
    hub.dispatch(new("room.1", 6, 5))
    assert member.got == [1, 3, 5, 6]
    hub.reader.cancel()


class Database:
    """The room's messages as the hub's `fill` reads them; `opened` holds each read until set."""

    def __init__(self):
        self.reads, self.opened = [], asyncio.Event()
        self.opened.set()

    async def fill(self, room_id, after, until):
        self.reads.append((room_id, after, until))
        await self.opened.wait()
        return [{**new("ignored", n, n - 1), "n": f"db{n}"} for n in range(after + 1, until + 1)]


async def test_messages_that_never_came_are_read_once_for_every_member(monkeypatch):
    from chat.realtime import hub as hub_module

    monkeypatch.setattr(hub_module, "REORDER_WAIT_S", 0.01)
    database = Database()
    hub = Hub(LocalChannelLayer(), fill=database.fill)
    members = [Member() for _ in range(3)]
    for member in members:
        await hub.join("room.1", member)
    hub.dispatch(new("room.1", 1, 0))
    hub.dispatch(new("room.1", 4, 3))  # 2 and 3 were lost on the way
    await asyncio.sleep(0.05)
    # One read for everyone; 4 goes as it came, since it may name its sender's connection.
    assert database.reads == [(1, 1, 4)]
    assert [m.got for m in members] == [[1, "db2", "db3", 4]] * 3
    hub.dispatch(new("room.1", 3, 2))  # late: the members drop what they have
    hub.dispatch(new("room.1", 5, 4))
    assert members[0].got == [1, "db2", "db3", 4, 3, 5] and not hub.held and not hub.filling
    hub.reader.cancel()


async def test_the_first_event_waits_for_its_predecessor_after_what_members_read(monkeypatch):
    """Before the hub has handed out any message of a room, what its members read on joining
    is where the order starts."""
    from chat.realtime import hub as hub_module

    monkeypatch.setattr(hub_module, "REORDER_WAIT_S", 0.01)
    database = Database()
    hub = Hub(LocalChannelLayer(), fill=database.fill)
    member = Member()
    await hub.join("room.1", member)
    hub.known("room.1", 5)
    hub.known("room.1", 3)  # a later reader cannot move it back
    hub.dispatch(new("room.1", 7, 6))  # 6 was lost
    assert member.got == []
    await asyncio.sleep(0.05)
    assert database.reads == [(1, 5, 7)] and member.got == ["db6", 7]
    hub.reader.cancel()


async def test_events_arriving_during_the_read_wait_behind_it(monkeypatch):
    from chat.realtime import hub as hub_module

    monkeypatch.setattr(hub_module, "REORDER_WAIT_S", 0.01)
    database = Database()
    database.opened.clear()
    hub = Hub(LocalChannelLayer(), fill=database.fill)
    member = Member()
    await hub.join("room.1", member)
    hub.dispatch(new("room.1", 1, 0))
    hub.dispatch(new("room.1", 3, 2))
    await asyncio.sleep(0.05)  # reading 2 and 3
    hub.dispatch(new("room.1", 2, 1))  # came after all, during the read
    hub.dispatch(new("room.1", 4, 3))
    hub.dispatch({"type": "chat.frame", "group": "room.1", "n": "typing"})  # not a message: not held
    assert member.got == [1, "typing"]
    database.opened.set()
    await settle()
    assert member.got == [1, "typing", 2, 3, 4] and not hub.held and not hub.timers  # each as it came
    hub.reader.cancel()


async def test_this_processs_own_events_reach_its_connections_at_once_and_once():
    from chat import events
    from chat.realtime.hub import hub as running

    local = running()
    member = Member()
    await local.join("room.9", member)
    await events.send_async("room.9", {"type": "chat.frame", "n": 1})
    assert member.got == [1]  # before the layer delivered anything
    await asyncio.sleep(0.2)  # the copy that comes back through the layer is skipped
    assert member.got == [1]
    await local.leave(["room.9"], member)


@pytest.mark.django_db(transaction=True)  # outside a transaction: each publish goes at once
async def test_a_batch_of_writes_reaches_the_layer_as_one_bundle_per_run_of_a_group(monkeypatch):
    """The events of a batch go to the layer once per run of one group, in order; each process's
    hub hands them to its members one by one, as if sent alone."""
    from chat import events

    layer = LocalChannelLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    sent = []
    real_send = layer.group_send
    monkeypatch.setattr(layer, "group_send", lambda group, event: sent.append(group) or real_send(group, event))
    other = Hub(layer)  # another process: gets everything through the layer
    room1, room2 = Member(), Member()
    await other.join("room.1", room1)
    await other.join("room.2", room2)

    def batch():  # what a batch's write publishes on commit
        for group, n in [("room.1", 1), ("room.1", 2), ("room.2", 3), ("room.1", 4)]:
            events.publish(group, {"type": "chat.frame", "n": n})

    await events.run_sync(batch)()
    await settle()
    assert sent == ["room.1", "room.2", "room.1"]
    assert (room1.got, room2.got) == ([1, 2, 4], [3])
    other.reader.cancel()
