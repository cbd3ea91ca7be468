"""Moderation: bans and mutes, deactivating accounts, reports and their resolution; every
step goes into the audit log (`audit`)."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import events, protocol
from ..errors import Forbidden, Invalid, NotFound
from ..models import Membership, Message, Report, Room, active_membership_q
from ..selectors import message_for_user, room_for_user
from ..serializers import timestamp
from ._common import audit, budget, member_event, require_may_moderate, require_moderator, storable, unsubscribe
from .messages import message_delete

__all__ = [
    "audit",
    "member_ban",
    "member_mute",
    "member_unban",
    "member_unmute",
    "message_report",
    "report_resolve",
    "user_deactivate",
]

User = get_user_model()


def _moderation_target(actor, slug: str, username: str) -> tuple[Room, "User", Membership | None]:
    room, actor_membership = room_for_user(actor, slug)
    require_moderator(actor, room, actor_membership)
    target = User.objects.filter(username=username).first()
    if target is None:
        raise NotFound(_("No user '%(username)s'."), username=username)
    membership = Membership.objects.filter(room=room, user=target).first()
    require_may_moderate(actor, actor_membership, target, membership)
    return room, target, membership


def member_ban(
    *, actor, slug: str, username: str, reason: str = "", minutes: int | None = None, source: str = "rest"
) -> Membership:
    """Ban a user from a room (until lifted, or for `minutes`): their connections leave it at once
    (`room.left` reason `banned`; a `/ws/chat/<slug>/` connection is closed 4403)."""
    if minutes is not None and (
        not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= Membership.MAX_BAN_MINUTES
    ):
        raise Invalid(
            _("minutes: a whole number from 1 to %(max)s (ten years), or nothing for a ban until lifted."),
            max=Membership.MAX_BAN_MINUTES,
        )
    if len(reason) > 300:
        raise Invalid(_("reason: at most 300 characters."))
    storable("reason", reason)
    room, target, membership = _moderation_target(actor, slug, username)
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden(_("Direct rooms have no bans."))
    was_member = membership is not None and not membership.is_banned()
    until = timezone.now() + timedelta(minutes=minutes) if minutes else None
    with transaction.atomic():
        membership, _created = Membership.objects.update_or_create(
            room=room, user=target, defaults={"banned": True, "banned_until": until, "ban_reason": reason}
        )
        audit(actor=actor, action="ban", source=source, room=room, target_user=target, reason=reason, minutes=minutes)
        if was_member:
            member_event(protocol.member_left, room, target)
        unsubscribe(target.pk, room, reason="banned")
    return membership


def member_unban(*, actor, slug: str, username: str, source: str = "rest") -> None:
    """Lift a ban. The user is no longer a member: they may join again (or be invited)."""
    room, target, membership = _moderation_target(actor, slug, username)
    if membership is None or not membership.banned:
        raise NotFound(_("'%(username)s' is not banned from '%(slug)s'."), username=username, slug=slug)
    with transaction.atomic():
        membership.delete()
        audit(actor=actor, action="unban", source=source, room=room, target_user=target)


def member_mute(*, actor, slug: str, username: str, minutes: int, source: str = "rest") -> Membership:
    """Mute a member for `minutes`: their sends answer `muted` with the time left."""
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= Membership.MAX_MUTE_MINUTES:
        raise Invalid(_("minutes: a whole number from 1 to %(max)s (a year)."), max=Membership.MAX_MUTE_MINUTES)
    room, target, membership = _moderation_target(actor, slug, username)
    if membership is None or membership.is_banned():
        raise NotFound(_("'%(username)s' is not a member of '%(slug)s'."), username=username, slug=slug)
    membership.muted_until = timezone.now() + timedelta(minutes=minutes)
    with transaction.atomic():
        membership.save(update_fields=["muted_until"])
        audit(actor=actor, action="mute", source=source, room=room, target_user=target, minutes=minutes)
        _tell_member(room, target, membership)
    return membership


def member_unmute(*, actor, slug: str, username: str, source: str = "rest") -> Membership:
    room, target, membership = _moderation_target(actor, slug, username)
    if membership is None or not membership.is_muted():
        raise NotFound(_("'%(username)s' is not muted in '%(slug)s'."), username=username, slug=slug)
    membership.muted_until = None
    with transaction.atomic():
        membership.save(update_fields=["muted_until"])
        audit(actor=actor, action="unmute", source=source, room=room, target_user=target)
        _tell_member(room, target, membership)
    return membership


def _tell_member(room, user, membership: Membership) -> None:
    """The member's open pages close or reopen their composer at once, on every process."""
    frame = protocol.membership_updated(room.slug, timestamp(membership.muted_until))
    events.publish(events.user_group(user.pk), events.frame_event(frame, room_id=room.pk))


