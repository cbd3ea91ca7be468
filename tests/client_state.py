"""What a correct client keeps of one room, whatever carries its frames (the test communicator or a socket).

- Every `message.new` goes into `view`, de-duplicated by id; one id must always carry the same message.
- `mark` is an id up to which the client holds every message of the room: it resumes with
  `join since=mark`. As docs/protocol.md says, it is the highest id received after the
  `room.joined` of such a join on the current connection (acknowledgements included: the
  server sends a room's frames in id order, with no gap, from then on). Frames read between
  `hello` and that `room.joined` are kept but don't move it: the replay of older ones follows.
- Sends stay in `unacked` until acknowledged, and go again with the same `client_id` after
  each `room.joined` (so do sends made while offline).
- Changes (Version 2): a message arrives again, as `message.new` or `message.updated`, whenever
  it changes; the copy with the higher `seq` wins. `changes` is the highest `seq` received after
  such a `room.joined`, which the client resumes from with `join changes_since`. Errors answering
  its own edits, deletes and reactions are expected (another device may have deleted the message).

It also checks what the server promises each connection: one id is always the same message,
and (with `check_order`) the room's messages come in id order (starting over at each
`room.joined`, whose replay follows; the answer to a resend is the original message, so it
may be older). tests/reconnecting.py keeps one of these for each room of a socket client.
"""

import itertools


class ClientState:
    def __init__(self, name: str, user_id: int, room: str, *, check_order: bool = True):
        self.name, self.user_id, self.room = name, user_id, room
        self.check_order = check_order
        self.view: dict[int, dict] = {}  # message id -> message
        self.mark = 0
        self.changes = 0  # the highest seq received once synced: `join changes_since`
        self.synced = False  # the current connection's `join since` was answered
        self.join_ref: str | None = None
        self.last_id = 0  # the last message the connection sent, since it opened or since `room.joined`
        self.unacked: dict[str, str] = {}  # client_id -> body
        self.acks: dict[str, int] = {}  # client_id -> message id
        self._refs = itertools.count()

    def connection_lost(self) -> None:
        self.synced, self.join_ref, self.last_id = False, None, 0

    def join(self) -> dict:
        self.join_ref = f"{self.name}:j{next(self._refs)}"
        return {
            "type": "join",
            "room": self.room,
            "since": self.mark,
            "changes_since": self.changes,
            "ref": self.join_ref,
        }

    def change(self, frame: dict) -> dict:
        """An edit, delete or reaction frame of this client's; an error answering it is expected."""
        return {**frame, "ref": f"{self.name}:x{next(self._refs)}"}

    def send(self, client_id: str, body: str) -> dict:
        """The frame of a new send; it stays unacknowledged until the server echoes it."""
        self.unacked[client_id] = body
        return self.message_send(client_id, body)

    def message_send(self, client_id: str, body: str) -> dict:
        return {
            "type": "message.send",
            "room": self.room,
            "body": body,
            "client_id": client_id,
            "ref": f"{self.name}:s:{client_id}",
        }

    def handle(self, frame: dict) -> list[dict]:
        """Take in one server frame; returns the frames to send in response (resends)."""
        if frame["type"] == "error" and (frame.get("ref") or "").startswith(f"{self.name}:x"):
            return []
        assert frame["type"] != "error", f"{self.name} got {frame}"
        if frame["type"] == "room.joined":
            self.last_id = 0
        if frame["type"] == "room.joined" and frame.get("ref") == self.join_ref:
            self.synced = True
            return [self.message_send(client_id, body) for client_id, body in self.unacked.items()]
        if frame["type"] == "message.new":
            self._message(frame)
        if frame["type"] == "message.updated":
            self._keep(frame["message"])
        return []

    def _keep(self, message: dict) -> None:
        """Keep the newer copy of a message (by seq); one seq is always the same message."""
        seen = self.view.get(message["id"])
        if seen is None or message["seq"] > seen["seq"]:
            self.view[message["id"]] = message
        else:
            assert message["seq"] < seen["seq"] or seen == message, (
                f"{self.name}: message {message['id']} arrived twice at seq {message['seq']}, differently: {seen} {message}"
            )
        if self.synced:
            self.changes = max(self.changes, message["seq"])

    def _message(self, frame: dict) -> None:
        message = frame["message"]
        assert message["room"] == self.room, f"{self.name} got a message of another room: {frame}"
        self._keep(message)
        if self.check_order and not frame.get("duplicate"):
            assert message["id"] > self.last_id, f"{self.name}: message {message['id']} came after {self.last_id}"
            self.last_id = message["id"]
        ref = frame.get("ref") or ""
        if ref.startswith(f"{self.name}:s:"):
            client_id = ref.split(":s:", 1)[1]
            assert (message["client_id"], message["author"]["id"]) == (client_id, self.user_id), frame
            assert self.acks.setdefault(client_id, message["id"]) == message["id"], (
                f"{self.name}: client_id {client_id!r} acknowledged as two messages"
            )
            self.unacked.pop(client_id, None)
        if self.synced:
            self.mark = max(self.mark, message["id"])

    def ordered(self) -> list[dict]:
        return [self.view[i] for i in sorted(self.view)]
