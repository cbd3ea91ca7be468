"""Messages: send (one at a time; the batch pipeline is `batch`), edit, delete and restore, and
read markers."""

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import events, protocol, sql
from ..errors import Forbidden, Invalid
from ..models import Membership, Message
from ..selectors import last_message_id, member_room_for_user, message_and_membership, unread_counts
from . import content, notify
from ._common import audit, budget, clean_body, require_may_moderate, require_writable
from .batch import message_send_batch


def message_send(
    *,
    user,
    slug: str | None = None,
    to: str | None = None,
    body,
    client_id: str = "",
    kind: str = Message.Kind.USER,
    reply_to: int | None = None,
    attachments: list[int] | None = None,
    origin: str | None = None,
) -> tuple[Message, bool]:
    """Persist a message in room `slug` (or the direct room with user `to`), then publish it.

    Returns (message, created). A `client_id` the author already used creates nothing and
    returns the original, so a client may resend after a lost acknowledgement.
    `reply_to` answers a message of the same room (see `batch._check_replies`).
    `attachments` are upload ids, the sender's own unattached uploads in the room (`attachments.check`).
    `origin` names the connection that sent it, which acknowledges it itself.
    """
    request = dict(
        user=user,
        slug=slug,
        to=to,
        body=body,
        client_id=client_id,
        kind=kind,
        reply_to=reply_to,
        origin=origin,
        attachments=attachments,
    )
    result = message_send_batch([request])[0]
    if isinstance(result, Exception):
        raise result
    return result


ONLY_AUTHOR_OR_MODERATOR = {
    "edit": _("Only the author or a moderator can edit this message."),
    "delete": _("Only the author or a moderator can delete this message."),
}


def _require_author_or_moderator(user, message: Message, membership: Membership | None, what: str) -> None:
    """The author, or someone who may moderate the author in the message's room (`require_may_moderate`);
    `membership` is the user's in that room."""
    if message.author_id == user.pk:
        return
    if not user.is_staff and (membership is None or not membership.can_moderate or membership.is_banned()):
        raise Forbidden(ONLY_AUTHOR_OR_MODERATOR[what])
    if message.author is not None:
        author_membership = Membership.objects.filter(room_id=message.room_id, user_id=message.author_id).first()
        require_may_moderate(user, membership, message.author, author_membership)


def message_edit(*, user, message_id: int, body, origin: str | None = None, source: str = "rest") -> Message:
    message, membership = message_and_membership(user, message_id)
    _require_author_or_moderator(user, message, membership, "edit")
    require_writable(user, message.room, membership)
    if message.deleted:
        raise Invalid(_("This message is deleted."))
    if message.kind == Message.Kind.SYSTEM:
        raise Forbidden(_("System messages cannot be edited."))
    body = clean_body(body)
    budget("edit", user)
    with transaction.atomic():
        before = message.body
        earlier = notify.earlier_mentions(message)
        message.body, message.edited_at = body, timezone.now()
        content.render_into(message)
        alerted = notify.edit_recipients(message, named_before=set(earlier["users"]), room_before=earlier["room"])
        message.earlier_mentions = earlier
        message.seq = sql.next_seq(message.room_id)  # the room's lock, after the reads above
        message.save(update_fields=["body", "edited_at", *content.FIELDS, "earlier_mentions", "seq"])
        content.write_mentions([message], replace=True)
        if message.author_id != user.pk:  # the original text survives in the audit log
            audit(
                actor=user,
                action="edit_message",
                source=source,
                room=message.room,
                target_user=message.author,
                target_message=message,
                before=before,
                after=body,
            )
        events.publish(events.room_group(message.room_id), events.change_event(message, origin=origin))
        notify.publish_alerts(message, alerted)
    return message


def message_delete(*, user, message_id: int, origin: str | None = None, source: str = "rest") -> Message:
    """Soft delete: the id stays, the body is hidden from every reader (and kept for moderation)."""
    message, membership = message_and_membership(user, message_id)
    _require_author_or_moderator(user, message, membership, "delete")
    if message.deleted:
        return message
    budget("delete", user, source)
    with transaction.atomic():
        message.deleted = True
        message.seq = sql.next_seq(message.room_id)
        message.save(update_fields=["deleted", "seq"])
        if message.author_id != user.pk:  # authors deleting their own words is not moderation
            audit(
                actor=user,
                action="delete_message",
                source=source,
                room=message.room,
                target_user=message.author,
                target_message=message,
            )
        frame = protocol.message_deleted(message.room.slug, message.pk)
        events.publish(
            events.room_group(message.room_id), events.frame_event(frame, room_id=message.room_id, origin=origin)
        )
        # Every connection, the deleter's too: its reply (`message.deleted`) carries no seq.
        events.publish(events.room_group(message.room_id), events.change_event(message))
    return message


def message_restore(*, user, message_id: int, source: str = "rest") -> Message:
    """Undo a soft delete (room moderators and staff): readers get the message back as `message.updated`."""
    message, membership = message_and_membership(user, message_id)
    if not (user.is_staff or (membership is not None and membership.can_moderate and not membership.is_banned())):
        raise Forbidden(_("Only moderators and staff can restore a message."))
    if not message.deleted:
        return message
    with transaction.atomic():
        message.deleted = False
        message.seq = sql.next_seq(message.room_id)
        message.save(update_fields=["deleted", "seq"])
        audit(
            actor=user,
            action="restore_message",
            source=source,
            room=message.room,
            target_user=message.author,
            target_message=message,
        )
        events.publish(events.room_group(message.room_id), events.change_event(message))
    return message


def read_mark(*, user, slug: str, message_id: int, origin: str | None = None) -> Membership:
    """Move the read marker forward (never back, so a stale device cannot undo another's reads)."""
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 0:
        raise Invalid(_("message_id: a non-negative integer."))
    room, membership = member_room_for_user(user, slug)
    # Capped at the newest message, so a bogus or foreign id cannot mark future messages read.
    message_id = min(message_id, last_message_id(room) or 0)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        if message_id > membership.last_read_id:
            membership.last_read_id = message_id
            membership.save(update_fields=["last_read_id"])
        count, mentions = unread_counts(membership)
        frame = protocol.unread(room.slug, count, membership.last_read_id, mentions)
        events.publish(events.user_group(user.pk), events.frame_event(frame, room_id=room.pk, origin=origin))
    return membership
