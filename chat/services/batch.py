"""`message_send_batch`: the checks of `message_send` made for a whole batch at once, and its
write (one round trip on PostgreSQL), with each refused send failing alone."""

import contextlib
import dataclasses
import functools
import logging
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils.translation import gettext_lazy as _

from .. import metrics, sql
from ..errors import INFRASTRUCTURE, Forbidden, Invalid
from ..limits import check_send_rates
from ..models import MAX_ID, Membership, Message, Room
from ..selectors import member_rooms_for_users
from . import _common, attachments, content
from ._common import clean_body, require_writable
from ._inserts import insert_messages, insert_rooms_messages
from .rooms import direct_room

User = get_user_model()
logger = logging.getLogger(__name__)


def _original(author, client_id: str) -> Message | None:
    return _originals([(author, client_id)]).get((author.pk, client_id))


def _originals(pairs: list[tuple["User", str]]) -> dict[tuple[int, str], Message]:
    """The messages already sent with each (author, client_id), by (author id, client_id)."""
    wanted = {(author.pk, client_id) for author, client_id in pairs if client_id}
    return _originals_from(sql.fetch_all([sql.originals(wanted)])[0], wanted) if wanted else {}


def _originals_from(rows: list[tuple], wanted: set[tuple[int, str]]) -> dict[tuple[int, str], Message]:
    """The whole messages of `sql.originals`' rows that match `wanted` (by hand: almost every
    send has a new client_id, and only matches are loaded)."""
    found = [pk for pk, author_id, client_id in rows if (author_id, client_id) in wanted]
    if not found:
        return {}
    return {
        (m.author_id, m.client_id): m for m in Message.objects.select_related("room", "author").filter(pk__in=found)
    }


def message_send_batch(requests: list[dict]) -> list[tuple[Message, bool] | Exception]:
    """`message_send` for several messages at once (keyword arguments of each in `requests`).

    Each is checked as by `message_send`, but each check is made for the whole batch at
    once: one query for the reused client_ids, one for the rooms and memberships (one
    round trip for both on PostgreSQL), one round trip for the rate counters. Then its rooms
    are locked, its new messages inserted in request order, and the whole batch is committed
    once: three statements and a commit for any number of messages and rooms (one round trip
    in all on PostgreSQL), where each message alone would pay them all.
    Returns, in request order, (message, created) or the exception that refused that message.
    """
    results: list = [None] * len(requests)
    by_room: dict[int, tuple[Room, list[_Send]]] = {}
    for send in _check_sends(requests, results):
        by_room.setdefault(send.room.pk, (send.room, []))[1].append(send)
    if not by_room:  # every send was refused, or returned its original
        return results
    # Rooms are locked in id order, so two processes' batches never deadlock.
    rooms = sorted(by_room.values(), key=lambda room_sends: room_sends[0].pk)
    try:
        try:
            _write_rooms(rooms, results)
        except INFRASTRUCTURE:
            raise
        except Exception:
            # One send rolled the whole batch back: a client_id used twice (in this batch, or by
            # a request racing it), or anything else the database refused. Written again, each
            # room in a savepoint and, if that fails, each of its sends in one of its own: each
            # duplicate gets its original, a send the database refuses fails alone, and the
            # others are written.
            with transaction.atomic():
                for room, sends in rooms:
                    _write_room(room, sends, results)
    except Exception as exc:  # the database failed, or the commit did: nothing of the batch was written
        for _room, sends in rooms:
            for send in sends:
                results[send.index] = exc
    metrics.MESSAGES_ACCEPTED.inc(sum(1 for result in results if isinstance(result, tuple) and result[1]))
    return results


