"""Every statement written by hand, and the helper that runs them.

Each is the hot-path (or backend-specific) twin of the ORM query its docstring names, kept
because the ORM took longer to build it than the database took to run it (figures in
bench/README.md), and names the test (most in tests/test_sql.py) that runs both on the test
database (SQLite, or PostgreSQL with DATABASE_URL) and requires the same result. The rules
they repeat (who is banned, what is unread) are written once, in chat/models.py.
"""

import contextlib
import functools

from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

from .models import Membership, Mention, Message, Room

Statement = tuple[str, list]


def placeholders(values: list) -> str:
    """The `%s, %s, ...` of an SQL IN list of `values`."""
    return ", ".join(["%s"] * len(values))


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def fetch_all(statements: list[Statement]) -> list[list[tuple]]:
    """The rows of each (sql, params) statement, run in order; each returns rows (SELECT, or
    RETURNING).

    On PostgreSQL the statements go as one query string, one round trip: the hot paths run
    a few small statements each, and waiting for the database took longer than running them.
    Outside a transaction PostgreSQL runs the string as one transaction of its own.
    """
    if not statements:
        return []
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":  # SQLite refuses several statements at once; it has no round trips
            results = []
            for sql, params in statements:
                cursor.execute(sql, params)
                results.append(cursor.fetchall())
            return results
        cursor.execute("; ".join(sql for sql, _ in statements), [value for _, params in statements for value in params])
        results = [cursor.fetchall()]
        while cursor.nextset():
            results.append(cursor.fetchall())
        return results


# Memberships and their rooms (every batch of sends, every join and request in a room)


def memberships(pairs: list[tuple]) -> Statement:
    """The (user, slug) pairs' memberships with their rooms, loaded by `memberships_from_rows`.

    ORM: `Membership.objects.select_related("room").filter(room__slug__in=slugs, user__in=users)`.
    Pinned by `test_sql.py::test_memberships_load_what_the_orm_loads`.

    Two IN lists rather than an OR per pair, which SQLite refuses past 1000 terms; the extra
    rows this matches (a user's memberships in the pairs' other rooms) go unused.
    """
    slugs, user_ids = list({slug for _, slug in pairs}), list({user.pk for user, _ in pairs})
    columns = _membership_room_columns(connection.alias)[2]
    memberships_table, rooms = _table(Membership), _table(Room)
    return (
        f"SELECT {columns} FROM {memberships_table} INNER JOIN {rooms} ON {rooms}.id = {memberships_table}.room_id "
        f"WHERE {rooms}.slug IN ({placeholders(slugs)}) AND {memberships_table}.user_id IN ({placeholders(user_ids)})",
        slugs + user_ids,
    )


def memberships_from_rows(rows: list[tuple]) -> list[Membership]:
    """The memberships, their rooms loaded, of `memberships`' rows; values are converted as the
    ORM converts them (the backend's converters, then the field's `from_db_value`)."""
    membership_fields, room_fields, _, converters = _membership_room_columns(connection.alias)
    split, loaded = len(membership_fields), []
    for row in rows:
        if converters:
            row = list(row)
            for index, column_converters, expression in converters:
                for convert in column_converters:
                    row[index] = convert(row[index], expression, connection)
        membership = Membership.from_db(connection.alias, membership_fields, row[:split])
        membership.room = Room.from_db(connection.alias, room_fields, row[split:])
        loaded.append(membership)
    return loaded


