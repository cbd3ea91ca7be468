"""Rooms: create, update (name, topic, lock), archive, and the direct room of two users."""

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _

from .. import events, protocol, system_text
from ..errors import Forbidden, Invalid, NotFound
from ..models import Membership, Message, Room
from ..selectors import direct_slug, room_for_user
from ._common import DIRECT_SLUG_RE, audit, budget, require_moderator, storable, subscribe
from ._inserts import insert_message

User = get_user_model()


def _room_frame(room: Room) -> dict:
    return protocol.room_updated(
        room=room.slug, name=room.name, topic=room.topic, locked=room.locked, archived=room.archived
    )


def _clean_name(name) -> str:
    limit = Room._meta.get_field("name").max_length
    name = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= limit:
        raise Invalid(_("name: 1-%(limit)s characters, not only spaces."), limit=limit)
    return storable("name", name)


def _clean_topic(topic) -> str:
    limit = Room._meta.get_field("topic").max_length
    if not isinstance(topic, str) or len(topic) > limit:
        raise Invalid(_("topic: a string of at most %(limit)s characters."), limit=limit)
    return storable("topic", topic)


def room_create(
    *, user, name: str, slug: str = "", kind: str = Room.Kind.PUBLIC, topic: str = "", source: str = "rest"
) -> Room:
    """Create a public or private room; the creator becomes its owner."""
    if kind not in (Room.Kind.PUBLIC, Room.Kind.PRIVATE):
        raise Invalid(_("kind: use 'public' or 'private'; direct rooms are created by sending to a user."))
    name, topic = _clean_name(name), _clean_topic(topic)
    if not slug and not (slug := slugify(name).replace("_", "-")[:50].strip("-")):
        raise Invalid(
            _("slug: could not derive one from the name; give a slug of lowercase letters, digits and hyphens.")
        )
    if not protocol.SLUG_RE.fullmatch(slug):
        raise Invalid(_("slug: use 1-50 lowercase letters, digits or hyphens."))
    if DIRECT_SLUG_RE.fullmatch(slug):
        raise Invalid(_("slug: '%(slug)s' is reserved for direct rooms; choose another."), slug=slug)
    taken = Invalid(_("slug: '%(slug)s' is taken; choose another."), slug=slug)
    if Room.objects.filter(slug=slug).exists():  # before the budget: a taken slug costs none of it
        raise taken
    budget("room", user, source)
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, name=name, kind=kind, topic=topic, created_by=user)
            Membership.objects.create(room=room, user=user, role=Membership.Role.OWNER)
            subscribe(user.pk, room, since=0)
    except IntegrityError:
        raise taken from None
    return room


def room_update(
    *,
    user,
    slug: str,
    name: str | None = None,
    topic: str | None = None,
    locked: bool | None = None,
    source: str = "rest",
) -> Room:
    room, membership = room_for_user(user, slug)
    require_moderator(user, room, membership)
    name = None if name is None else _clean_name(name)
    topic = None if topic is None else _clean_topic(topic)
    budget("update", user, source)
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
            if topic:
                body = system_text.write("topic_set", user=user.username, topic=topic)
            else:
                body = system_text.write("topic_cleared", user=user.username)
            insert_message(room=room, author=user, kind=Message.Kind.SYSTEM, body=body)
        events.publish(events.room_group(room.pk), events.frame_event(_room_frame(room), room_id=room.pk))
    return room


def room_archive(*, user, slug: str, source: str = "rest") -> Room:
    """Archive: the room leaves every list and its connections are told so."""
    room, membership = room_for_user(user, slug)
    if not (user.is_staff or (membership is not None and membership.role == Membership.Role.OWNER)):
        raise Forbidden(_("Only the owner of '%(slug)s' or staff can archive it."), slug=slug)
    with transaction.atomic():
        room.archived = True
        room.save(update_fields=["archived"])
        audit(actor=user, action="archive", source=source, room=room)
        events.publish(events.room_group(room.pk), events.archived_event(room.pk, _room_frame(room)))
    return room


def direct_room(*, user, username: str) -> Room:
    """The direct room between `user` and `username`, created (with both memberships) on first use."""
    other = User.objects.filter(username=username, is_active=True).first()
    if other is None:
        raise NotFound(_("No user '%(username)s'."), username=username)
    if other.pk == user.pk:
        raise Invalid(_("to: you cannot send a direct message to yourself."))
    low, high = sorted([user, other], key=lambda u: u.pk)
    slug = direct_slug(low.pk, high.pk)
    room = Room.objects.filter(slug=slug).first()
    if room is not None:
        return room
    budget("direct", user)
    try:
        with transaction.atomic():
            room = Room.objects.create(slug=slug, name=f"{low.username}, {high.username}", kind=Room.Kind.DIRECT)
            Membership.objects.bulk_create([Membership(room=room, user=low), Membership(room=room, user=high)])
            subscribe(low.pk, room, since=0)
            subscribe(high.pk, room, since=0)
    except IntegrityError:  # created concurrently
        room = Room.objects.get(slug=slug)
    return room
