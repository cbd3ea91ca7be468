"""RoomStream: one connection's order of delivery, per room, as a state machine with no I/O.

The consumer tells it what happened (a room subscribed or replayed, an event arrived, a message
stored, a frame's turn to be answered) and it says what to do (drop, send, read what is missing
first, send an acknowledgement, wait); the consumer carries that out through its transport.

Delivery without gap or duplicate, in id order, per room:
- A connection subscribes to a room's group *before* it reads the room's messages. A message
  committed before that read is in the replay; one committed after it is published after the
  subscription and arrives live.
- `marks[room]` is the mark: every message of the room up to it has been sent to the client (or
  predates the connection). A live `message.new` at or below the mark is dropped. One whose
  predecessor (`prev_id`) is above the mark overtook another on its way from a different
  process: the missing ones are sent from the database first (CATCH_UP). So the highest id a
  client holds, once its join's replay is in, is a safe `since`.
- The sender's acknowledgement is a `message.new` too, so it waits for its turn. It is
  registered (`register`) as soon as the message is stored, before its event is published, and
  whichever comes first sends it in its place: the answer to the frame when nothing before it
  is missing, the connection's own event coming back from the layer behind the others, or a
  read of the messages before another one. No database read in the usual case.
- Client frames are answered in order, but a `message.send` goes to the writer as soon as it is
  read: a client's sends in a row are stored in one batch. An ack whose own event comes back
  before the frames ahead of it are answered waits for its frame's turn (`ack_due`), and holds
  the inbox meanwhile (`hold_for`), so both orders hold.
- A room left (or removed from) is forgotten at once (`unsubscribe`): its events still on their
  way are dropped.
- `floors[room]` is the mark when the room was subscribed: a later `join since` on the same
  connection replays only up to the floor, since everything above came live.

Changes (`seq`, the room's change sequence, taken in commit order) follow the same rule:
- `changes[room]` is the change mark: every change with a `seq` up to it to a message up to the
  mark has been sent (or superseded by a later one that was). A `message.updated` at or below
  it is dropped. One that is not the next (`seq` above the change mark + 1), or that changes a
  message above the mark (its `message.new` is still on its way), is read from the database
  instead, with every change it overtook (CATCH_UP). A `message.new` whose `seq` is not the
  next waits for the changes before it in the same way. So the highest `seq` a client holds is,
  with the highest id, a safe `changes_since`.
- `change_floors[room]` is the change mark when the room was subscribed, as `floors` is.
"""

import bisect

from django.utils.translation import gettext_lazy as _

from chat.errors import Forbidden

# What an event, or a waiting acknowledgement, needs.
DROP = "drop"  # nothing: not for this client, or sent already
SEND = "send"  # its frame, now
CATCH_UP = "catch_up"  # the messages before it that have not come, read from the database, first
ACK = "ack"  # the connection's waiting acknowledgement (`take_ack`), now
WAIT = "wait"  # its turn: behind the connection's other work, or its frame's


def _listed(sorted_ids: list[int], user_id: int | None) -> bool:
    """Whether `user_id` is in the ascending list: each of a room's connections looks itself up in
    the same event, so a bisection rather than a scan of the whole list."""
    at = bisect.bisect_left(sorted_ids, user_id) if user_id is not None else len(sorted_ids)
    return at < len(sorted_ids) and sorted_ids[at] == user_id


