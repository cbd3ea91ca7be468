"""The only code that changes chat state.

Each service checks access through `chat.selectors`, validates, writes inside
`transaction.atomic` (or, for a batch of messages on PostgreSQL, in one query string that
is a transaction of its own) and publishes its events through `chat.events.publish`, which sends
them after commit. REST views, the WebSocket consumer, the admin and management
commands all call these functions; none of them writes models directly.
"""
import contextlib
import functools
import logging
import math
from dataclasses import dataclass
from datetime import timedelta
import re

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.text import slugify
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from . import events, limits, metrics, protocol, usernames
from .errors import INFRASTRUCTURE, Forbidden, Gone, Invalid, Muted, NotFound, RoomLocked, TooLarge
from .limits import check_send_rates
from .models import Membership, Message, ModerationAction, Report, Room
from .selectors import (active_membership_q, fetch_all, last_message_id, member_room_for_user, member_rooms_for_users,
                        direct_slug, memberships_from_rows, memberships_statement, message_for_user, placeholders,
                        room_for_user, unread_count)
from .serializers import message_data, user_data

User = get_user_model()
logger = logging.getLogger(__name__)


# Users

def user_register(*, username: str, password: str, email: str = "") -> User:
    if not settings.CHAT_REGISTRATION_OPEN:
        raise Forbidden("Registration is closed on this server.")
    username = usernames.normalize(username)
    try:
        usernames.validate_username_script(username)
    except ValidationError as exc:
        raise Invalid(f"username: {exc.messages[0]}") from None
    if User.objects.filter(username__iexact=username).exists():
        raise Invalid("username: that username is taken.")
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError:  # registered concurrently
        raise Invalid("username: that username is taken.") from None


def password_change(*, user, old_password, new_password, keep_session: str | None = None) -> User:
    """Change the password and end every other sign-in (`sign_ins_end`). Access tokens and other
    sessions stop matching the new password hash by themselves; the caller keeps its own session
    valid with `update_session_auth_hash`."""
    if not isinstance(old_password, str) or not user.check_password(old_password):
        raise Invalid("old_password: that is not your current password.")
    if not isinstance(new_password, str) or not new_password:
        raise Invalid("new_password: give the new password.")
    try:
        password_validation.validate_password(new_password, user)
    except ValidationError as exc:
        raise Invalid(f"new_password: {' '.join(exc.messages)}") from None
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        sign_ins_end(user=user, keep_session=keep_session)
    return user


def sign_ins_end(*, user, keep_session: str | None = None) -> None:
    """After the user's password changed: blacklist their refresh tokens and close their sockets
    with 4401, except those of the session marked `keep_session` (`auth.session_mark`)."""
    with transaction.atomic():
        outstanding = OutstandingToken.objects.filter(user=user, expires_at__gt=timezone.now(),
                                                      blacklistedtoken__isnull=True)
        BlacklistedToken.objects.bulk_create([BlacklistedToken(token=token) for token in outstanding],
                                             ignore_conflicts=True)
        events.publish(events.user_group(user.pk), {"type": "chat.close", "code": protocol.CLOSE_UNAUTHENTICATED,
                                                    "reason": "password changed: sign in again",
                                                    "keep_session": keep_session})


# Rooms

def _room_frame(room: Room) -> dict:
    return {"type": "room.updated", "room": room.slug, "name": room.name, "topic": room.topic,
            "locked": room.locked, "archived": room.archived}


def _subscribe(user_id: int, room: Room, *, since: int) -> None:
    """Tell the user's open connections to subscribe to `room`, replaying messages after `since`."""
    events.publish(events.user_group(user_id), {"type": "chat.subscribe", "room_id": room.pk, "slug": room.slug, "since": since})


def _unsubscribe(user_id: int, room: Room, *, reason: str) -> None:
    events.publish(events.user_group(user_id), {"type": "chat.unsubscribe", "room_id": room.pk, "slug": room.slug, "reason": reason})


def _member_event(kind: str, room: Room, user) -> None:
    frame = {"type": kind, "room": room.slug, "user": user_data(user)}
    events.publish(events.room_group(room.pk), events.frame_event(frame, room_id=room.pk))


def audit(*, actor, action: str, source: str, room: Room | None = None, target_user=None,
          target_message: Message | None = None, reason: str = "", **detail) -> ModerationAction:
    """Record a moderation step in the audit log. Call inside the service's transaction."""
    return ModerationAction.objects.create(actor=actor, action=action, source=source, room=room,
                                           target_user=target_user, target_message=target_message,
                                           reason=reason, detail=detail)


def _budget(action: str, user, source: str = "") -> None:
    """Count a write against the user's budget for `action` (CHAT_WRITE_RATES), once it has passed
    its checks; raise RateLimited beyond it. The admin's calls are not counted: only staff reach
    it, each step is audited, and cleaning up after a flood must not wait on a budget."""
    if source != "admin":
        limits.check_rate(action, user.pk)


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


def _require_moderator(user, room: Room, membership: Membership | None) -> None:
    if user.is_staff or (membership is not None and membership.can_moderate):
        return
    raise Forbidden(f"Only the owner and moderators of '{room.slug}' can do that.")


