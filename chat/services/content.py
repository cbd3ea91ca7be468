"""What a message's body says, worked out once when it is written or edited: its `html`, the
members it mentions, whether it mentions the room (`chat.markup`), and the `Mention` rows the
mentions inbox and the unread mention counts read."""

from django.db.models.functions import Lower

from .. import markup
from ..models import Membership, Mention, Message, active_membership_q

FIELDS = ("html", "mentions", "mentions_room")


def render(messages: list[Message]) -> None:
    """Set each message's `FIELDS` from its body and its room's members (one query for all)."""
    candidates = [markup.mention_candidates(message.body) for message in messages]
    members = _members({message.room_id for message in messages}, set().union(*candidates))
    for message in messages:
        rendered = markup.render(message.body, members.get(message.room_id, {}))
        message.html, message.mentions, message.mentions_room = rendered.html, rendered.mentions, rendered.mentions_room


def render_into(message: Message) -> None:
    render([message])


def _members(room_ids: set[int], names: set[str]) -> dict[int, dict[str, tuple[int, str]]]:
    """room id -> lowercased username -> (user id, username), for the active members named."""
    if not names:
        return {}
    rows = (
        Membership.objects.filter(active_membership_q(), room_id__in=room_ids, user__is_active=True)
        .annotate(name=Lower("user__username"))
        .filter(name__in=names)
        .values_list("room_id", "user_id", "user__username")
    )
    found: dict[int, dict[str, tuple[int, str]]] = {}
    for room_id, user_id, username in rows:
        found.setdefault(room_id, {})[username.lower()] = (user_id, username)
    return found


def write_mentions(messages: list[Message], *, replace: bool = False) -> None:
    """The `Mention` rows of the messages' `mentions` (after an edit, `replace` drops the old ones).
    Call in the transaction that writes the messages."""
    if replace:
        Mention.objects.filter(message__in=[message.pk for message in messages]).delete()
    Mention.objects.bulk_create(
        Mention(message_id=message.pk, user_id=mentioned["id"], room_id=message.room_id)
        for message in messages
        for mentioned in message.mentions
    )
