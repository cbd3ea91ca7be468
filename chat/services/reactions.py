"""Reactions: a user's emoji on a message. Adding one already there, or removing one that is
absent, changes nothing (no seq, no event); each real change takes the room's next seq and
rewrites the message's `reactions` summary from the Reaction rows, read under the room's lock
(for an add, the repeat check, the distinct-emoji limit and the summary come from one read)."""

import re

import emoji as emoji_data
from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _

from .. import events, sql
from ..errors import Invalid
from ..models import Message, Reaction
from ..selectors import message_and_membership
from ._common import budget, require_writable

SHORTCODE_RE = re.compile(r":[a-z0-9_+-]{1,32}:")
MAX_DISTINCT = 20  # distinct emoji on one message
MAX_USERS = 20  # usernames listed per emoji in the summary


class _Unchanged(Exception):
    """Rolls back the seq taken for a change another request made first."""


def clean_emoji(value) -> str:
    """One Unicode emoji (a single grapheme cluster, skin tones, flags and ZWJ sequences
    included) or a `:shortcode:`; anything else is `invalid`."""
    if isinstance(value, str) and (SHORTCODE_RE.fullmatch(value) or emoji_data.is_emoji(value)):
        return value
    raise Invalid(_("emoji: one Unicode emoji or a shortcode such as :smile: (lowercase letters, digits, _ + -)."))


def _reactable(user, message_id: int) -> Message:
    """The message, if the user may read its room and write there (muted and locked refuse),
    and it takes reactions (neither deleted nor a system notice)."""
    message, membership = message_and_membership(user, message_id)
    require_writable(user, message.room, membership)
    if message.deleted:
        raise Invalid(_("This message is deleted."))
    if message.kind == Message.Kind.SYSTEM:
        raise Invalid(_("System messages take no reactions."))
    return message


Rows = list[tuple[str, int, str]]  # a message's reactions, oldest first: (emoji, user id, username)


def _rows(message_id: int) -> Rows:
    return list(
        Reaction.objects.filter(message_id=message_id).order_by("pk").values_list("emoji", "user_id", "user__username")
    )


def summary(rows: Rows, before: list[dict] = ()) -> list[dict]:
    """`Message.reactions` from the message's `rows`: one entry per emoji in order of first use,
    its exact count, and the first MAX_USERS usernames in order of reacting. `before` is the
    summary being replaced: an emoji keeps its place while anyone's reaction with it remains,
    even when the first one went."""
    entries: dict[str, dict] = {}
    for emoji, _user_id, username in rows:
        entry = entries.setdefault(emoji, {"emoji": emoji, "count": 0, "users": []})
        entry["count"] += 1
        if len(entry["users"]) < MAX_USERS:
            entry["users"].append(username)
    place = {entry["emoji"]: index for index, entry in enumerate(before)}
    return sorted(
        entries.values(), key=lambda entry: place.get(entry["emoji"], len(place))
    )  # stable: new ones by first row


def reaction_add(*, user, message_id: int, emoji, origin: str | None = None, source: str = "rest") -> Message:
    emoji = clean_emoji(emoji)
    message = _reactable(user, message_id)
    if Reaction.objects.filter(message=message, user=user, emoji=emoji).exists():
        return message  # nothing to do costs no budget, as a delete of a deleted message
    budget("react", user, source)
    try:
        with transaction.atomic():
            seq = sql.next_seq(message.room_id)  # first: it locks the room, serialising reactions
            rows = _rows(message.pk)
            if (emoji, user.pk) in {(row_emoji, user_id) for row_emoji, user_id, _ in rows}:
                raise _Unchanged  # another request added it first
            used = {row_emoji for row_emoji, _, _ in rows}
            if emoji not in used and len(used) >= MAX_DISTINCT:
                raise Invalid(_("emoji: a message takes at most %(limit)s different emoji."), limit=MAX_DISTINCT)
            Reaction.objects.create(message=message, user=user, emoji=emoji)
            _save(message, seq, origin, [*rows, (emoji, user.pk, user.username)])
    except (_Unchanged, IntegrityError):
        message.refresh_from_db()
    return message


def reaction_remove(*, user, message_id: int, emoji, origin: str | None = None, source: str = "rest") -> Message:
    emoji = clean_emoji(emoji)
    message = _reactable(user, message_id)
    mine = Reaction.objects.filter(message=message, user=user, emoji=emoji)
    if not mine.exists():
        return message
    budget("react", user, source)
    try:
        with transaction.atomic():
            seq = sql.next_seq(message.room_id)
            if not mine.delete()[0]:
                raise _Unchanged
            _save(message, seq, origin, _rows(message.pk))
    except _Unchanged:
        message.refresh_from_db()
    return message


def _save(message: Message, seq: int, origin: str | None, rows: Rows) -> None:
    message.reactions, message.seq = summary(rows, message.reactions), seq
    message.save(update_fields=["reactions", "seq"])
    events.publish(events.room_group(message.room_id), events.change_event(message, origin=origin))