# The slugs `direct_room` gives; another room holding one would receive that pair's messages.
DIRECT_SLUG_RE = re.compile(r"dm-\d+-\d+")


def _storable(field: str, text: str) -> str:
    """`text`, refused if it breaks the text rule (`protocol.unstorable`): PostgreSQL cannot
    store NUL, neither database an unpaired surrogate, and the refusal must not depend on
    the database (nor fail the other messages of a batch)."""
    if protocol.unstorable(text):
        raise Invalid(f"{field}: {protocol.UNSTORABLE}.")
    return text


def _clean_name(name) -> str:
    limit = Room._meta.get_field("name").max_length
    name = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= limit:
        raise Invalid(f"name: 1-{limit} characters, not only spaces.")
    return _storable("name", name)


def _clean_topic(topic) -> str:
    limit = Room._meta.get_field("topic").max_length
    if not isinstance(topic, str) or len(topic) > limit:
        raise Invalid(f"topic: a string of at most {limit} characters.")
    return _storable("topic", topic)


def room_create(*, user, name: str, slug: str = "", kind: str = Room.Kind.PUBLIC, topic: str = "",
                source: str = "rest") -> Room:
    """Create a public or private room; the creator becomes its owner."""
    if kind not in (Room.Kind.PUBLIC, Room.Kind.PRIVATE):
        raise Invalid("kind: use 'public' or 'private'; direct rooms are created by sending to a user.")
    name, topic = _clean_name(name), _clean_topic(topic)
    if not slug and not (slug := slugify(name).replace("_", "-")[:50].strip("-")):
        raise Invalid("slug: could not derive one from the name; give a slug of lowercase letters, digits and hyphens.")
    if not protocol.SLUG_RE.fullmatch(slug):
        raise Invalid("slug: use 1-50 lowercase letters, digits or hyphens.")
    if DIRECT_SLUG_RE.fullmatch(slug):
        raise Invalid(f"slug: '{slug}' is reserved for direct rooms; choose another.")
    taken = Invalid(f"slug: '{slug}' is taken; choose another.")
    if Room.objects.filter(slug=slug).exists():  # before the budget: a taken slug costs none of it
        raise taken
    _budget("room", user, source)
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, name=name, kind=kind, topic=topic, created_by=user)
            Membership.objects.create(room=room, user=user, role=Membership.Role.OWNER)
            _subscribe(user.pk, room, since=0)
    except IntegrityError:
        raise taken from None
    return room


def room_update(*, user, slug: str, name: str | None = None, topic: str | None = None,
                locked: bool | None = None, source: str = "rest") -> Room:
    room, membership = room_for_user(user, slug)
    _require_moderator(user, room, membership)
    name = None if name is None else _clean_name(name)
    topic = None if topic is None else _clean_topic(topic)
    _budget("update", user, source)
    with transaction.atomic():
        room = Room.objects.select_for_update().get(pk=room.pk)
        if name is not None:
            room.name = name
        topic_changed = topic is not None and topic != room.topic
        if topic is not None:
            room.topic = topic
        if locked is not None and locked != room.locked:
            room.locked = locked
            audit(actor=user, action="lock" if locked else "unlock", source=source, room=room)
        room.save(update_fields=["name", "topic", "locked"])
        if topic_changed:
            audit(actor=user, action="topic", source=source, room=room, topic=topic)
            _insert_message(room=room, author=user, kind=Message.Kind.SYSTEM,
                            body=f"{user.username} set the topic: {topic}" if topic else f"{user.username} cleared the topic")
        events.publish(events.room_group(room.pk), events.frame_event(_room_frame(room), room_id=room.pk))
    return room


def room_archive(*, user, slug: str, source: str = "rest") -> Room:
    """Archive: the room leaves every list and its connections are told so."""
    room, membership = room_for_user(user, slug)
    if not (user.is_staff or (membership is not None and membership.role == Membership.Role.OWNER)):
        raise Forbidden(f"Only the owner of '{slug}' or staff can archive it.")
    with transaction.atomic():
        room.archived = True
        room.save(update_fields=["archived"])
        audit(actor=user, action="archive", source=source, room=room)
        events.publish(events.room_group(room.pk), {"type": "chat.archived", "room_id": room.pk,
                                                    "text": events.encode(_room_frame(room))})
    return room


def room_join(*, user, slug: str) -> tuple[Room, Membership, bool]:
    """Become a member of a public room (or, as staff, any room). Returns (room, membership, created)."""
    room, membership = room_for_user(user, slug)
    # A row with an expired ban is not yet a fresh membership: joining clears the ban.
    if membership is not None and not membership.banned:
        return room, membership, False
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden("Direct rooms cannot be joined.")
    _budget("join", user)
    noted = _membership_noted(room, user, joining=True)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(room=room, user=user)
        if not created and not membership.banned:  # joined concurrently
            return room, membership, False
        if not created:  # an expired ban: the row stays, the ban goes
            membership.banned, membership.banned_until, membership.ban_reason = False, None, ""
            membership.save(update_fields=["banned", "banned_until", "ban_reason"])
        if noted:
            _insert_message(room=room, author=user, kind=Message.Kind.SYSTEM, body=f"{user.username} joined")
        _member_event("member.joined", room, user)
        _subscribe(user.pk, room, since=0)
    return room, membership, True


