"""chat/sql.py: each hand-written statement against the ORM query it stands for, on the test
database (SQLite, or PostgreSQL with DATABASE_URL): the same rows, values and types."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from chat import selectors, sql
from chat.models import Membership, Mention, Message, Room, active_membership_q, unread_mentions_q, unread_messages_q


def values(instance) -> list[tuple]:
    """Each concrete field's value and its type, as loaded."""
    return [
        (field.attname, getattr(instance, field.attname), type(getattr(instance, field.attname)))
        for field in instance._meta.concrete_fields
    ]


@pytest.fixture
def rooms(alice):
    """Rooms in each state, alice a member of each in a different state."""
    now = timezone.now()
    made = {
        slug: Room.objects.create(slug=slug, name=slug.title(), topic=f"about {slug}", **fields)
        for slug, fields in [
            ("plain", {}),
            ("locked", {"locked": True}),
            ("old", {"archived": True}),
            ("banned", {}),
            ("forever", {}),
            ("forgiven", {}),
            ("private", {"kind": "private"}),
        ]
    }
    states = {
        "plain": {"role": "owner", "last_read_id": 7, "muted_until": now + timedelta(minutes=5)},
        "locked": {"role": "moderator"},
        "old": {},
        "banned": {"banned": True, "banned_until": now + timedelta(hours=1), "ban_reason": "spam"},
        "forever": {"banned": True},
        "forgiven": {"banned": True, "banned_until": now - timedelta(hours=1)},
        "private": {},
    }
    for slug, fields in states.items():
        Membership.objects.create(room=made[slug], user=alice, **fields)
    return made


def test_memberships_load_what_the_orm_loads(alice, bob, rooms):
    Membership.objects.create(room=rooms["plain"], user=bob)
    pairs = [(alice, slug) for slug in rooms] + [(bob, "plain"), (bob, "private")]
    by_hand = sql.memberships_from_rows(sql.fetch_all([sql.memberships(pairs)])[0])
    orm = Membership.objects.select_related("room").filter(room__slug__in=list(rooms), user__in=[alice, bob])
    key = lambda m: m.pk  # noqa: E731
    assert [values(m) for m in sorted(by_hand, key=key)] == [values(m) for m in sorted(orm, key=key)]
    assert [values(m.room) for m in sorted(by_hand, key=key)] == [values(m.room) for m in sorted(orm, key=key)]
    assert len(by_hand) == 8


def test_member_rooms_apply_the_ban_rule_as_the_orm_does(alice, rooms):
    """`sql.member_rooms`, `active_membership_q` and `Membership.is_banned`: one ban rule."""
    by_hand = selectors.member_room_ids(alice)
    orm = list(
        Membership.objects.filter(active_membership_q(), user=alice, room__archived=False)
        .order_by("room__slug")
        .values_list("room_id", "room__slug")
    )
    in_python = sorted(
        (m.room_id, m.room.slug)
        for m in Membership.objects.filter(user=alice).select_related("room")
        if not m.is_banned() and not m.room.archived
    )
    assert by_hand == orm == sorted(in_python, key=lambda row: row[1])
    assert [slug for _, slug in by_hand] == ["forgiven", "locked", "plain", "private"]


def test_unread_is_counted_alike_everywhere(alice, bob, make_user):
    """`models.unread_messages_q` (the count of the `unread` frame and of the room list) and
    `sql.room_summaries` (the `hello` frame): after the marker, not deleted, not one's own, and
    a message whose author is gone counts."""
    room = Room.objects.create(slug="room", name="Room")
    gone = make_user("gone")
    post = lambda author, **fields: Message.objects.create(room=room, author=author, body="x", **fields)  # noqa: E731
    read = post(bob)
    post(alice)  # one's own
    post(bob)
    post(bob, deleted=True)
    post(None, kind="system")
    post(gone)
    gone.delete()  # the author is gone: author_id is NULL
    membership = Membership.objects.create(room=room, user=alice, last_read_id=read.pk)
    orm = Message.objects.filter(unread_messages_q(alice.pk, read.pk), room=room).count()
    [summary] = selectors.room_summaries(alice)
    [listed] = selectors.rooms_for_user(alice, member_only=True)
    assert orm == selectors.unread_count(membership) == summary["unread"] == listed.unread == 3