def _write_rooms(rooms: list[tuple[Room, list["_Send"]]], results: list) -> None:
    """The common case: every room's new messages in one transaction (one commit, one fsync on
    SQLite), without the two round trips per room a savepoint costs. On PostgreSQL outside a
    transaction the whole write is one query string, a transaction of its own: no BEGIN and
    COMMIT round trips."""
    # False in a transaction, and when mentions need rows of their own written with the messages.
    alone = (
        connection.vendor == "postgresql"
        and connection.get_autocommit()
        and not any(send.rendered.get("mentions") or send.attachments for _room, sends in rooms for send in sends)
    )
    one_transaction = contextlib.nullcontext() if alone else transaction.atomic()
    with one_transaction:
        written = insert_rooms_messages(
            [(room, [(send.draft(), send.origin) for send in sends]) for room, sends in rooms]
        )
        _attach([send for _room, sends in rooms for send in sends], [m for ms in written for m in ms])
    for (_room, sends), messages in zip(rooms, written):
        for send, message in zip(sends, messages):
            results[send.index] = (message, True)


def _write_room(room: Room, sends: list["_Send"], results: list) -> None:
    try:
        with transaction.atomic():
            messages = insert_messages(room, [(send.draft(), send.origin) for send in sends])
            _attach(sends, messages)
    except INFRASTRUCTURE as exc:
        for send in sends:
            results[send.index] = exc
        return
    except Exception:  # one of them: each alone finds which
        for send in sends:
            results[send.index] = _insert_or_original(send)
        return
    for send, message in zip(sends, messages):
        results[send.index] = (message, True)


def _attach(sends: list["_Send"], messages: list[Message]) -> None:
    """Only for the sends that carry attachments: the others cost nothing here."""
    pairs = [(send.attachments, message) for send, message in zip(sends, messages) if send.attachments]
    if pairs:
        attachments.attach(pairs)


@dataclass
class _Send:
    """One request of `message_send_batch` on its way through the checks."""

    index: int
    user: "User"
    body: object
    slug: str | None = None
    to: str | None = None
    client_id: str = ""
    kind: str = Message.Kind.USER
    reply_to: int | None = None
    origin: str | None = None
    attachments: list[int] | None = None  # upload ids
    room: Room | None = None  # once access is checked
    thread: int | None = None  # once `reply_to` is checked
    rendered: dict = dataclasses.field(default_factory=dict)  # `content.FIELDS`, once rendered
    attachment_data: list = dataclasses.field(default_factory=list)  # once `attachments` are checked

    def draft(self) -> Message:
        """A new, unsaved message of this send."""
        return Message(
            room=self.room,
            author=self.user,
            body=self.body,
            kind=self.kind,
            client_id=self.client_id,
            reply_to_id=self.reply_to,
            thread_id=self.thread,
            attachments=self.attachment_data,
            **self.rendered,
        )


def _check_sends(requests: list[dict], results: list) -> list[_Send]:
    """The sends that pass every check of `message_send`, in request order, with their room.

    The checks run in `message_send`'s order, each over the sends that passed the one
    before (so a refused send never counts toward the rate), and each over all of them at
    once. Refusals, and the originals of reused client_ids, go into `results`.
    """
    sends = []
    for index, request in enumerate(requests):
        try:
            sends.append(_Send(index, **request))
        except TypeError as exc:  # a misnamed keyword
            results[index] = exc
    read = {}  # what `_find_originals` reads for `_check_rooms`
    for check in (
        _each(_check_options),
        functools.partial(_find_originals, read),
        _each(_check_body_and_target),
        functools.partial(_check_rooms, read),
        _check_replies,
        _check_attachments,
        _check_rates,
        _render,
    ):
        try:
            outcomes = check(sends)
        except INFRASTRUCTURE as exc:  # the database or Redis failed: every send still being checked
            outcomes = [exc] * len(sends)
        except Exception:  # one send broke the check for all (a check is missing): each alone finds which
            outcomes = [_alone(check, send) for send in sends]
        sends = _settle(sends, results, outcomes)
    return sends