def room_leave(*, user, slug: str) -> Room:
    room, membership = member_room_for_user(user, slug)
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden("You cannot leave a direct conversation.")
    _budget("leave", user)
    noted = _membership_noted(room, user, joining=False)
    with transaction.atomic():
        membership.delete()
        if noted:
            _insert_message(room=room, author=user, kind=Message.Kind.SYSTEM, body=f"{user.username} left")
        _member_event("member.left", room, user)
        _unsubscribe(user.pk, room, reason="left")
    return room


def member_invite(*, actor, slug: str, username: str, role: str = Membership.Role.MEMBER) -> Membership:
    """Add a user to a room (any member may invite; only owners and staff grant roles)."""
    room, actor_membership = member_room_for_user(actor, slug) if not actor.is_staff else room_for_user(actor, slug)
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden("Direct rooms have exactly two members.")
    if role not in Membership.Role.values:
        raise Invalid("role: use owner, moderator or member.")
    is_owner = actor.is_staff or (actor_membership is not None and actor_membership.role == Membership.Role.OWNER)
    if role != Membership.Role.MEMBER and not is_owner:
        raise Forbidden("Only the owner can grant roles.")
    target = User.objects.filter(username=username, is_active=True).first()
    if target is None:
        raise NotFound(f"No user '{username}'.")
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(room=room, user=target, defaults={"role": role})
        if not created:
            if membership.is_banned():
                raise Forbidden(f"'{username}' is banned from '{slug}': lift the ban first.")
            if membership.banned:
                membership.banned, membership.banned_until, membership.ban_reason = False, None, ""
                created = True
            elif membership.role == role:
                raise Invalid(f"'{username}' is already a member of '{slug}'.")
            elif not is_owner:
                raise Forbidden("Only the owner can change roles.")
            membership.role = role
            membership.save()
        _budget("invite", actor)  # in the transaction, which it rolls back: only a change is counted
        if created:
            limits.set_flag(_left_key(room, target), None)  # the history says "added": a leave is news again
            _insert_message(room=room, author=actor, kind=Message.Kind.SYSTEM,
                            body=f"{actor.username} added {target.username}")
            _member_event("member.joined", room, target)
            _subscribe(target.pk, room, since=0)
    return membership


def member_remove(*, actor, slug: str, username: str, source: str = "rest") -> None:
    """Kick a member. Moderators may remove members only; nobody removes staff."""
    if username == actor.username:
        room_leave(user=actor, slug=slug)
        return
    room, actor_membership = room_for_user(actor, slug)
    _require_moderator(actor, room, actor_membership)
    # Banned rows are excluded: deleting one would lift the ban.
    membership = (Membership.objects.select_related("user").filter(room=room, user__username=username)
                  .filter(active_membership_q()).first())
    if membership is None:
        raise NotFound(f"'{username}' is not a member of '{slug}'.")
    _require_may_moderate(actor, actor_membership, membership.user, membership)
    with transaction.atomic():
        membership.delete()
        limits.set_flag(_left_key(room, membership.user), None)  # the history says "removed": a join is news again
        audit(actor=actor, action="kick", source=source, room=room, target_user=membership.user)
        _insert_message(room=room, author=actor, kind=Message.Kind.SYSTEM,
                        body=f"{actor.username} removed {membership.user.username}")
        _member_event("member.left", room, membership.user)
        _unsubscribe(membership.user_id, room, reason="kicked")


def _require_may_moderate(actor, actor_membership, target, target_membership) -> None:
    """Moderators act on plain members only; owners on anyone but staff; staff on anyone else."""
    if target.pk == actor.pk:
        raise Invalid("username: you cannot moderate yourself.")
    if target.is_staff and not actor.is_staff:
        raise Forbidden("Staff cannot be moderated by room owners or moderators.")
    is_owner = actor_membership is not None and actor_membership.role == Membership.Role.OWNER
    if not (actor.is_staff or is_owner) and target_membership is not None \
            and target_membership.role != Membership.Role.MEMBER:
        raise Forbidden("Moderators can act on members only.")


def _moderation_target(actor, slug: str, username: str) -> tuple[Room, "User", Membership | None]:
    room, actor_membership = room_for_user(actor, slug)
    _require_moderator(actor, room, actor_membership)
    target = User.objects.filter(username=username).first()
    if target is None:
        raise NotFound(f"No user '{username}'.")
    membership = Membership.objects.filter(room=room, user=target).first()
    _require_may_moderate(actor, actor_membership, target, membership)
    return room, target, membership