def test_unread_mentions_are_counted_alike_everywhere(alice, bob, carol, make_user):
    """`models.unread_mentions_q` (the `unread` frame, the room list, the membership) and
    `sql.room_summaries` (the `hello` frame): unread messages that name the member (a `Mention`
    row) or the room, each once, neither deleted nor their own."""
    room = Room.objects.create(slug="room", name="Room")
    gone = make_user("gone")

    def post(author, named=(), **fields):
        message = Message.objects.create(room=room, author=author, body="x", **fields)
        for user in named:
            Mention.objects.create(message=message, user=user, room=room)
        return message

    membership = Membership.objects.create(room=room, user=alice, last_read_id=0)
    read = post(bob, [alice])  # read already
    post(bob, mentions_room=True, created_at=membership.joined_at - timedelta(seconds=1))  # before alice came
    post(bob, [alice])  # counts
    post(bob, mentions_room=True)  # counts
    post(bob, [alice], mentions_room=True)  # counts once
    post(bob)
    post(bob, [carol])
    post(bob, [alice], deleted=True)
    post(alice, [alice], mentions_room=True)  # one's own
    post(gone, [alice])  # counts: the author is gone
    gone.delete()
    Membership.objects.filter(pk=membership.pk).update(last_read_id=read.pk)
    membership.refresh_from_db()
    orm = Message.objects.filter(unread_mentions_q(alice.pk, read.pk, membership.joined_at), room=room).count()
    [summary] = selectors.room_summaries(alice)
    [listed] = selectors.rooms_for_user(alice, member_only=True)
    assert orm == selectors.unread_counts(membership)[1] == summary["mentions"] == listed.mentions == 4
    assert selectors.unread_counts(membership)[0] == summary["unread"] == 7


def test_alert_members_are_those_the_orm_finds(alice, bob, carol, make_user):
    """`sql.alert_members` against its ORM query, over every notify setting, banned members
    (lifted or not), inactive users, and rooms mentioned as a whole, direct and group."""
    now = timezone.now()
    rooms = {
        slug: Room.objects.create(slug=slug, name=slug, kind=kind)
        for slug, kind in [("whole", "public"), ("direct", "direct"), ("group", "public"), ("elsewhere", "public")]
    }
    dave, erin = make_user("dave"), make_user("erin", is_active=False)
    states = [
        {"notify": ""},
        {"notify": "all"},
        {"notify": "mentions"},
        {"notify": "none"},
        {"notify": "all", "banned": True},
        {"notify": "all", "banned": True, "banned_until": now - timedelta(minutes=1)},
    ]
    for room in rooms.values():
        for user, state in zip((alice, bob, carol, dave, erin, make_user(f"x-{room.slug}")), states):
            Membership.objects.create(room=room, user=user, **state)
    ids = {slug: [room.pk] for slug, room in rooms.items()}
    named = [alice.pk, carol.pk, dave.pk]
    counts = []
    for whole, direct, group, names in [
        (ids["whole"], ids["direct"], ids["group"], named),
        ([], ids["direct"], ids["group"], []),
        (ids["whole"], [], [], named),
        ([], [], ids["group"], named),
        ([], [], [], []),
    ]:
        not_none = ~Q(notify="none")
        orm = Membership.objects.filter(active_membership_q(), user__is_active=True).filter(
            Q(room_id__in=whole) & not_none
            | Q(room_id__in=direct) & (Q(notify__in=["all", ""]) | Q(user_id__in=names) & not_none)
            | Q(room_id__in=group) & (Q(notify="all") | Q(user_id__in=names) & not_none)
        )
        [by_hand] = sql.fetch_all([sql.alert_members(whole=whole, direct=direct, group=group, named=names)])
        assert sorted(by_hand) == sorted(orm.values_list("room_id", "user_id", "notify"))
        counts.append(len(by_hand))
    assert counts == [12, 5, 4, 4, 0]


def test_originals_find_what_the_orm_finds(alice, bob):
    room = Room.objects.create(slug="room", name="Room")
    for author, client_id in [(alice, "a-1"), (alice, "a-2"), (alice, ""), (bob, "a-1"), (bob, "b-1"), (bob, "")]:
        Message.objects.create(room=room, author=author, body="x", client_id=client_id)
    wanted = {(alice.pk, "a-1"), (alice.pk, ""), (bob.pk, "b-1"), (bob.pk, "missing")}
    authors, client_ids = {author for author, _ in wanted}, {client_id for _, client_id in wanted}
    orm = Message.objects.filter(author_id__in=authors, client_id__in=client_ids).exclude(client_id="")
    by_hand = sql.fetch_all([sql.originals(wanted)])[0]
    assert sorted(by_hand) == sorted(orm.values_list("id", "author_id", "client_id"))
    assert len(by_hand) == 3  # bob's "a-1" too: the caller drops it


