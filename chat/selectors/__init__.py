"""Reads. `room_for_user` is the one access rule, used by the API, the consumer and the services;
the room's message reads are in `messages`."""

from django.contrib.auth import get_user_model
from django.db.models import Case, Count, Exists, F, IntegerField, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce, Lower
from django.utils.translation import gettext_lazy as _

from .. import sql
from ..errors import ChatError, Forbidden, Gone, NotFound
from ..models import (
    Membership,
    Message,
    Room,
    Upload,
    active_membership_q,
    effective_notify,
    mentioning_q,
    unread_mentions_q,
    unread_messages_q,
)

# The room's message reads (`messages`), re-exported: callers use `selectors.<name>` for every read.
from .messages import (
    changed_since as changed_since,
)
from .messages import (
    changes_since as changes_since,
)
from .messages import (
    last_message_id as last_message_id,
)
from .messages import (
    last_message_id_for as last_message_id_for,
)
from .messages import (
    message_history as message_history,
)
from .messages import (
    message_page_around as message_page_around,
)
from .messages import (
    messages_since as messages_since,
)

User = get_user_model()


def room_for_user(user, slug: str) -> tuple[Room, Membership | None]:
    """Return the room and the user's active membership (None if not a member).

    Raises NotFound (no such room), Gone (archived), Forbidden (private or direct room the
    user is not in, or banned). Staff see every room.
    """
    # One query for a member (the common case: every join and request in a room), two
    # otherwise; the first by hand, as for a batch of sends (`sql.memberships`).
    memberships = sql.memberships_from_rows(sql.fetch_all([sql.memberships([(user, slug)])])[0])
    membership = memberships[0] if memberships else None
    room = membership.room if membership is not None else Room.objects.filter(slug=slug).first()
    return _check_access(user, slug, room, membership)


# (with an expiry, with a reason): the refusal a banned member gets.
BANNED = {
    (False, False): _("You are banned from '%(slug)s'."),
    (True, False): _("You are banned from '%(slug)s' until %(until)s."),
    (False, True): _("You are banned from '%(slug)s'. Reason: %(reason)s"),
    (True, True): _("You are banned from '%(slug)s' until %(until)s. Reason: %(reason)s"),
}


def _check_access(user, slug: str, room: Room | None, membership: Membership | None) -> tuple[Room, Membership | None]:
    """`room_for_user` once the room (None: no such room) and the user's membership in it are loaded."""
    # A direct room's slug names its two users: to anyone else it answers as if it did not exist.
    if room is None or (room.kind == Room.Kind.DIRECT and membership is None and not user.is_staff):
        raise NotFound(_("No room '%(slug)s'."), slug=slug)
    if room.archived:
        raise Gone(_("Room '%(slug)s' is archived."), slug=slug)
    if membership is not None and membership.is_banned():
        until = membership.banned_until.isoformat() if membership.banned_until else None
        raise Forbidden(
            BANNED[until is not None, bool(membership.ban_reason)], slug=slug, until=until, reason=membership.ban_reason
        )
    if membership is None and room.kind != Room.Kind.PUBLIC and not user.is_staff:
        raise Forbidden(_("Room '%(slug)s' is private: a member must invite you."), slug=slug)
    return room, membership


def member_room_for_user(user, slug: str) -> tuple[Room, Membership]:
    """As `room_for_user`, and the user must be a member."""
    return _require_member(slug, *room_for_user(user, slug))


def _require_member(slug: str, room: Room, membership: Membership | None) -> tuple[Room, Membership]:
    if membership is None:
        raise Forbidden(_("You are not a member of '%(slug)s': join it first."), slug=slug)
    return room, membership


def member_rooms_for_users(
    pairs: list[tuple[User, str]], memberships: list[Membership] | None = None
) -> list[tuple[Room, Membership] | ChatError]:
    """`member_room_for_user` for each (user, slug): the room and membership, or the error it raises.

    One query when each slug has a member among the users (a batch of sends), two otherwise.
    `memberships`: what `sql.memberships` read for these pairs (or more), if read already.
    """
    if not pairs:
        return []
    slugs = {slug for _, slug in pairs}
    if memberships is None:
        memberships = sql.memberships_from_rows(sql.fetch_all([sql.memberships(pairs)])[0])
    by_pair = {(m.user_id, m.room.slug): m for m in memberships}
    rooms = {m.room.slug: m.room for m in by_pair.values()}
    if missing := slugs - rooms.keys():
        rooms.update((room.slug, room) for room in Room.objects.filter(slug__in=missing))
    results = []
    for user, slug in pairs:
        membership = by_pair.get((user.pk, slug))
        try:
            room = membership.room if membership is not None else rooms.get(slug)
            results.append(_require_member(slug, *_check_access(user, slug, room, membership)))
        except ChatError as exc:
            results.append(exc)
    return results


def message_for_user(user, message_id: int) -> Message:
    """A message in a room the user may see, with room and author loaded."""
    return message_and_membership(user, message_id)[0]