def member_ban(*, actor, slug: str, username: str, reason: str = "", minutes: int | None = None,
               source: str = "rest") -> Membership:
    """Ban a user from a room (until lifted, or for `minutes`): their connections leave it at once
    (`room.left` reason `banned`; a `/ws/chat/<slug>/` connection is closed 4403)."""
    if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool)
                                or not 1 <= minutes <= Membership.MAX_BAN_MINUTES):
        raise Invalid(f"minutes: a whole number from 1 to {Membership.MAX_BAN_MINUTES} (ten years), "
                      "or nothing for a ban until lifted.")
    if len(reason) > 300:
        raise Invalid("reason: at most 300 characters.")
    _storable("reason", reason)
    room, target, membership = _moderation_target(actor, slug, username)
    if room.kind == Room.Kind.DIRECT:
        raise Forbidden("Direct rooms have no bans.")
    was_member = membership is not None and not membership.is_banned()
    until = timezone.now() + timedelta(minutes=minutes) if minutes else None
    with transaction.atomic():
        membership, _ = Membership.objects.update_or_create(
            room=room, user=target, defaults={"banned": True, "banned_until": until, "ban_reason": reason})
        audit(actor=actor, action="ban", source=source, room=room, target_user=target, reason=reason, minutes=minutes)
        if was_member:
            _member_event("member.left", room, target)
        _unsubscribe(target.pk, room, reason="banned")
    return membership


def member_unban(*, actor, slug: str, username: str, source: str = "rest") -> None:
    """Lift a ban. The user is no longer a member: they may join again (or be invited)."""
    room, target, membership = _moderation_target(actor, slug, username)
    if membership is None or not membership.banned:
        raise NotFound(f"'{username}' is not banned from '{slug}'.")
    with transaction.atomic():
        membership.delete()
        audit(actor=actor, action="unban", source=source, room=room, target_user=target)


def member_mute(*, actor, slug: str, username: str, minutes: int, source: str = "rest") -> Membership:
    """Mute a member for `minutes`: their sends answer `muted` with the time left."""
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= Membership.MAX_MUTE_MINUTES:
        raise Invalid(f"minutes: a whole number from 1 to {Membership.MAX_MUTE_MINUTES} (a year).")
    room, target, membership = _moderation_target(actor, slug, username)
    if membership is None or membership.is_banned():
        raise NotFound(f"'{username}' is not a member of '{slug}'.")
    membership.muted_until = timezone.now() + timedelta(minutes=minutes)
    with transaction.atomic():
        membership.save(update_fields=["muted_until"])
        audit(actor=actor, action="mute", source=source, room=room, target_user=target, minutes=minutes)
    return membership


def member_unmute(*, actor, slug: str, username: str, source: str = "rest") -> Membership:
    room, target, membership = _moderation_target(actor, slug, username)
    if membership is None or not membership.is_muted():
        raise NotFound(f"'{username}' is not muted in '{slug}'.")
    membership.muted_until = None
    with transaction.atomic():
        membership.save(update_fields=["muted_until"])
        audit(actor=actor, action="unmute", source=source, room=room, target_user=target)
    return membership


def direct_room(*, user, username: str) -> Room:
    """The direct room between `user` and `username`, created (with both memberships) on first use."""
    other = User.objects.filter(username=username, is_active=True).first()
    if other is None:
        raise NotFound(f"No user '{username}'.")
    if other.pk == user.pk:
        raise Invalid("to: you cannot send a direct message to yourself.")
    low, high = sorted([user, other], key=lambda u: u.pk)
    slug = direct_slug(low.pk, high.pk)
    room = Room.objects.filter(slug=slug).first()
    if room is not None:
        return room
    _budget("direct", user)
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, name=f"{low.username}, {high.username}", kind=Room.Kind.DIRECT)
            Membership.objects.bulk_create([Membership(room=room, user=low), Membership(room=room, user=high)])
            _subscribe(low.pk, room, since=0)
            _subscribe(high.pk, room, since=0)
    except IntegrityError:  # created concurrently
        room = Room.objects.get(slug=slug)
    return room


# Messages

def _clean_body(body) -> str:
    if not isinstance(body, str) or not body.strip():
        raise Invalid("body: must be a non-empty string.")
    if len(body) > settings.CHAT_MAX_BODY:
        raise TooLarge(f"body: {len(body)} characters; the limit is {settings.CHAT_MAX_BODY}.")
    return _storable("body", body)


def _insert_message(*, room: Room, author, body: str, kind: str = Message.Kind.USER, client_id: str = "",
                    origin: str | None = None) -> Message:
    """Insert one message; see `_insert_messages`. Call inside `transaction.atomic`."""
    draft = Message(room=room, author=author, body=body, kind=kind, client_id=client_id)
    return _insert_messages(room, [(draft, origin)])[0]


def _insert_messages(room: Room, drafts: list[tuple[Message, str | None]]) -> list[Message]:
    """`_insert_rooms_messages` for one room."""
    return _insert_rooms_messages([(room, drafts)])[0]


