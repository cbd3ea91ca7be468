"""Members: join, leave, invite and remove, and when a join or leave gets its history line."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from .. import limits, protocol, system_text
from ..errors import Forbidden, Invalid, NotFound
from ..models import Membership, Message, Room, active_membership_q
from ..selectors import member_room_for_user, room_for_user
from ._common import audit, budget, member_event, require_may_moderate, require_moderator, subscribe, unsubscribe
from ._inserts import insert_message

User = get_user_model()


# How long a quiet return (a re-join soon after leaving) is remembered, so that the leave ending it
# writes nothing either: the history's last word on that user stays the one "left".
QUIET_RETURN_S = 7 * 24 * 3600


def _left_key(room: Room, user) -> str:
    return f"chat:left:{room.pk}:{user.pk}"


def _membership_noted(room: Room, user, *, joining: bool) -> bool:
    """Whether this join or leave gets its "joined"/"left" system message.

    A join within CHAT_JOIN_LEAVE_QUIET_S of the user's leave of the room gets none, nor does
    the leave that ends that visit: flapping writes one "left", not a pair per cycle. The key
    lives with the rate counters, so every process sees it; while the store is away, both are written.
    """
    key = _left_key(room, user)
    quiet = limits.flag_is_set(key)
    if joining:
        if quiet:
            limits.set_flag(key, QUIET_RETURN_S)
        return not quiet
    limits.set_flag(key, settings.CHAT_JOIN_LEAVE_QUIET_S)
    return not quiet


def room_join(*, user, slug: str) -> tuple[Room, Membership, bool]:
    """Become a member of a public room (or, as staff, any room). Returns (room, membership, created)."""
    room, membership = room_for_user(user, slug)
    # A row with an expired ban is not yet a fresh membership: joining clears the ban.
    if membership is not None and not membership.banned:
        return room, membership, False
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden(_("Direct rooms cannot be joined."))
    budget("join", user)
    noted = _membership_noted(room, user, joining=True)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(room=room, user=user)
        if not created and not membership.banned:  # joined concurrently
            return room, membership, False
        if not created:  # an expired ban: the row stays, the ban goes
            membership.banned, membership.banned_until, membership.ban_reason = False, None, ""
            membership.save(update_fields=["banned", "banned_until", "ban_reason"])
        if noted:
            insert_message(
                room=room, author=user, kind=Message.Kind.SYSTEM, body=system_text.write("joined", user=user.username)
            )
        member_event(protocol.member_joined, room, user)
        subscribe(user.pk, room, since=0)
    return room, membership, True


def room_leave(*, user, slug: str) -> Room:
    room, membership = member_room_for_user(user, slug)
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden(_("You cannot leave a direct conversation."))
    budget("leave", user)
    noted = _membership_noted(room, user, joining=False)
    with transaction.atomic():
        membership.delete()
        if noted:
            insert_message(
                room=room, author=user, kind=Message.Kind.SYSTEM, body=system_text.write("left", user=user.username)
            )
        member_event(protocol.member_left, room, user)
        unsubscribe(user.pk, room, reason="left")
    return room


def member_invite(*, actor, slug: str, username: str, role: str = Membership.Role.MEMBER) -> Membership:
    """Add a user to a room (any member may invite; only owners and staff grant roles)."""
    room, actor_membership = member_room_for_user(actor, slug) if not actor.is_staff else room_for_user(actor, slug)
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden(_("Direct rooms have exactly two members."))
    if role not in Membership.Role.values:
        raise Invalid(_("role: use owner, moderator or member."))
    is_owner = actor.is_staff or (actor_membership is not None and actor_membership.role == Membership.Role.OWNER)
    if role != Membership.Role.MEMBER and not is_owner:
        raise Forbidden(_("Only the owner can grant roles."))
    target = User.objects.filter(username=username, is_active=True).first()
    if target is None:
        raise NotFound(_("No user '%(username)s'."), username=username)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(room=room, user=target, defaults={"role": role})
        if not created:
            if membership.is_banned():
                raise Forbidden(
                    _("'%(username)s' is banned from '%(slug)s': lift the ban first."), username=username, slug=slug
                )
            if membership.banned:
                membership.banned, membership.banned_until, membership.ban_reason = False, None, ""
                created = True
            elif membership.role == role:
                raise Invalid(_("'%(username)s' is already a member of '%(slug)s'."), username=username, slug=slug)
            elif not is_owner:
                raise Forbidden(_("Only the owner can change roles."))
            membership.role = role
            membership.save()
        budget("invite", actor)  # in the transaction, which it rolls back: only a change is counted
        if created:
            limits.set_flag(_left_key(room, target), None)  # the history says "added": a leave is news again
            body = system_text.write("added", actor=actor.username, user=target.username)
            insert_message(room=room, author=actor, kind=Message.Kind.SYSTEM, body=body)
            member_event(protocol.member_joined, room, target)
            subscribe(target.pk, room, since=0)
    return membership


def member_remove(*, actor, slug: str, username: str, source: str = "rest") -> None:
    """Kick a member. Moderators may remove members only; nobody removes staff."""
    if username == actor.username:
        room_leave(user=actor, slug=slug)
        return
    room, actor_membership = room_for_user(actor, slug)
    require_moderator(actor, room, actor_membership)
    # Banned rows are excluded: deleting one would lift the ban.
    membership = (
        Membership.objects.select_related("user")
        .filter(room=room, user__username=username)
        .filter(active_membership_q())
        .first()
    )
    if membership is None:
        raise NotFound(_("'%(username)s' is not a member of '%(slug)s'."), username=username, slug=slug)
    require_may_moderate(actor, actor_membership, membership.user, membership)
    with transaction.atomic():
        membership.delete()
        limits.set_flag(_left_key(room, membership.user), None)  # the history says "removed": a join is news again
        audit(actor=actor, action="kick", source=source, room=room, target_user=membership.user)
        insert_message(
            room=room,
            author=actor,
            kind=Message.Kind.SYSTEM,
            body=system_text.write("removed", actor=actor.username, user=membership.user.username),
        )
        member_event(protocol.member_left, room, membership.user)
        unsubscribe(membership.user_id, room, reason="kicked")


def membership_notify_set(*, user, slug: str, notify) -> Membership:
    """Set what the member is alerted of in the room (`Membership.Notify`: `all`, `mentions` or
    `none`); counted against the `update` budget. Returns the membership, its room loaded."""
    if notify not in Membership.Notify.values:
        raise Invalid(_("notify: use 'all', 'mentions' or 'none'."))
    _room, membership = member_room_for_user(user, slug)
    budget("update", user)
    if membership.notify != notify:
        membership.notify = notify
        membership.save(update_fields=["notify"])
    return membership