def _render(sends: list[_Send]) -> list[None]:
    """Not a check: each send's html and mentions (`rendered`), all at once, once its room is known."""
    drafts = [send.draft() for send in sends]
    content.render(drafts)
    for send, draft in zip(sends, drafts):
        send.rendered = {name: getattr(draft, name) for name in content.FIELDS}
    return [None] * len(sends)


def _alone(check, send: "_Send") -> Exception | None:
    """The outcome of a batch check for `send` by itself."""
    try:
        return check([send])[0]
    except Exception as exc:
        return _refused_by_database(exc)


def _settle(sends: list[_Send], results: list, outcomes: list) -> list[_Send]:
    """The sends whose outcome is None, still to check; the others' outcomes go into `results`."""
    pending = []
    for send, outcome in zip(sends, outcomes):
        if outcome is None:
            pending.append(send)
        else:
            results[send.index] = outcome
    return pending


def _refusal(check, *args) -> Exception | None:
    try:
        check(*args)
    except Exception as exc:
        return exc
    return None


def _each(check):
    """A batch check that calls `check(send)` for each send; raising refuses that send."""
    return lambda sends: [_refusal(check, send) for send in sends]


def _check_options(send: _Send) -> None:
    if not isinstance(send.client_id, str) or len(send.client_id) > 64:
        raise Invalid(_("client_id: a string of at most 64 characters."))
    # Before anything reads them: a batch's lookups carry every send's values.
    for field, text in (("client_id", send.client_id), ("room", send.slug), ("to", send.to)):
        if isinstance(text, str):
            _common.storable(field, text)
    if send.kind not in (Message.Kind.USER, Message.Kind.EMOTE):
        raise Invalid(_("kind: use 'user' or 'emote'."))
    if send.attachments is not None:
        send.attachments = attachments.clean_ids(send.attachments)
    if send.reply_to is not None and (
        not isinstance(send.reply_to, int) or isinstance(send.reply_to, bool) or not 0 < send.reply_to <= MAX_ID
    ):
        raise Invalid(_("reply_to: a message id."))


def _find_originals(read: dict, sends: list[_Send]) -> list[tuple[Message, bool] | None]:
    """A send whose client_id its author already used gets the original, not a new message.

    The same round trip reads the senders' memberships in the rooms they name, for
    `_check_rooms` (`read`): on PostgreSQL one round trip a batch fewer. A send to a user
    (`to`) names its room only once `_check_body_and_target` has found it.
    """
    wanted = {(send.user.pk, send.client_id) for send in sends if send.client_id}
    named = [(send.user, send.slug) for send in sends if send.to is None and isinstance(send.slug, str) and send.slug]
    statements = ([sql.originals(wanted)] if wanted else []) + ([sql.memberships(named)] if named else [])
    rows = sql.fetch_all(statements)
    if named:
        read["memberships"] = ({(user.pk, slug) for user, slug in named}, sql.memberships_from_rows(rows.pop()))
    originals = _originals_from(rows[0], wanted) if wanted else {}
    found = [(send, original) for send in sends if (original := originals.get((send.user.pk, send.client_id)))]
    answers = dict(zip((send.index for send, _ in found), _answer_resends(read, found)))
    return [answers.get(send.index) for send in sends]


def _answer_resends(read: dict, found: list[tuple[_Send, Message]]) -> list[tuple[Message, bool] | Exception]:
    """Each resend's original, (original, False), if its author may still write in the original's
    room (whatever room the resend names), else the refusal a send there would get; removal is final.

    A user no longer a member (left, kicked, banned) or whose room is archived gets `forbidden`:
    the original, and the subscription its acknowledgement brings, would reopen the room.
    A member who may read but not write (muted, locked room) gets `muted` or `room_locked`, as a
    new send would, and the duplicate acknowledgement once they may write again.
    """
    pairs = [(send.user, original.room.slug) for send, original in found]
    answers = []
    for (send, original), access in zip(found, _member_rooms(read, pairs)):
        if isinstance(access, Exception):
            answers.append(
                Forbidden(
                    _(
                        "client_id: '%(client_id)s' was used in a room you may no longer write to; "
                        "send with a new client_id."
                    ),
                    client_id=send.client_id,
                )
            )
        else:
            answers.append(_refusal(require_writable, send.user, *access) or (original, False))
    return answers