def _insert_rooms_messages(rooms: list[tuple[Room, list[tuple[Message, str | None]]]]) -> list[list[Message]]:
    """Insert the messages of each room in the given order, all in one INSERT, and publish
    `message.new` for each on commit. Each room appears once; `drafts` pairs each unsaved
    message with its `origin`. Returns each room's messages. Call inside `transaction.atomic`,
    or on PostgreSQL outside any, as one transaction of its own (see `_write_rooms`).

    Ids must grow in commit order within a room, so that "every message after id N" never
    misses one committed later with a smaller id. The rooms' row locks serialise inserts
    per room on PostgreSQL: the ids are drawn and the transaction commits while the locks
    are held, so no other writer to these rooms can interleave. SQLite allows one writer at
    a time, which gives the same order (and has no FOR UPDATE).

    Publishing happens after commit, so two processes' events can still reach Redis out of
    commit order. Each event therefore names the room's previous message (`prev_id`, also
    set on the returned instance), read under the same lock: a connection that receives
    a message whose predecessor it has not sent yet knows to fetch the gap first.
    """
    drafts = [draft for _, room_drafts in rooms for draft, _ in room_drafts]
    last_ids = _lock_rooms_and_insert([room.pk for room, _ in rooms], drafts)
    messages = iter(drafts)
    written = []
    for room, room_drafts in rooms:
        prev_id, room_messages = last_ids.get(room.pk) or 0, []
        for (_, origin), message in zip(room_drafts, messages):
            message.room, message.prev_id = room, prev_id
            events.publish(events.room_group(room.pk), events.message_event(message, prev_id=prev_id, origin=origin))
            prev_id = message.pk
            room_messages.append(message)
        written.append(room_messages)
    return written