class RoomStream:
    def __init__(self, *, user_id: int | None, origin: str):
        self.user_id = user_id
        self.origin = origin  # the connection's name: events it caused carry it
        self.marks: dict[int, int] = {}  # room id -> mark (see the module docstring)
        self.floors: dict[int, int] = {}  # room id -> mark when subscribed
        self.changes: dict[int, int] = {}  # room id -> change mark (see the module docstring)
        self.change_floors: dict[int, int] = {}  # room id -> change mark when subscribed
        self.slugs: dict[int, str] = {}
        self.acks: dict[int, tuple[int, str]] = {}  # message id -> (room id, acknowledgement frame)
        self.registered: set[int] = set()  # ids whose ack went to `acks` and whose frame is not answered yet
        self.ack_seqs: dict[int, int] = {}  # message id -> number of the frame it answers
        self.ack_changes: dict[int, int] = {}  # message id -> its change sequence value
        self.reached = -1  # number of the frame being answered: every frame before it is answered
        self.held: int | None = None  # number of the frame whose reply the inbox waits for

    # Subscriptions

    def subscribe(self, room_id: int, slug: str) -> bool:
        """Follow the room (from mark 0 until its replay or summary sets it); True if it was not followed."""
        new = room_id not in self.marks
        if new:
            self.marks[room_id] = 0
        self.slugs[room_id] = slug
        return new

    def unsubscribe(self, room_id: int) -> None:
        self.marks.pop(room_id, None)
        self.floors.pop(room_id, None)
        self.changes.pop(room_id, None)
        self.change_floors.pop(room_id, None)
        self.slugs.pop(room_id, None)

    def subscribed(self, room_id: int) -> bool:
        return room_id in self.marks

    def room_id(self, slug: str) -> int:
        for room_id, room_slug in self.slugs.items():
            if room_slug == slug:
                return room_id
        raise Forbidden(_("You have not joined '%(slug)s': join it first."), slug=slug)

    def opened(self, room_id: int, last_id: int | None, seq: int = 0) -> None:
        """At connect, the room's last message and change predate the connection: its marks and floors."""
        self.marks[room_id] = self.floors[room_id] = last_id or 0
        self.changes[room_id] = self.change_floors[room_id] = seq

    def replayed(self, room_id: int, last_id: int | None, seq: int = 0) -> int:
        """A join's replay sent everything up to `last_id` and change `seq`: the new marks (and floors)."""
        self.marks[room_id] = self.floors[room_id] = max(self.marks.get(room_id, 0), last_id or 0)
        self.changes[room_id] = self.change_floors[room_id] = max(self.changes.get(room_id, 0), seq)
        return self.marks[room_id]

    def changed(self, room_id: int, seq: int | None) -> None:
        """The change `seq` was sent: the change mark moves on if it was the next one."""
        if seq is not None and room_id in self.changes and seq == self.changes[room_id] + 1:
            self.changes[room_id] = seq

    def reached_change(self, room_id: int, seq: int) -> None:
        """Every change of the room up to `seq` was sent (a read of them all)."""
        if room_id in self.changes:
            self.changes[room_id] = max(self.changes[room_id], seq)

    def changes_missing(self, room_id: int, seq: int | None) -> bool:
        """Whether changes before `seq` have not been sent (a gap in the room's change sequence)."""
        return seq is not None and room_id in self.changes and seq > self.changes[room_id] + 1

    # Events

    def classify(self, event: dict) -> str:
        """What a `chat.frame` needs: DROP (not for this client, or sent already), CATCH_UP
        (messages before it have not come yet: read them first) or SEND. A frame this
        connection caused is its acknowledgement (`origin`), never a plain SEND."""
        if event.get("skip_user") == self.user_id:
            return DROP
        if "notify_users" in event and not _listed(event["notify_users"], self.user_id):
            return DROP  # a `notification` for others
        message_id = event.get("message_id")
        if event.get("room_id") is not None and event["room_id"] not in self.marks:
            return DROP  # a room this connection left, or was removed from, while the event was on its way
        if message_id is None:
            changed = event.get("changed_id")
            if changed is not None:  # its origin gets it as the reply to its frame
                if event.get("origin") == self.origin:
                    return DROP
                return self._classify_change(event["room_id"], changed, event["seq"])
            return DROP if event.get("origin") == self.origin else SEND
        mark = self.marks.get(event["room_id"])
        if mark is None or message_id <= mark:
            return DROP
        if (event.get("prev_id") or 0) > mark or self.changes_missing(event["room_id"], event.get("seq")):
            return CATCH_UP
        return CATCH_UP if event.get("origin") == self.origin else SEND

    def _classify_change(self, room_id: int, changed_id: int, seq: int) -> str:
        if seq <= self.changes.get(room_id, 0):
            return DROP
        if changed_id > self.marks[room_id] or seq > self.changes[room_id] + 1:
            return CATCH_UP
        return SEND

    def take(self, event: dict) -> str:
        """What a `chat.frame` needs when it could be written at once: DROP, SEND (counted as sent),
        ACK (the connection's own message with nothing missing before it and its frame's reply
        due: counted as sent, its ack goes in its place) or WAIT (it needs more: in turn)."""
        action = self.classify(event)
        if action == SEND:
            if event.get("message_id") is not None:  # `mark`, inline: this runs for every delivery
                self.marks[event["room_id"]] = event["message_id"]
            if event.get("seq") is not None:
                self.changed(event["room_id"], event["seq"])
        elif action == CATCH_UP:
            if (
                event.get("message_id") is None
                or event.get("origin") != self.origin
                or (event.get("prev_id") or 0) > self.marks[event["room_id"]]
                or self.changes_missing(event["room_id"], event.get("seq"))
                or not self.ack_due(event["message_id"])
            ):
                return WAIT
            self.mark(event)
            return ACK
        return action

    def mark(self, event: dict) -> None:
        """`event` was sent (a message: everything of its room up to it; a change: every one up to it)."""
        if event.get("message_id") is not None:
            self.marks[event["room_id"]] = event["message_id"]
        if event.get("seq") is not None:
            self.changed(event["room_id"], event["seq"])

    def sent_already(self, room_id: int, message_id: int) -> bool:
        return message_id <= self.marks[room_id]

    def read_from(self, room_id: int, prev_id: int) -> int | None:
        """Before a message whose predecessor is `prev_id`: the mark after which the room's messages
        must be read first, or None when none is missing."""
        mark = self.marks[room_id]
        return mark if prev_id > mark else None

    def advance(self, room_id: int, message_id: int) -> None:
        """Everything of the room up to `message_id` was sent (read, then the message itself)."""
        self.marks[room_id] = message_id

    # Acknowledgements

    def register(self, message_id: int, room_id: int, ack: str, seq: int | None, change: int | None = None) -> None:
        """A new message of this connection is stored, in a followed room: its acknowledgement waits
        from now on. `seq` numbers the frame, whose reply never goes before those to the frames before it;
        `change` is the message's change sequence value."""
        self.acks[message_id] = (room_id, ack)
        self.registered.add(message_id)
        if seq is not None:
            self.ack_seqs[message_id] = seq
        if change is not None:
            self.ack_changes[message_id] = change

    def ack_due(self, message_id: int) -> bool:
        """Whether the waiting ack of `message_id` may go: every frame before its own is answered.
        A client that sends frames without waiting for the replies gets them in its order."""
        return self.ack_seqs.get(message_id, -1) <= self.reached

    def take_ack(self, message_id: int | None) -> str | None:
        """The waiting acknowledgement of `message_id`, now sent; None if there is none."""
        pending = self.acks.pop(message_id, None)
        if pending is None:
            return None
        self.ack_seqs.pop(message_id, None)
        self.changed(pending[0], self.ack_changes.pop(message_id, None))
        return pending[1]

    def ack_in_place(self, message_id: int) -> bool:
        """Whether a message read from the database is this connection's own, whose ack is due: the ack
        goes in its place."""
        return message_id in self.acks and self.ack_due(message_id)

    def reply_now(self, message_id: int, room_id: int, prev_id: int) -> bool:
        """The frame of a registered message is answered: True if its ack goes now (nothing before it
        is missing; counted as sent), False if it was sent already or follows others' messages still
        on their way here."""
        self.registered.discard(message_id)
        mark = self.marks.get(room_id)
        if self.changes_missing(room_id, self.ack_changes.get(message_id)):
            return False
        if message_id in self.acks and (mark is None or prev_id <= mark):
            if mark is not None:
                self.marks[room_id] = max(mark, message_id)
            return True
        return False

    def overdue(self, message_id: int) -> str:
        """The ack of `message_id` waited long for its event (lost with a Redis connection): DROP (it
        went meanwhile), WAIT (its frame's reply is not due: wait on), CATCH_UP (read the messages
        before it, then send it) or ACK."""
        if message_id not in self.acks:
            return DROP
        if not self.ack_due(message_id):
            return WAIT
        room_id = self.acks[message_id][0]
        if room_id in self.marks and (
            message_id > self.marks[room_id] or self.changes_missing(room_id, self.ack_changes.get(message_id))
        ):
            return CATCH_UP
        return ACK

    # Frames

    def answering(self, seq: int) -> None:
        """The frame numbered `seq` is being answered: every one before it was."""
        self.reached = seq

    def hold_for(self, event: dict) -> bool:
        """Whether the inbox must wait at `event`: the connection's own message, whose frame's reply
        is not due. Its ack, and every event after it, keep their order."""
        message_id = event.get("message_id")
        if event.get("origin") == self.origin and message_id in self.acks and not self.ack_due(message_id):
            self.held = self.ack_seqs[message_id]
            return True
        self.held = None
        return False