@pytest.mark.django_db(transaction=True)
def test_the_batch_insert_stores_what_the_orm_stores(alice, bob):
    one, two, empty = (Room.objects.create(slug=slug, name=slug) for slug in ("one", "two", "empty"))
    Message.objects.create(room=one, author=bob, body="before")
    at = timezone.now()

    def drafts(prefix=""):
        return [
            Message(
                room=room,
                author=author,
                body=body,
                kind=kind,
                client_id=client_id and prefix + client_id,
                created_at=at,
            )
            for room, author, body, kind, client_id in [
                (one, alice, "first", "user", "c-1"),
                (two, bob, "second", "emote", ""),
                (one, None, "third", "system", ""),
                (two, alice, "fourth ☃", "user", "c-2"),
            ]
        ]

    newest_orm = {room.pk: room.messages.aggregate(Max("id"))["id__max"] for room in (one, two, empty)}
    seq_before = {room.pk: room.change_seq for room in Room.objects.filter(pk__in=[one.pk, two.pk, empty.pk])}
    with transaction.atomic():
        newest, written, roots, _ = sql.lock_rooms_and_insert([two.pk, one.pk, empty.pk], drafts())
    ids = [pk for pk, _seq in written]
    assert newest == newest_orm
    assert ids == sorted(ids)
    assert roots == []
    # Each room's messages take its next change sequence values, in order; the counter moves on.
    assert [seq for _pk, seq in written] == [
        seq_before[one.pk] + 1,
        seq_before[two.pk] + 1,
        seq_before[one.pk] + 2,
        seq_before[two.pk] + 2,
    ]
    assert list(Message.objects.filter(pk__in=ids).order_by("id").values_list("seq", flat=True)) == [
        seq for _pk, seq in written
    ]
    counters = dict(Room.objects.filter(pk__in=[one.pk, two.pk, empty.pk]).values_list("pk", "change_seq"))
    assert counters == {one.pk: seq_before[one.pk] + 2, two.pk: seq_before[two.pk] + 2, empty.pk: seq_before[empty.pk]}
    with transaction.atomic():
        orm_ids = [message.pk for message in Message.objects.bulk_create(drafts("orm-"))]
    fields = ["room_id", "author_id", "body", "kind", "created_at", "edited_at", "deleted"]
    assert list(Message.objects.filter(pk__in=ids).order_by("id").values(*fields)) == list(
        Message.objects.filter(pk__in=orm_ids).order_by("id").values(*fields)
    )
    assert list(Message.objects.filter(pk__in=ids).order_by("id").values_list("client_id", flat=True)) == [
        "c-1",
        "",
        "",
        "c-2",
    ]


def test_replies_count_on_their_root_after_the_replies_seq(alice):
    room = Room.objects.create(slug="room", name="Room")
    with transaction.atomic():
        _, [(root_id, root_seq)], _, _ = sql.lock_rooms_and_insert(
            [room.pk], [Message(room=room, author=alice, body="root")]
        )
    replies = [
        Message(room=room, author=alice, body=f"reply {n}", reply_to_id=root_id, thread_id=root_id) for n in range(2)
    ]
    with transaction.atomic():
        _, written, root_seqs, _ = sql.lock_rooms_and_insert([room.pk], replies, {root_id: 2})
    assert [seq for _pk, seq in written] == [root_seq + 1, root_seq + 2]
    assert root_seqs == [root_seq + 3]
    root = Message.objects.get(pk=root_id)
    assert (root.reply_count, root.seq) == (2, root_seq + 3)
    assert Room.objects.get(pk=room.pk).change_seq == root_seq + 3


def test_next_seq_counts_on_from_the_batch_insert(alice):
    room = Room.objects.create(slug="room", name="Room")
    with transaction.atomic():
        _, [(_pk, seq)], _, _ = sql.lock_rooms_and_insert([room.pk], [Message(room=room, author=alice, body="one")])
    with transaction.atomic():
        assert sql.next_seq(room.pk) == seq + 1
        assert sql.next_seq(room.pk) == seq + 2
    room.refresh_from_db()
    assert room.change_seq == seq + 2


def test_the_row_estimate_is_the_count_once_analysed(alice):
    room = Room.objects.create(slug="room", name="Room")
    Message.objects.bulk_create([Message(room=room, author=alice, body=str(n)) for n in range(25)])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Message._meta.db_table}")
        assert sql.estimated_rows(Message) == Message.objects.count() == 25
    else:  # no estimate: the admin counts exactly
        assert sql.estimated_rows(Message) is None


def test_ping_answers_and_fails_with_the_database(db, monkeypatch, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert sql.ping() is None

    class Down:
        def cursor(self):
            raise ConnectionError("connection refused")

    monkeypatch.setattr(sql, "connection", Down())
    with pytest.raises(ConnectionError):
        sql.ping()


def test_the_sqlite_page_cache_is_set_for_the_block_then_restored(db, django_assert_num_queries):
    def cache_size():
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size")
            return cursor.fetchone()[0]

    if connection.vendor != "sqlite":
        with django_assert_num_queries(0), sql.sqlite_page_cache(connection.alias, 128):
            pass
        return
    before = cache_size()
    with sql.sqlite_page_cache(connection.alias, 128):
        assert cache_size() == -128
    assert cache_size() == before != -128