def _check_body_and_target(send: _Send) -> None:
    # With files, the text is optional (PROTOCOL.md, "message.send").
    send.body = (
        "" if send.attachments and isinstance(send.body, str) and not send.body.strip() else clean_body(send.body)
    )
    if send.to is not None:  # rare enough to look up (or create) one at a time
        send.slug = direct_room(user=send.user, username=send.to).slug
    if not isinstance(send.slug, str) or not send.slug:
        raise Invalid(_("room: give a room slug, or `to` with a username."))


def _check_rooms(read: dict, sends: list[_Send]) -> list[Exception | None]:
    """Each sender must be a member of the room and may write there; sets `send.room`."""
    refusals = []
    for send, access in zip(sends, _member_rooms(read, [(send.user, send.slug) for send in sends])):
        if isinstance(access, Exception):
            refusals.append(access)
        else:
            send.room, membership = access
            refusals.append(_refusal(require_writable, send.user, send.room, membership))
    return refusals


def _member_rooms(read: dict, pairs: list[tuple["User", str]]) -> list[tuple[Room, Membership] | Exception]:
    """`member_rooms_for_users`, from the memberships `_find_originals` read when it read them all."""
    named, memberships = read.get("memberships", ((), None))
    if not all((user.pk, slug) in named for user, slug in pairs):
        memberships = None  # read them now
    return member_rooms_for_users(pairs, memberships)


def _check_replies(sends: list[_Send]) -> list[Exception | None]:
    """A `reply_to` names a message of the same room that is not deleted (one query for all);
    the reply joins that message's thread (`send.thread`: the first message of the chain)."""
    wanted = {send.reply_to for send in sends if send.reply_to is not None}
    if not wanted:
        return [None] * len(sends)
    targets = {
        pk: (room_id, deleted, thread_id)
        for pk, room_id, deleted, thread_id in Message.objects.filter(pk__in=wanted).values_list(
            "pk", "room_id", "deleted", "thread_id"
        )
    }
    refusals = []
    for send in sends:
        if send.reply_to is None:
            refusals.append(None)
            continue
        room_id, deleted, thread_id = targets.get(send.reply_to, (None, True, None))
        if room_id != send.room.pk or deleted:
            refusals.append(Invalid(_("reply_to: no message %(id)s to answer in this room."), id=send.reply_to))
        else:
            send.thread = thread_id or send.reply_to
            refusals.append(None)
    return refusals


def _check_attachments(sends: list[_Send]) -> list[Exception | None]:
    if not any(send.attachments for send in sends):
        return [None] * len(sends)
    return attachments.check(sends)


def _check_rates(sends: list[_Send]) -> list[Exception | None]:
    return check_send_rates([send.user.pk for send in sends])


def _insert_or_original(send: _Send) -> tuple[Message, bool] | Exception:
    message = send.draft()
    try:
        with transaction.atomic():
            insert_messages(send.room, [(message, send.origin)])
            _attach([send], [message])
    except IntegrityError as exc:
        original = _original(send.user, send.client_id)
        return _answer_resends({}, [(send, original)])[0] if original is not None else _refused_by_database(exc)
    except Exception as exc:
        return _refused_by_database(exc)
    return message, True


def _refused_by_database(exc: Exception) -> Exception:
    """The refusal of one send the database would not store although every check passed it:
    `invalid` for the data it could not take (logged in one line; a check is missing), the
    error itself for anything else."""
    if isinstance(exc, INFRASTRUCTURE) or not isinstance(exc, DatabaseError | ValueError | OverflowError):
        return exc
    logger.warning("the database refused a message that passed the checks: %s: %.200s", type(exc).__name__, exc)
    return Invalid(_("The database could not store this message: check its text and fields, then send it again."))