def user_deactivate(*, actor, username: str, source: str = "admin") -> "User":
    """Staff only: the account can no longer log in, and every one of its sockets closes with 4403 at once."""
    if not actor.is_staff:
        raise Forbidden(_("Only staff can deactivate accounts."))
    target = User.objects.filter(username=username).first()
    if target is None:
        raise NotFound(_("No user '%(username)s'."), username=username)
    if target.pk == actor.pk:
        raise Invalid(_("username: you cannot deactivate yourself."))
    if target.is_staff and not actor.is_superuser:
        raise Forbidden(_("Only a superuser can deactivate staff."))
    with transaction.atomic():
        target.is_active = False
        target.save(update_fields=["is_active"])
        audit(actor=actor, action="deactivate", source=source, target_user=target)
        events.publish(
            events.user_group(target.pk), events.close_event(protocol.CLOSE_FORBIDDEN, "account deactivated")
        )
    return target


def message_report(*, user, message_id: int, reason) -> Report:
    """Report a message the user can see to the room's moderators and staff."""
    limit = Report._meta.get_field("reason").max_length
    reason = reason.strip() if isinstance(reason, str) else ""
    if not 1 <= len(reason) <= limit:
        raise Invalid(_("reason: 1-%(limit)s characters, saying what is wrong with the message."), limit=limit)
    storable("reason", reason)
    message = message_for_user(user, message_id)
    if message.author_id == user.pk:
        raise Invalid(_("You cannot report your own message: edit or delete it instead."))
    if message.kind == Message.Kind.SYSTEM or message.deleted:
        raise Invalid(_("Only visible user messages can be reported."))
    if Report.objects.filter(message=message, reporter=user).exists():
        raise Invalid(_("You have already reported this message."))
    budget("report", user)
    try:
        with transaction.atomic():
            return Report.objects.create(message=message, reporter=user, reason=reason)
    except IntegrityError:  # reported concurrently
        raise Invalid(_("You have already reported this message.")) from None


def report_resolve(
    *,
    actor,
    report_id: int,
    resolution: str = "",
    delete_message: bool = False,
    ban_author: bool = False,
    source: str = "admin",
) -> Report:
    """Close a report (staff or the room's owner and moderators), optionally deleting the message
    and banning its author from the room."""
    report = Report.objects.select_related("message__room", "message__author").filter(pk=report_id).first()
    if report is None:
        raise NotFound(_("No report %(id)s."), id=report_id)
    room = report.message.room
    membership = Membership.objects.filter(room=room, user=actor).filter(active_membership_q()).first()
    require_moderator(actor, room, membership)
    with transaction.atomic():
        # Locked and re-read: two moderators resolving at once must not both act.
        if Report.objects.select_for_update().filter(pk=report.pk).values_list("resolved_at", flat=True).get():
            raise Invalid(_("Report %(id)s is already resolved."), id=report_id)
        if delete_message:
            message_delete(user=actor, message_id=report.message_id, source=source)
        if ban_author and report.message.author is not None:
            member_ban(
                actor=actor,
                slug=room.slug,
                username=report.message.author.username,
                reason=resolution or report.reason,
                source=source,
            )
        report.resolved_at, report.resolved_by, report.resolution = timezone.now(), actor, resolution
        report.save(update_fields=["resolved_at", "resolved_by", "resolution"])
        audit(
            actor=actor,
            action="report_resolve",
            source=source,
            room=room,
            target_user=report.message.author,
            target_message=report.message,
            reason=resolution,
            report_id=report.pk,
            deleted_message=delete_message,
            banned_author=ban_author,
        )
    return report