def message_and_membership(user, message_id: int) -> tuple[Message, Membership | None]:
    """`message_for_user`, and the user's membership of its room (None if not a member)."""
    message = Message.objects.select_related("room", "author").filter(pk=message_id).first()
    if message is None:
        raise NotFound(_("No message %(id)s."), id=message_id)
    try:
        _room, membership = room_for_user(user, message.room.slug)
    except Gone:
        raise
    except NotFound:  # a direct room of others: its slug must not show through
        raise NotFound(_("No message %(id)s."), id=message_id) from None
    return message, membership


def direct_slug(user_id: int, other_id: int) -> str:
    """The slug of the direct room between two users: `dm-<lower id>-<higher id>`."""
    low, high = sorted([user_id, other_id])
    return f"dm-{low}-{high}"


def direct_room_for_user(user, username: str) -> Room:
    """The direct room between `user` and `username`, if it exists; never creates one.

    A missing user and a missing room raise the same NotFound, so that reading does not
    tell whether a user exists.
    """
    other = User.objects.filter(username=username).first()
    room = None
    if other is not None and other.pk != user.pk:
        room = Room.objects.filter(slug=direct_slug(user.pk, other.pk), kind=Room.Kind.DIRECT).first()
    if room is None:
        raise NotFound(
            _("No direct room with '%(username)s' yet: POST to this URL (or send them a message) to start one."),
            username=username,
        )
    return room


def searchable_room_ids(user):
    """The ids of the rooms search looks in (PROTOCOL.md, "Search": the rooms the caller is a
    member of): an active membership of a room that is not archived; staff, every room that is
    not archived. Unlike `readable_rooms`, public rooms one has not joined are left out."""
    if user.is_staff:
        return Room.objects.filter(archived=False).values_list("id", flat=True)
    return Membership.objects.filter(active_membership_q(), user=user, room__archived=False).values_list(
        "room_id", flat=True
    )


def _last_message_id():
    return Subquery(
        Message.objects.filter(room=OuterRef("pk")).order_by("-id").values("id")[:1], output_field=IntegerField()
    )


def _count_of(messages_q):
    """The count of the room's (`OuterRef("pk")`) messages matching `messages_q`, 0 when none."""
    return Coalesce(
        Subquery(
            Message.objects.filter(messages_q, room=OuterRef("pk"))
            .order_by()
            .values("room")
            .annotate(n=Count("id"))
            .values("n"),
            output_field=IntegerField(),
        ),
        Value(0),
    )


def member_room_ids(user) -> list[tuple[int, str]]:
    """(id, slug) of every unarchived room the user (or user id) is an active member of."""
    return sql.fetch_all([sql.member_rooms("r.id, r.slug", getattr(user, "pk", user))])[0]


def _with_user_state(rooms, user):
    """Annotate `member`, `role`, `last_message_id`, `notify_choice` (the stored `notify`), and
    `unread` and `mentions` (0 outside the rooms one belongs to)."""
    mine = Membership.objects.filter(room=OuterRef("pk"), user=user)
    return rooms.annotate(
        member=Exists(mine.filter(active_membership_q())),
        role=Subquery(mine.values("role")[:1]),
        last_read=Subquery(mine.values("last_read_id")[:1]),
        notify_choice=Subquery(mine.values("notify")[:1]),
        joined=Subquery(mine.values("joined_at")[:1]),
        last_message_id=_last_message_id(),
    ).annotate(
        unread=Case(
            When(member=True, then=_count_of(unread_messages_q(user.pk, OuterRef("last_read")))), default=Value(0)
        ),
        mentions=Case(
            When(member=True, then=_count_of(unread_mentions_q(user.pk, OuterRef("last_read"), OuterRef("joined")))),
            default=Value(0),
        ),
    )


def room_state(user, room: Room) -> Room:
    """`room` annotated as `rooms_for_user` annotates; the caller has checked access (`room_for_user`)."""
    return _with_user_state(Room.objects.filter(pk=room.pk), user).get()


def rooms_for_user(user, *, member_only: bool = False):
    """Rooms the user can see (public ones and their own), with `unread`, `member`, `role`, `last_message_id`."""
    rooms = _with_user_state(Room.objects.filter(archived=False), user)
    if member_only:
        return rooms.filter(member=True)
    banned_here = Membership.objects.filter(room=OuterRef("pk"), user=user).exclude(active_membership_q())
    return rooms.filter(Q(kind=Room.Kind.PUBLIC) | Q(member=True)).exclude(Exists(banned_here))


def room_summaries(user) -> list[dict]:
    """The `rooms` list of the `hello` frame: `rooms_for_user(user, member_only=True)`, by hand
    (`sql.room_summaries`): it runs for every new connection. `notify` is the effective setting."""
    [rows] = sql.fetch_all([sql.room_summaries(user.pk)])
    return [
        {
            "slug": slug,
            "name": name,
            "kind": kind,
            "unread": unread,
            "mentions": mentions,
            "notify": effective_notify(notify, kind),
            "last_message_id": last_id,
            "seq": seq,
        }
        for slug, name, kind, last_id, unread, seq, mentions, notify in rows
    ]