@functools.cache
def _membership_room_columns(alias: str):
    """The field names, select list and value converters of `memberships`, once per database
    alias: they depend only on its backend and settings. The converters are those the ORM's
    compiler applies, found through the same public hooks it uses."""
    fields = [*Membership._meta.concrete_fields, *Room._meta.concrete_fields]
    quote = connection.ops.quote_name
    columns = ", ".join(f"{quote(f.model._meta.db_table)}.{quote(f.column)}" for f in fields)
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(field.model._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converters.append((index, found, column))
    names = [f.attname for f in Membership._meta.concrete_fields], [f.attname for f in Room._meta.concrete_fields]
    return *names, columns, converters


def member_rooms(select: str, user_id: int, params=()) -> Statement:
    """`SELECT select` (whose own parameters are `params`) over the user's active memberships
    (`s`) in unarchived rooms (`r`), by slug. It runs for every new connection.

    ORM: `Membership.objects.filter(active_membership_q(), user=..., room__archived=False)
    .order_by("room__slug")`; the ban condition is `models.active_membership_q`'s.
    Pinned by `test_sql.py::test_member_rooms_apply_the_ban_rule_as_the_orm_does` and
    `test_selectors.py::test_room_summaries_and_member_room_ids_list_what_rooms_for_user_lists`.
    """
    rooms, memberships_table = _table(Room), _table(Membership)
    return (
        f"SELECT {select} FROM {memberships_table} s INNER JOIN {rooms} r ON r.id = s.room_id "
        "WHERE s.user_id = %s AND NOT r.archived AND (NOT s.banned OR s.banned_until <= %s) ORDER BY r.slug",
        [*params, user_id, connection.ops.adapt_datetimefield_value(timezone.now())],
    )


def room_summaries(user_id: int) -> Statement:
    """The slug, name, kind, newest message id, unread count, change sequence value, unread
    mention count and stored `notify` of each of the user's rooms (`member_rooms`), for the
    `hello` frame.

    ORM: `selectors.rooms_for_user(user, member_only=True)`, whose `unread` is
    `models.unread_messages_q` and `mentions` `models.unread_mentions_q`: the conditions below
    repeat them. Pinned by
    `test_selectors.py::test_room_summaries_and_member_room_ids_list_what_rooms_for_user_lists`,
    `test_sql.py::test_unread_is_counted_alike_everywhere` and
    `test_sql.py::test_unread_mentions_are_counted_alike_everywhere`.
    """
    messages, mentions = _table(Message), _table(Mention)
    unread = (
        f"FROM {messages} m WHERE m.room_id = r.id AND m.id > s.last_read_id AND NOT m.deleted "
        "AND (m.author_id <> %s OR m.author_id IS NULL)"
    )
    return member_rooms(
        f"r.slug, r.name, r.kind, (SELECT MAX(m.id) FROM {messages} m WHERE m.room_id = r.id), "
        f"(SELECT COUNT(*) {unread}), r.change_seq, "
        f"(SELECT COUNT(*) {unread} AND (m.mentions_room AND m.created_at >= s.joined_at OR EXISTS "
        f"(SELECT 1 FROM {mentions} n WHERE n.message_id = m.id AND n.user_id = %s))), s.notify",
        user_id,
        [user_id, user_id, user_id],
    )


# Messages: the batch's write, and the originals of reused client_ids


def lock_rooms_and_insert(
    room_ids: list[int], drafts: list[Message], roots: dict[int, int] | None = None, then: Statement | None = None
) -> tuple[dict[int, int | None], list[tuple[int, int]], list[int], list[tuple] | None]:
    """Lock the rooms' rows until commit, in id order (so that two writers never deadlock), take
    the rooms' change sequence values (`Room.change_seq`), read the id of each room's newest
    message (None if it has none), insert `drafts` in order, and count each reply on its
    thread's root (`roots`: root id -> replies in `drafts`; the roots are in these rooms).
    Returns those newest ids by room id, the inserted messages' (id, seq) in order, the roots'
    new seq values in the order of `roots`, and the rows of the statement `then` (a SELECT run
    last, in the same round trip: the members to alert, `alert_members`), None without it.

    Each room's drafts take its next values in order, then its roots take theirs: a client
    that has seen a root's new `seq` has seen the reply's.

    ORM: `Room.objects.select_for_update().filter(id__in=...)` (PostgreSQL only: SQLite has one
    writer at a time, and no FOR UPDATE), `Room.objects.filter(...).update(change_seq=F(...) + n)`,
    `Message.objects.filter(room=r).aggregate(Max("id"))` per room,
    `Message.objects.bulk_create(drafts)` and an update of each root. One round trip on
    PostgreSQL (`fetch_all`): outside a transaction the string is one transaction of its own,
    committed once its last statement is done, while the locks are held.
    Pinned by `test_sql.py::test_the_batch_insert_stores_what_the_orm_stores`.
    """
    roots = roots or {}
    ids = sorted(set(room_ids))
    listed = placeholders(ids)
    rooms, messages = _table(Room), _table(Message)
    counts: dict[int, int] = dict.fromkeys(ids, 0)
    for draft in drafts:
        counts[draft.room_id] += 1
    root_rooms = _root_rooms(drafts, roots)
    for room_id in root_rooms.values():
        counts[room_id] += 1
    taken = " ".join("WHEN %s THEN %s" for _ in ids)
    # A statement of its own after the lock: one that also took the locks would read with the
    # snapshot it took before waiting for them, missing the message whose commit released one
    # (READ COMMITTED gives each statement the snapshot of its start).
    # A subquery per room, which the (room, id) index answers with one row, where a GROUP BY
    # would read every message of the rooms.
    newest = (
        f"UPDATE {rooms} SET change_seq = change_seq + CASE id {taken} END WHERE id IN ({listed}) "
        f"RETURNING id, change_seq, (SELECT MAX(m.id) FROM {messages} m WHERE m.room_id = {rooms}.id)",
        [value for room_id in ids for value in (room_id, counts[room_id])] + ids,
    )
    fields = [field for field in Message._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    # Each row's seq counts back from its room's new value: the drafts, then the roots.
    after: dict[int, int] = {room_id: counts[room_id] for room_id in ids}
    row_sql, values = [], []
    for draft in drafts:
        after[draft.room_id] -= 1
        cells = []
        for field in fields:
            if field.attname == "seq":
                cells.append(f"(SELECT change_seq FROM {rooms} WHERE id = %s) - %s")
                values += [draft.room_id, after[draft.room_id]]
            else:
                cells.append("%s")
                values.append(field.get_db_prep_save(field.pre_save(draft, True), connection))
        row_sql.append(f"({', '.join(cells)})")
    # The ids come back in the order of the rows, so each room's grow in its order.
    insert = (f"INSERT INTO {messages} ({columns}) VALUES {', '.join(row_sql)} RETURNING id, seq", values)
    statements = [newest, insert]
    if roots:
        statements.append(_count_replies(roots, root_rooms, after))
    if then is not None:
        statements.append(then)
    if connection.vendor == "postgresql":
        statements.insert(0, (f"SELECT id FROM {rooms} WHERE id IN ({listed}) ORDER BY id FOR UPDATE", ids))
    results = fetch_all(statements)
    if connection.vendor == "postgresql":
        results = results[1:]
    newest_rows, inserted = results[0], results[1]
    root_seqs = dict(results[2]) if roots else {}
    return (
        {room_id: last_id for room_id, _seq, last_id in newest_rows},
        [(pk, seq) for pk, seq in inserted],
        [root_seqs[root_id] for root_id in roots],
        results[-1] if then is not None else None,
    )


def _root_rooms(drafts: list[Message], roots: dict[int, int]) -> dict[int, int]:
    """The room of each root: that of the drafts that answer it."""
    found = {draft.thread_id: draft.room_id for draft in drafts if draft.thread_id in roots}
    return {root_id: found[root_id] for root_id in roots}


def _count_replies(roots: dict[int, int], root_rooms: dict[int, int], after: dict[int, int]) -> Statement:
    """Add each root's new replies to its `reply_count`, and give it its room's next seq value
    after the drafts' (`after`: how many values of the room's are still to give)."""
    messages, rooms = _table(Message), _table(Room)
    counted, seqs, params_count, params_seq = [], [], [], []
    for root_id, replies in roots.items():
        room_id = root_rooms[root_id]
        after[room_id] -= 1
        counted.append("WHEN %s THEN %s")
        params_count += [root_id, replies]
        seqs.append(f"WHEN %s THEN (SELECT change_seq FROM {rooms} WHERE id = %s) - %s")
        params_seq += [root_id, room_id, after[room_id]]
    listed = list(roots)
    return (
        f"UPDATE {messages} SET reply_count = reply_count + CASE id {' '.join(counted)} END, "
        f"seq = CASE id {' '.join(seqs)} END WHERE id IN ({placeholders(listed)}) RETURNING id, seq",
        params_count + params_seq + listed,
    )


def alert_members(*, whole: list[int], direct: list[int], group: list[int], named: list[int]) -> Statement:
    """The room id, user id and stored `notify` of the members who may be alerted of new
    messages (`chat.services.notify`): of the rooms mentioned as a whole (`whole`), every active
    member whose setting is not `none`; of the other rooms, `direct` or `group` ones, those who
    follow every message (`all`, or no choice in a direct room) and those `named` whose setting
    is not `none`. Active members of active users only: the ban condition is
    `models.active_membership_q`'s, as in `member_rooms`. Each list may be empty.

    Hand-written so that it runs in the batch's write round trip (`lock_rooms_and_insert`'s `then`).
    ORM: `Membership.objects.filter(active_membership_q(), user__is_active=True).filter(
    Q(room_id__in=whole) & ~Q(notify="none") | Q(room_id__in=direct) & (Q(notify__in=["all", ""])
    | Q(user_id__in=named) & ~Q(notify="none")) | Q(room_id__in=group) & (Q(notify="all") | ...))`.
    Pinned by `test_sql.py::test_alert_members_are_those_the_orm_finds`.
    """
    memberships_table, users = _table(Membership), _table(get_user_model())
    named_sql = f"(s.user_id IN ({placeholders(named)}) AND s.notify <> 'none')" if named else "FALSE"
    terms, params = [], []
    for ids, follows in ((whole, None), (direct, "s.notify IN ('all', '')"), (group, "s.notify = 'all'")):
        if not ids:
            continue
        wanted = "s.notify <> 'none'" if follows is None else f"({follows} OR {named_sql})"
        terms.append(f"(s.room_id IN ({placeholders(ids)}) AND {wanted})")
        params += ids + (named if follows is not None and named else [])
    return (
        f"SELECT s.room_id, s.user_id, s.notify FROM {memberships_table} s INNER JOIN {users} u ON u.id = s.user_id "
        f"WHERE u.is_active AND (NOT s.banned OR s.banned_until <= %s) AND ({' OR '.join(terms) or 'FALSE'})",
        [connection.ops.adapt_datetimefield_value(timezone.now()), *params],
    )


def next_seq(room_id: int) -> int:
    """Take the room's next change sequence value, locking its row until commit (as the batch's
    insert does), so that changes take their values in commit order. Call inside a transaction.

    ORM: `Room.objects.filter(pk=...).update(change_seq=F("change_seq") + 1)`, then a read.
    Pinned by `test_sql.py::test_next_seq_counts_on_from_the_batch_insert`.
    """
    (((seq,),),) = fetch_all(
        [(f"UPDATE {_table(Room)} SET change_seq = change_seq + 1 WHERE id = %s RETURNING change_seq", [room_id])]
    )
    return seq


def originals(wanted: set[tuple[int, str]]) -> Statement:
    """The id, author id and client_id of the messages with these (author id, client_id); the
    caller drops the rare extra rows (an author's use of another's client_id).

    ORM: `Message.objects.filter(author_id__in=..., client_id__in=...).exclude(client_id="")`.
    Pinned by `test_sql.py::test_originals_find_what_the_orm_finds`.

    Two IN lists rather than an OR per pair, which SQLite refuses past 1000 terms. `<> ''`
    repeats the unique index's condition, which lets SQLite use that index.
    """
    authors, client_ids = list({author_id for author_id, _ in wanted}), list({client_id for _, client_id in wanted})
    return (
        f"SELECT id, author_id, client_id FROM {_table(Message)} "
        f"WHERE author_id IN ({placeholders(authors)}) AND client_id IN ({placeholders(client_ids)}) "
        "AND client_id <> ''",
        authors + client_ids,
    )


# The admin, the export and the health check


@contextlib.contextmanager
def snapshot():
    """A transaction whose reads all see one snapshot of the database: REPEATABLE READ on
    PostgreSQL (each statement would take its own under READ COMMITTED); on SQLite a
    transaction's reads already do. A join's replay reads its changes and its new messages so:
    every change up to the highest `seq` it sends is in what it sends.

    ORM: `transaction.atomic()` and the isolation level. Pinned by
    `test_resume_changes.py::test_a_replay_reads_changes_and_messages_in_one_snapshot`.
    """
    outermost = not connection.in_atomic_block  # inside another transaction, its level holds
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def estimated_rows(model) -> int | None:
    """The planner's estimate of the table's rows on PostgreSQL (None elsewhere, or before the
    table was first analysed): an exact COUNT(*) scans the whole table.

    ORM: `model.objects.count()`, exact. Pinned by
    `test_sql.py::test_the_row_estimate_is_the_count_once_analysed`.
    """
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        row = cursor.fetchone()
    return row[0] if row and row[0] >= 0 else None


def ping() -> None:
    """One round trip to the database, reading no table: the health check's probe.

    ORM: none (`connection.ensure_connection()` opens a connection without a round trip).
    Pinned by `test_sql.py::test_ping_answers_and_fails_with_the_database`.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


@contextlib.contextmanager
def sqlite_page_cache(alias: str, kib: int):
    """On SQLite, a page cache of `kib` KiB for the connection while the block runs (then the one
    it had); elsewhere nothing. The export reads each page once, and SQLite's default cache
    (2 MB per connection) made ten exports at once hold 20 MB more than they need.

    ORM: none (a setting of the connection). Pinned by
    `test_sql.py::test_the_sqlite_page_cache_is_set_for_the_block_then_restored`.
    """
    connection = connections[alias]
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        previous = cursor.execute("PRAGMA cache_size").fetchone()[0]
        cursor.execute(f"PRAGMA cache_size = -{int(kib)}")
    try:
        yield
    finally:
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {int(previous)}")
