"""What several service modules share: the audit log, write budgets, the moderation and write
permissions, the text checks, and the events that (un)subscribe a user's connections."""

import math
import re

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import events, limits, protocol
from ..errors import Forbidden, Invalid, Muted, RoomLocked, TooLarge
from ..models import Membership, Message, ModerationAction, Room
from ..serializers import user_data

# The slugs `direct_room` gives; another room holding one would receive that pair's messages.
DIRECT_SLUG_RE = re.compile(r"dm-\d+-\d+")


def subscribe(user_id: int, room: Room, *, since: int) -> None:
    """Tell the user's open connections to subscribe to `room`, replaying messages after `since`."""
    events.publish(events.user_group(user_id), events.subscribe_event(room.pk, room.slug, since=since))


def unsubscribe(user_id: int, room: Room, *, reason: str) -> None:
    events.publish(events.user_group(user_id), events.unsubscribe_event(room.pk, room.slug, reason=reason))


def member_event(frame_builder, room: Room, user) -> None:
    """Publish `protocol.member_joined` or `protocol.member_left` (`frame_builder`) to the room."""
    frame = frame_builder(room.slug, user_data(user))
    events.publish(events.room_group(room.pk), events.frame_event(frame, room_id=room.pk))


def audit(
    *,
    actor,
    action: str,
    source: str,
    room: Room | None = None,
    target_user=None,
    target_message: Message | None = None,
    reason: str = "",
    **detail,
) -> ModerationAction:
    """Record a moderation step in the audit log. Call inside the service's transaction."""
    return ModerationAction.objects.create(
        actor=actor,
        action=action,
        source=source,
        room=room,
        target_user=target_user,
        target_message=target_message,
        reason=reason,
        detail=detail,
    )


def budget(action: str, user, source: str = "") -> None:
    """Count a write against the user's budget for `action` (CHAT_WRITE_RATES), once it has passed
    its checks; raise RateLimited beyond it. The admin's calls are not counted: only staff reach
    it, each step is audited, and cleaning up after a flood must not wait on a budget."""
    if source != "admin":
        limits.check_rate(action, user.pk)


def require_moderator(user, room: Room, membership: Membership | None) -> None:
    if user.is_staff or (membership is not None and membership.can_moderate):
        return
    raise Forbidden(_("Only the owner and moderators of '%(slug)s' can do that."), slug=room.slug)


def require_may_moderate(actor, actor_membership, target, target_membership) -> None:
    """Moderators act on plain members only; owners on anyone but staff; staff on anyone else."""
    if target.pk == actor.pk:
        raise Invalid(_("username: you cannot moderate yourself."))
    if target.is_staff and not actor.is_staff:
        raise Forbidden(_("Staff cannot be moderated by room owners or moderators."))
    is_owner = actor_membership is not None and actor_membership.role == Membership.Role.OWNER
    if (
        not (actor.is_staff or is_owner)
        and target_membership is not None
        and target_membership.role != Membership.Role.MEMBER
    ):
        raise Forbidden(_("Moderators can act on members only."))


def require_writable(user, room: Room, membership: Membership | None) -> None:
    """Locked rooms and muted members cannot write (send or edit); staff always can."""
    if user.is_staff:
        return
    if room.locked:
        raise RoomLocked(_("Room '%(slug)s' is locked: it is read-only."), slug=room.slug)
    now = timezone.now()
    if membership is not None and membership.is_muted(now):
        left = math.ceil((membership.muted_until - now).total_seconds())
        raise Muted(
            _("You are muted in '%(slug)s' for %(seconds)s more seconds."),
            slug=room.slug,
            seconds=left,
            retry_after=left,
        )


def storable(field: str, text: str) -> str:
    """`text`, refused if it breaks the text rule (`protocol.unstorable`): PostgreSQL cannot
    store NUL, neither database an unpaired surrogate, and the refusal must not depend on
    the database (nor fail the other messages of a batch)."""
    if protocol.unstorable(text):
        raise Invalid(protocol.UNSTORABLE, field=field)
    return text


def clean_body(body) -> str:
    if not isinstance(body, str) or not body.strip():
        raise Invalid(_("body: must be a non-empty string."))
    if len(body) > settings.CHAT_MAX_BODY:
        raise TooLarge(
            _("body: %(length)s characters; the limit is %(limit)s."), length=len(body), limit=settings.CHAT_MAX_BODY
        )
    return storable("body", body)
