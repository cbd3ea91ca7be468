"""A connection's delivery (chat/realtime/delivery.py): the decisions of its RoomStream carried out
on a transport, with a turn and an inbox, driven event by event without a socket or a database."""

import asyncio

from chat import metrics
from chat.realtime.consumer import ChatConsumer
from chat.realtime.stream import RoomStream
from chat.realtime.transport import Frame, Transport


class DirectTransport(Transport):
    """A transport that writes at once, as daphne's does, recording what `deliver` writes."""

    direct = True

    def __init__(self):
        self.written = []

    def write_shared(self, frame):
        self.written.append(frame.text)
        return True

    def write_text(self, text):
        self.written.append(text)
        return True


def consumer_in_room(mark: int) -> ChatConsumer:
    consumer = ChatConsumer()
    consumer.transport, consumer.turn, consumer.inbox, consumer.queued = DirectTransport(), asyncio.Lock(), None, 0
    consumer.draining = asyncio.get_running_loop().create_future()  # as if busy: the inbox stays as it is
    consumer.channel_name, consumer.ack_timers = "conn.me", {}
    consumer.stream = RoomStream(user_id=1, origin="conn.me")
    consumer.stream.subscribe(5, "five")
    consumer.stream.advance(5, mark)
    return consumer


def message(message_id, prev_id, **extra):
    event = {
        "type": "chat.frame",
        "text": f"m{message_id}",
        "room_id": 5,
        "message_id": message_id,
        "prev_id": prev_id,
        **extra,
    }
    return event, Frame(event["text"])


async def test_an_in_order_message_is_written_at_once_and_moves_the_mark():
    consumer = consumer_in_room(mark=10)
    consumer.deliver(*message(11, 10))
    consumer.deliver(*message(11, 10))  # again: sent already
    consumer.deliver(*message(12, 11, skip_user=1))  # not for this user (typing is not echoed)
    assert consumer.transport.written == ["m11"] and consumer.stream.marks[5] == 11 and consumer.queued == 0


async def test_a_connections_own_message_in_order_is_answered_at_once_by_its_acknowledgement():
    consumer = consumer_in_room(mark=10)
    timer = asyncio.get_running_loop().call_later(60, lambda: None)
    consumer.stream.register(11, 5, "ack11", seq=None)
    consumer.ack_timers[11] = timer
    consumer.deliver(*message(11, 10, origin="conn.me"))
    assert consumer.transport.written == ["ack11"] and consumer.stream.marks[5] == 11 and consumer.queued == 0
    assert not consumer.stream.acks and timer.cancelled()
    consumer.stream.register(13, 5, "ack13", seq=None)
    consumer.deliver(*message(13, 12, origin="conn.me"))  # 12 has not come: it is read first, in turn
    assert consumer.transport.written == ["ack11"] and consumer.queued == 1 and 13 in consumer.stream.acks


async def test_after_an_event_that_must_wait_every_later_one_waits_behind_it():
    consumer = consumer_in_room(mark=10)
    consumer.deliver(*message(13, 12))  # 11 and 12 have not come: the gap is read first, in turn
    consumer.deliver(*message(14, 13))  # in order after 13, but 13 is not sent yet
    assert consumer.transport.written == [] and consumer.queued == 2
    assert [event["message_id"] for event in consumer.inbox] == [13, 14]


async def test_while_a_handler_runs_events_wait_for_their_turn():
    consumer = consumer_in_room(mark=10)
    async with consumer.turn:
        consumer.deliver(*message(11, 10))
    assert consumer.transport.written == [] and consumer.queued == 1


async def test_an_acknowledgement_and_a_full_inbox(monkeypatch):
    from chat.realtime import connection

    consumer = consumer_in_room(mark=10)
    consumer.deliver(*message(12, 11, origin="conn.me"))  # its own message after a missing one: its ack waits in turn
    assert consumer.transport.written == [] and consumer.queued == 1
    monkeypatch.setattr(connection, "INBOX_CAPACITY", 1)
    before = metrics.LAYER_DROPS._value.get()
    consumer.deliver(*message(13, 12))
    assert metrics.LAYER_DROPS._value.get() == before + 1 and len(consumer.inbox) == 1