def _lock_rooms_and_insert(room_ids: list[int], drafts: list[Message]) -> dict[int, int | None]:
    """Lock the rooms' rows until commit, in id order (so that two writers never deadlock), read
    the id of each room's newest message (None if it has none), then insert `drafts` in order,
    setting their ids; return the newest ids read before the insert.

    By hand, and with `fetch_all`: it runs for every batch, the ORM spent longer building these
    statements than the database took to run them, and on PostgreSQL `fetch_all` sends them as
    one query string. Outside a transaction PostgreSQL runs that string as one transaction of
    its own, committed once its last statement is done, while the locks are held.
    """
    ids = sorted(set(room_ids))
    listed = placeholders(ids)
    rooms, messages = (connection.ops.quote_name(model._meta.db_table) for model in (Room, Message))
    # A statement of its own after the lock: one that also took the locks would read with the
    # snapshot it took before waiting for them, missing the message whose commit released one
    # (READ COMMITTED gives each statement the snapshot of its start).
    # A subquery per room, which the (room, id) index answers with one row, where a GROUP BY
    # would read every message of the rooms.
    newest = (f"SELECT id, (SELECT MAX(m.id) FROM {messages} m WHERE m.room_id = r.id) "
              f"FROM {rooms} r WHERE r.id IN ({listed})")
    fields = [field for field in Message._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    row = f"({placeholders(fields)})"
    # The ids come back in the order of the rows, so each room's grow in its order.
    insert = f"INSERT INTO {messages} ({columns}) VALUES {', '.join([row] * len(drafts))} RETURNING id"
    values = [field.get_db_prep_save(field.pre_save(draft, True), connection) for draft in drafts for field in fields]
    statements = [(newest, ids), (insert, values)]
    if connection.vendor == "postgresql":  # SQLite has one writer at a time, and no FOR UPDATE
        statements.insert(0, (f"SELECT id FROM {rooms} WHERE id IN ({listed}) ORDER BY id FOR UPDATE", ids))
    *_, newest_rows, inserted = fetch_all(statements)
    for draft, (pk,) in zip(drafts, inserted):
        draft.pk = pk
        draft._state.adding, draft._state.db = False, connection.alias
    return dict(newest_rows)


def _original(author, client_id: str) -> Message | None:
    return _originals([(author, client_id)]).get((author.pk, client_id))


def _originals(pairs: list[tuple["User", str]]) -> dict[tuple[int, str], Message]:
    """The messages already sent with each (author, client_id), by (author id, client_id)."""
    wanted = {(author.pk, client_id) for author, client_id in pairs if client_id}
    return _originals_from(fetch_all([_originals_statement(wanted)])[0], wanted) if wanted else {}


def _originals_statement(wanted: set[tuple[int, str]]) -> tuple[str, list]:
    """The statement (for `fetch_all`) of the ids of the messages with these (author id,
    client_id), by hand (it runs for every batch), and whole messages only for the matches
    (`_originals_from`): almost every send has a new client_id.

    Two IN lists rather than an OR per pair, which SQLite refuses past 1000 terms; the rare
    extra rows (an author's use of another's client_id) are dropped by `_originals_from`.
    `<> ''` repeats the unique index's condition, which lets SQLite use that index.
    """
    authors, client_ids = list({author_id for author_id, _ in wanted}), list({client_id for _, client_id in wanted})
    return (f"SELECT id, author_id, client_id FROM {connection.ops.quote_name(Message._meta.db_table)} "
            f"WHERE author_id IN ({placeholders(authors)}) AND client_id IN ({placeholders(client_ids)}) "
            "AND client_id <> ''", authors + client_ids)


def _originals_from(rows: list[tuple], wanted: set[tuple[int, str]]) -> dict[tuple[int, str], Message]:
    found = [pk for pk, author_id, client_id in rows if (author_id, client_id) in wanted]
    if not found:
        return {}
    return {(m.author_id, m.client_id): m for m in Message.objects.select_related("room", "author").filter(pk__in=found)}


def message_send(*, user, slug: str | None = None, to: str | None = None, body, client_id: str = "",
                 kind: str = Message.Kind.USER, origin: str | None = None) -> tuple[Message, bool]:
    """Persist a message in room `slug` (or the direct room with user `to`), then publish it.

    Returns (message, created). A `client_id` the author already used creates nothing and
    returns the original, so a client may resend after a lost acknowledgement.
    `origin` names the connection that sent it, which acknowledges it itself.
    """
    result = message_send_batch([dict(user=user, slug=slug, to=to, body=body, client_id=client_id, kind=kind,
                                      origin=origin)])[0]
    if isinstance(result, Exception):
        raise result
    return result


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
        for _, sends in rooms:
            for send in sends:
                results[send.index] = exc
    metrics.MESSAGES_ACCEPTED.inc(sum(1 for result in results if isinstance(result, tuple) and result[1]))
    return results


def _write_rooms(rooms: list[tuple[Room, list["_Send"]]], results: list) -> None:
    """The common case: every room's new messages in one transaction (one commit, one fsync on
    SQLite), without the two round trips per room a savepoint costs. On PostgreSQL outside a
    transaction the whole write is one query string, a transaction of its own: no BEGIN and
    COMMIT round trips."""
    alone = connection.vendor == "postgresql" and connection.get_autocommit()  # False in a transaction
    one_transaction = contextlib.nullcontext() if alone else transaction.atomic()
    with one_transaction:
        written = _insert_rooms_messages([(room, [(send.draft(), send.origin) for send in sends])
                                          for room, sends in rooms])
    for (_, sends), messages in zip(rooms, written):
        for send, message in zip(sends, messages):
            results[send.index] = (message, True)


def _write_room(room: Room, sends: list["_Send"], results: list) -> None:
    try:
        with transaction.atomic():
            messages = _insert_messages(room, [(send.draft(), send.origin) for send in sends])
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
    origin: str | None = None
    room: Room | None = None  # once access is checked

    def draft(self) -> Message:
        """A new, unsaved message of this send."""
        return Message(room=self.room, author=self.user, body=self.body, kind=self.kind, client_id=self.client_id)


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
    for check in (_each(_check_options), functools.partial(_find_originals, read), _each(_check_body_and_target),
                  functools.partial(_check_rooms, read), _check_rates):
        try:
            outcomes = check(sends)
        except INFRASTRUCTURE as exc:  # the database or Redis failed: every send still being checked
            outcomes = [exc] * len(sends)
        except Exception:  # one send broke the check for all (a check is missing): each alone finds which
            outcomes = [_alone(check, send) for send in sends]
        sends = _settle(sends, results, outcomes)
    return sends


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
        raise Invalid("client_id: a string of at most 64 characters.")
    # Before anything reads them: a batch's lookups carry every send's values.
    for field, text in (("client_id", send.client_id), ("room", send.slug), ("to", send.to)):
        if isinstance(text, str):
            _storable(field, text)
    if send.kind not in (Message.Kind.USER, Message.Kind.EMOTE):
        raise Invalid("kind: use 'user' or 'emote'.")


def _find_originals(read: dict, sends: list[_Send]) -> list[tuple[Message, bool] | None]:
    """A send whose client_id its author already used gets the original, not a new message.

    The same round trip reads the senders' memberships in the rooms they name, for
    `_check_rooms` (`read`): on PostgreSQL one round trip a batch fewer. A send to a user
    (`to`) names its room only once `_check_body_and_target` has found it.
    """
    wanted = {(send.user.pk, send.client_id) for send in sends if send.client_id}
    named = [(send.user, send.slug) for send in sends if send.to is None and isinstance(send.slug, str) and send.slug]
    statements = ([_originals_statement(wanted)] if wanted else []) + (
        [memberships_statement(named)] if named else [])
    rows = fetch_all(statements)
    if named:
        read["memberships"] = ({(user.pk, slug) for user, slug in named}, memberships_from_rows(rows.pop()))
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
            answers.append(Forbidden(f"client_id: '{send.client_id}' was used in a room you may no longer write to; "
                                     "send with a new client_id."))
        else:
            answers.append(_refusal(_require_writable, send.user, *access) or (original, False))
    return answers


def _check_body_and_target(send: _Send) -> None:
    send.body = _clean_body(send.body)
    if send.to is not None:  # rare enough to look up (or create) one at a time
        send.slug = direct_room(user=send.user, username=send.to).slug
    if not isinstance(send.slug, str) or not send.slug:
        raise Invalid("room: give a room slug, or `to` with a username.")


def _check_rooms(read: dict, sends: list[_Send]) -> list[Exception | None]:
    """Each sender must be a member of the room and may write there; sets `send.room`."""
    refusals = []
    for send, access in zip(sends, _member_rooms(read, [(send.user, send.slug) for send in sends])):
        if isinstance(access, Exception):
            refusals.append(access)
        else:
            send.room, membership = access
            refusals.append(_refusal(_require_writable, send.user, send.room, membership))
    return refusals


def _member_rooms(read: dict, pairs: list[tuple["User", str]]) -> list[tuple[Room, Membership] | Exception]:
    """`member_rooms_for_users`, from the memberships `_find_originals` read when it read them all."""
    named, memberships = read.get("memberships", ((), None))
    if not all((user.pk, slug) in named for user, slug in pairs):
        memberships = None  # read them now
    return member_rooms_for_users(pairs, memberships)


def _check_rates(sends: list[_Send]) -> list[Exception | None]:
    return check_send_rates([send.user.pk for send in sends])


def _insert_or_original(send: _Send) -> tuple[Message, bool] | Exception:
    message = send.draft()
    try:
        with transaction.atomic():
            _insert_messages(send.room, [(message, send.origin)])
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
    return Invalid("The database could not store this message: check its text and fields, then send it again.")


def _require_author_or_moderator(user, message: Message, what: str) -> None:
    """The author, or someone who may moderate the author in the message's room (`_require_may_moderate`)."""
    if message.author_id == user.pk:
        return
    membership = Membership.objects.filter(room_id=message.room_id, user=user).first()
    if not user.is_staff and (membership is None or not membership.can_moderate or membership.is_banned()):
        raise Forbidden(f"Only the author or a moderator can {what} this message.")
    if message.author is not None:
        author_membership = Membership.objects.filter(room_id=message.room_id, user_id=message.author_id).first()
        _require_may_moderate(user, membership, message.author, author_membership)


def _require_writable(user, room: Room, membership: Membership | None) -> None:
    """Locked rooms and muted members cannot write (send or edit); staff always can."""
    if user.is_staff:
        return
    if room.locked:
        raise RoomLocked(f"Room '{room.slug}' is locked: it is read-only.")
    now = timezone.now()
    if membership is not None and membership.is_muted(now):
        left = math.ceil((membership.muted_until - now).total_seconds())
        raise Muted(f"You are muted in '{room.slug}' for {left} more seconds.", retry_after=left)


def message_edit(*, user, message_id: int, body, origin: str | None = None, source: str = "rest") -> Message:
    message = message_for_user(user, message_id)
    _require_author_or_moderator(user, message, "edit")
    _require_writable(user, message.room, Membership.objects.filter(room_id=message.room_id, user=user).first())
    if message.deleted:
        raise Invalid("This message is deleted.")
    if message.kind == Message.Kind.SYSTEM:
        raise Forbidden("System messages cannot be edited.")
    body = _clean_body(body)
    _budget("edit", user)
    with transaction.atomic():
        before = message.body
        message.body, message.edited_at = body, timezone.now()
        message.save(update_fields=["body", "edited_at"])
        if message.author_id != user.pk:  # the original text survives in the audit log
            audit(actor=user, action="edit_message", source=source, room=message.room, target_user=message.author,
                  target_message=message, before=before, after=body)
        frame = protocol.message_updated(message_data(message))
        events.publish(events.room_group(message.room_id), events.frame_event(frame, room_id=message.room_id, origin=origin))
    return message


def message_delete(*, user, message_id: int, origin: str | None = None, source: str = "rest") -> Message:
    """Soft delete: the id stays, the body is hidden from every reader (and kept for moderation)."""
    message = message_for_user(user, message_id)
    _require_author_or_moderator(user, message, "delete")
    if message.deleted:
        return message
    _budget("delete", user, source)
    with transaction.atomic():
        message.deleted = True
        message.save(update_fields=["deleted"])
        if message.author_id != user.pk:  # authors deleting their own words is not moderation
            audit(actor=user, action="delete_message", source=source, room=message.room,
                  target_user=message.author, target_message=message)
        frame = protocol.message_deleted(message.room.slug, message.pk)
        events.publish(events.room_group(message.room_id), events.frame_event(frame, room_id=message.room_id, origin=origin))
    return message


def message_restore(*, user, message_id: int, source: str = "rest") -> Message:
    """Undo a soft delete (room moderators and staff): readers get the message back as `message.updated`."""
    message = message_for_user(user, message_id)
    membership = Membership.objects.filter(room_id=message.room_id, user=user).first()
    if not (user.is_staff or (membership is not None and membership.can_moderate and not membership.is_banned())):
        raise Forbidden("Only moderators and staff can restore a message.")
    if not message.deleted:
        return message
    with transaction.atomic():
        message.deleted = False
        message.save(update_fields=["deleted"])
        audit(actor=user, action="restore_message", source=source, room=message.room, target_user=message.author,
              target_message=message)
        frame = protocol.message_updated(message_data(message))
        events.publish(events.room_group(message.room_id), events.frame_event(frame, room_id=message.room_id))
    return message


def user_deactivate(*, actor, username: str, source: str = "admin") -> "User":
    """Staff only: the account can no longer log in, and every one of its sockets closes with 4403 at once."""
    if not actor.is_staff:
        raise Forbidden("Only staff can deactivate accounts.")
    target = User.objects.filter(username=username).first()
    if target is None:
        raise NotFound(f"No user '{username}'.")
    if target.pk == actor.pk:
        raise Invalid("username: you cannot deactivate yourself.")
    if target.is_staff and not actor.is_superuser:
        raise Forbidden("Only a superuser can deactivate staff.")
    with transaction.atomic():
        target.is_active = False
        target.save(update_fields=["is_active"])
        audit(actor=actor, action="deactivate", source=source, target_user=target)
        events.publish(events.user_group(target.pk), {"type": "chat.close", "code": protocol.CLOSE_FORBIDDEN,
                                                      "reason": "account deactivated"})
    return target


# Reports

def message_report(*, user, message_id: int, reason) -> Report:
    """Report a message the user can see to the room's moderators and staff."""
    limit = Report._meta.get_field("reason").max_length
    reason = reason.strip() if isinstance(reason, str) else ""
    if not 1 <= len(reason) <= limit:
        raise Invalid(f"reason: 1-{limit} characters, saying what is wrong with the message.")
    _storable("reason", reason)
    message = message_for_user(user, message_id)
    if message.author_id == user.pk:
        raise Invalid("You cannot report your own message: edit or delete it instead.")
    if message.kind == Message.Kind.SYSTEM or message.deleted:
        raise Invalid("Only visible user messages can be reported.")
    if Report.objects.filter(message=message, reporter=user).exists():
        raise Invalid("You have already reported this message.")
    _budget("report", user)
    try:
        with transaction.atomic():
            return Report.objects.create(message=message, reporter=user, reason=reason)
    except IntegrityError:  # reported concurrently
        raise Invalid("You have already reported this message.") from None


def report_resolve(*, actor, report_id: int, resolution: str = "", delete_message: bool = False,
                   ban_author: bool = False, source: str = "admin") -> Report:
    """Close a report (staff or the room's owner and moderators), optionally deleting the message
    and banning its author from the room."""
    report = Report.objects.select_related("message__room", "message__author").filter(pk=report_id).first()
    if report is None:
        raise NotFound(f"No report {report_id}.")
    room = report.message.room
    membership = Membership.objects.filter(room=room, user=actor).filter(active_membership_q()).first()
    _require_moderator(actor, room, membership)
    with transaction.atomic():
        # Locked and re-read: two moderators resolving at once must not both act.
        if Report.objects.select_for_update().filter(pk=report.pk).values_list("resolved_at", flat=True).get():
            raise Invalid(f"Report {report_id} is already resolved.")
        if delete_message:
            message_delete(user=actor, message_id=report.message_id, source=source)
        if ban_author and report.message.author is not None:
            member_ban(actor=actor, slug=room.slug, username=report.message.author.username,
                       reason=resolution or report.reason, source=source)
        report.resolved_at, report.resolved_by, report.resolution = timezone.now(), actor, resolution
        report.save(update_fields=["resolved_at", "resolved_by", "resolution"])
        audit(actor=actor, action="report_resolve", source=source, room=room, target_user=report.message.author,
              target_message=report.message, reason=resolution, report_id=report.pk, deleted_message=delete_message,
              banned_author=ban_author)
    return report


def read_mark(*, user, slug: str, message_id: int, origin: str | None = None) -> Membership:
    """Move the read marker forward (never back, so a stale device cannot undo another's reads)."""
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 0:
        raise Invalid("message_id: a non-negative integer.")
    room, membership = member_room_for_user(user, slug)
    # Capped at the newest message, so a bogus or foreign id cannot mark future messages read.
    message_id = min(message_id, last_message_id(room) or 0)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        if message_id > membership.last_read_id:
            membership.last_read_id = message_id
            membership.save(update_fields=["last_read_id"])
        frame = protocol.unread(room.slug, unread_count(membership), membership.last_read_id)
        events.publish(events.user_group(user.pk), events.frame_event(frame, room_id=room.pk, origin=origin))
    return membership


# Notices

NOTICE_LEVELS = ("info", "warning")


def notice_send(*, text: str, level: str = "info", room: str | None = None, actor=None) -> dict:
    """Send a `notice` frame to every open connection on every process, or to those subscribed to `room`.

    Returns the frame. Nothing is stored: a client that is not connected misses it. Callable
    from any synchronous code; inside a transaction it goes out on commit. `actor` is the
    staff user sending it, or None from the command line.
    """
    if actor is not None and not actor.is_staff:
        raise Forbidden("Only staff can send notices.")
    if not isinstance(text, str) or not text.strip():
        raise Invalid("text: must be a non-empty string.")
    if len(text) > settings.CHAT_MAX_BODY:
        raise Invalid(f"text: {len(text)} characters; the limit is {settings.CHAT_MAX_BODY}.")
    _storable("text", text)  # every connection encodes it
    if level not in NOTICE_LEVELS:
        raise Invalid(f"level: use {' or '.join(map(repr, NOTICE_LEVELS))}.")
    frame = {"type": "notice", "level": level, "text": text}
    if room is None:
        group, room_id = events.everyone_group(), None
    else:
        target = Room.objects.filter(slug=room).first() if isinstance(room, str) else None
        if target is None:
            raise NotFound(f"No room '{room}'.")
        if target.archived:
            raise Gone(f"Room '{room}' is archived.")
        frame["room"] = target.slug
        group, room_id = events.room_group(target.pk), target.pk
    events.publish(group, events.frame_event(frame, room_id=room_id))
    logger.info("%s notice to %s, sent by %s", level, room or "everyone", actor or "code (no user)")
    return frame