def message_thread(
    user, message_id: int, *, after: int | None = None, limit: int = 50
) -> tuple[Message, list[Message], bool]:
    """The thread of message `message_id`: its root (the message itself unless it is a reply),
    one keyset page of the root's replies after id `after`, ascending by id (deleted ones
    included, shown as deleted), and whether more follow. A constant number of queries.

    A message in a room the user may not read is NotFound, as a missing one: a message id
    must not tell that a private room exists. An archived room stays Gone.
    """
    try:
        message = message_for_user(user, message_id)
    except Forbidden:
        raise NotFound(_("No message %(id)s."), id=message_id) from None
    root = message
    if message.thread_id is not None:
        root = Message.objects.select_related("author").get(pk=message.thread_id)
        root.room = message.room  # a reply's thread is in its room
    replies = Message.objects.filter(thread=root).select_related("author").order_by("id")
    if after is not None:
        replies = replies.filter(id__gt=after)
    rows = list(replies[: limit + 1])
    for reply in rows:
        reply.room = root.room
    return root, rows[:limit], len(rows) > limit


def users_with_prefix(prefix: str, *, limit: int = 10) -> list[User]:
    """Active users whose username starts with `prefix` (case-insensitive), by username ignoring case."""
    return list(
        User.objects.filter(is_active=True, username__istartswith=prefix).order_by(Lower("username"), "username")[
            :limit
        ]
    )


def room_members(room: Room) -> list[Membership]:
    return list(
        Membership.objects.filter(room=room)
        .filter(active_membership_q())
        .select_related("user")
        .order_by("joined_at", "id")
    )


def room_member_user_ids(room_id: int) -> list[int]:
    return list(
        Membership.objects.filter(room_id=room_id).filter(active_membership_q()).values_list("user_id", flat=True)
    )


def usernames(user_ids) -> dict[int, str]:
    return dict(User.objects.filter(pk__in=list(user_ids)).values_list("id", "username"))


def unread_count(membership: Membership) -> int:
    return unread_counts(membership)[0]


def unread_counts(membership: Membership) -> tuple[int, int]:
    """The member's unread messages in the room, and how many of them mention them (one query)."""
    counts = Message.objects.filter(
        unread_messages_q(membership.user_id, membership.last_read_id), room_id=membership.room_id
    ).aggregate(unread=Count("id"), mentions=Count("id", filter=mentioning_q(membership.user_id, membership.joined_at)))
    return counts["unread"], counts["mentions"]


def mentions_for_user(user, *, before: int | None = None, limit: int = 50) -> tuple[list[Message], bool]:
    """The mentions inbox: one keyset page of the messages that mention the user (`mentioning_q`)
    in the rooms they may read (`readable_rooms`; `@room` only where they are a member), not
    deleted and not their own, ascending by id, newest page first (`before` pages back), and
    whether more lie before it."""
    joined = Membership.objects.filter(active_membership_q(), room_id=OuterRef("room_id"), user=user)
    found = (
        Message.objects.annotate(joined=Subquery(joined.values("joined_at")[:1]))
        .filter(mentioning_q(user.pk, F("joined")), room_id__in=readable_rooms(user).values("id"), deleted=False)
        .exclude(author_id=user.pk)
        .select_related("room", "author")
    )
    if before is not None:
        found = found.filter(id__lt=before)
    rows = list(found.order_by("-id")[: limit + 1])
    return list(reversed(rows[:limit])), len(rows) > limit


def readable_rooms(user):
    """The unarchived rooms the user may read, `room_for_user`'s rule for many rooms: public ones
    unless banned there, and their own; staff every room."""
    rooms = Room.objects.filter(archived=False)
    if user.is_staff:
        return rooms
    mine = Membership.objects.filter(active_membership_q(), user=user).values("room_id")
    banned_here = Membership.objects.filter(room=OuterRef("pk"), user=user).exclude(active_membership_q())
    return rooms.filter(Q(kind=Room.Kind.PUBLIC) | Q(pk__in=mine)).exclude(Exists(banned_here))


def member_usernames(room_id: int) -> dict[int, str]:
    """user id -> username of the room's active members."""
    return dict(
        Membership.objects.filter(room_id=room_id)
        .filter(active_membership_q())
        .values_list("user_id", "user__username")
    )


def upload_for_user(user, upload_id: int) -> Upload:
    """An upload `user` may download, else NotFound (whatever the reason, so that nothing shows
    through): attached to a message that is not deleted, in a room the user may read; unattached,
    to its uploader only. Checked on every request."""
    missing = NotFound(_("No file %(id)s."), id=upload_id)
    upload = Upload.objects.select_related("room", "message").filter(pk=upload_id, purged=False).first()
    if upload is None or (upload.message is None and upload.uploader_id != user.pk):
        raise missing
    if upload.message is not None and upload.message.deleted:
        raise missing
    try:
        room_for_user(user, upload.room.slug)
    except ChatError:
        raise missing from None
    return upload
