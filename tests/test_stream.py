"""The order of delivery (chat/realtime/stream.py), event by event, without a socket or a database."""

import pytest

from chat.errors import Forbidden
from chat.realtime.stream import ACK, CATCH_UP, DROP, SEND, WAIT, RoomStream

ME, ROOM = "conn.me", 5


def stream(mark: int = 10) -> RoomStream:
    """A connection of user 1 following ROOM, everything up to `mark` sent."""
    s = RoomStream(user_id=1, origin=ME)
    s.subscribe(ROOM, "general")
    s.opened(ROOM, mark)
    return s


def new(message_id, prev_id, **extra) -> dict:
    return {
        "type": "chat.frame",
        "text": f"m{message_id}",
        "room_id": ROOM,
        "message_id": message_id,
        "prev_id": prev_id,
        **extra,
    }


def other(**extra) -> dict:
    """An event of the room that is no message (typing, member, presence)."""
    return {"type": "chat.frame", "text": "typing", "room_id": ROOM, "message_id": None, **extra}


def test_an_in_order_message_is_sent_and_moves_the_mark():
    s = stream()
    assert s.take(new(11, 10)) == SEND and s.marks[ROOM] == 11
    assert s.take(new(11, 10)) == DROP  # again: sent already
    assert s.classify(new(9, 8)) == DROP  # below the mark: in the replay already


def test_a_message_that_overtook_its_predecessor_needs_a_catch_up_first():
    s = stream()
    event = new(13, 12)
    assert s.classify(event) == CATCH_UP and s.take(event) == WAIT and s.marks[ROOM] == 10
    assert not s.sent_already(ROOM, 13) and s.read_from(ROOM, 12) == 10  # read after 10, before 13
    s.advance(ROOM, 13)
    assert s.sent_already(ROOM, 13) and s.take(new(14, 13)) == SEND


def test_nothing_to_read_when_the_predecessor_was_sent():
    s = stream()
    assert s.read_from(ROOM, 10) is None


def test_events_not_for_this_client_are_dropped():
    s = stream()
    assert s.classify(other(skip_user=1)) == DROP  # typing is not echoed to the typist
    assert s.classify(other(skip_user=2)) == SEND
    assert s.classify(other(origin=ME)) == DROP  # it caused it, and got it as its reply
    assert s.classify({**other(), "room_id": None}) == SEND  # the user's or everyone's group


def test_an_event_of_a_room_left_while_on_its_way_is_dropped():
    s = stream()
    s.unsubscribe(ROOM)
    assert s.classify(other()) == DROP and s.classify(new(11, 10)) == DROP
    assert not s.subscribed(ROOM) and ROOM not in s.floors and ROOM not in s.slugs


def test_a_room_is_known_by_its_slug_while_followed():
    s = stream()
    assert s.room_id("general") == ROOM
    with pytest.raises(Forbidden, match="join it first"):
        s.room_id("elsewhere")


def test_subscribing_again_keeps_the_mark_and_a_replay_raises_it_only():
    s = stream(mark=10)
    assert not s.subscribe(ROOM, "general") and s.marks[ROOM] == 10
    assert s.replayed(ROOM, 8) == 10 and s.replayed(ROOM, 12) == 12 and s.floors[ROOM] == 12
    assert s.subscribe(6, "other") and s.marks[6] == 0


def test_its_own_message_in_order_is_answered_by_its_waiting_ack():
    s = stream()
    s.register(11, ROOM, "ack11", seq=None)
    assert s.take(new(11, 10, origin=ME)) == ACK and s.marks[ROOM] == 11
    assert s.take_ack(11) == "ack11" and s.take_ack(11) is None  # once


def test_its_own_message_after_a_missing_one_waits_for_a_catch_up():
    s = stream()
    s.register(13, ROOM, "ack13", seq=None)
    assert s.take(new(13, 12, origin=ME)) == WAIT and 13 in s.acks


def test_its_own_message_with_nothing_waiting_is_a_catch_up_never_a_plain_send():
    s = stream()
    assert s.classify(new(11, 10, origin=ME)) == CATCH_UP


def test_an_ack_waits_for_the_replies_to_the_frames_before_its_own():
    s = stream()
    s.answering(0)  # frame 0 is being answered; the send was frame 2
    s.register(11, ROOM, "ack11", seq=2)
    assert not s.ack_due(11) and s.take(new(11, 10, origin=ME)) == WAIT
    assert s.hold_for(new(11, 10, origin=ME)) and s.held == 2  # the inbox waits at it
    assert not s.ack_in_place(11)
    s.answering(2)
    assert s.ack_due(11) and not s.hold_for(new(11, 10, origin=ME)) and s.held is None
    assert s.ack_in_place(11) and s.take(new(11, 10, origin=ME)) == ACK


def test_others_events_never_hold_the_inbox():
    s = stream()
    s.answering(0)
    s.register(11, ROOM, "ack11", seq=2)
    assert not s.hold_for(new(11, 10)) and not s.hold_for(new(12, 11, origin="conn.other"))


def test_the_answer_sends_the_ack_when_nothing_before_it_is_missing():
    s = stream()
    s.register(11, ROOM, "ack11", seq=0)
    assert s.reply_now(11, ROOM, prev_id=10) and s.marks[ROOM] == 11 and 11 not in s.registered


def test_the_answer_leaves_the_ack_behind_messages_still_on_their_way():
    s = stream()
    s.register(13, ROOM, "ack13", seq=0)
    assert not s.reply_now(13, ROOM, prev_id=12) and s.marks[ROOM] == 10 and 13 in s.acks


def test_the_answer_adds_nothing_once_the_event_sent_the_ack():
    s = stream()
    s.register(11, ROOM, "ack11", seq=None)
    assert s.take(new(11, 10, origin=ME)) == ACK and s.take_ack(11) == "ack11"
    assert not s.reply_now(11, ROOM, prev_id=10) and not s.registered


def test_an_overdue_ack():
    s = stream()
    assert s.overdue(11) == DROP  # it went meanwhile
    s.answering(0)
    s.register(11, ROOM, "ack11", seq=1)
    assert s.overdue(11) == WAIT  # its frame's reply is not due: it waits on
    s.answering(1)
    assert s.overdue(11) == CATCH_UP  # read what precedes it, then send it
    s.advance(ROOM, 11)
    assert s.overdue(11) == ACK
