"""chat/services/batch.py: a batch of sends, checked at once and written in one round trip; ids in commit order.

Against the real database: the rows a service writes and the events it publishes on commit.
Setup calls run outside `committed()`, so their on-commit events never fire; only the call
under test publishes into `published`.
"""

import re
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import limits, services
from chat.errors import Forbidden, Gone, Invalid, Muted, NotFound, RateLimited, RoomLocked, TooLarge
from chat.models import Membership, Message
from tests.support import frames, send, snapshot


def test_a_batch_checks_each_send_alone_and_writes_each_room_in_order(
    alice, bob, general, secret, published, committed
):
    """Refusals stay per send; each room's new messages are chained by prev_id in request order;
    a client_id used twice in the batch stores one message and returns it to both."""
    services.room_join(user=bob, slug="general")
    before = Message.objects.filter(room=general).order_by("-id").values_list("id", flat=True).first() or 0
    with committed():
        results = services.message_send_batch(
            [
                dict(user=alice, slug="general", body="one", client_id="a-1", origin="conn-a"),
                dict(user=bob, slug="secret", body="not a member"),
                dict(user=alice, slug="secret", body="private"),
                dict(user=bob, slug="general", body="", client_id="b-0"),
                dict(user=bob, slug="general", body="two", client_id="b-1"),
                dict(user=bob, slug="general", body="two again", client_id="b-1"),
            ]
        )
    assert isinstance(results[1], Forbidden) and isinstance(results[3], Invalid)
    (one, c1), (private, c2), (two, c4), (again, c5) = results[0], results[2], results[4], results[5]
    assert (c1, c2, c4, c5) == (True, True, True, False) and again == two
    assert Message.objects.filter(client_id="b-1").count() == 1 and not Message.objects.filter(client_id="b-0")
    general_events = [e for g, e in published if g == f"room.{general.pk}"]
    assert [(e["message_id"], e["prev_id"]) for e in general_events] == [(one.pk, before), (two.pk, one.pk)]
    assert one.pk < two.pk and general_events[0]["origin"] == "conn-a"
    assert [e["message_id"] for g, e in published if g == f"room.{secret.pk}"] == [private.pk]


def test_duplicate_client_id_racing_the_original_returns_it(alice, general, monkeypatch, published, committed):
    original = send(alice, general, "first", client_id="c-1")
    before = snapshot()
    real, calls = services.batch._originals_from, []

    def lookup(rows, wanted):  # the first lookup runs before the racing original commits
        calls.append([client_id for _, client_id in wanted])
        return {} if len(calls) == 1 else real(rows, wanted)

    monkeypatch.setattr(services.batch, "_originals_from", lookup)
    with committed():
        message, created = services.message_send(user=alice, slug="general", body="again", client_id="c-1")
    assert (message, created, calls) == (original, False, [["c-1"], ["c-1"]])
    assert snapshot() == before
    assert published == []


def test_a_batch_writes_its_rooms_without_a_savepoint_each(alice, general, secret):
    """The common case commits every room of the batch at once; savepoints are for a retry."""
    with CaptureQueriesContext(connection) as captured:
        results = services.message_send_batch(
            [
                dict(user=alice, slug="general", body="one", client_id="a-1"),
                dict(user=alice, slug="secret", body="two", client_id="a-2"),
            ]
        )
    assert [created for _, created in results] == [True, True]
    # Inside the test's own transaction, the batch's transaction is itself a savepoint.
    assert sum(query["sql"].startswith("SAVEPOINT") for query in captured) <= 1


def test_a_batch_to_many_rooms_costs_the_statements_of_one(alice, make_user, published, committed):
    """Locks, newest ids and the insert are one statement each for every room of a batch; each
    room's messages still chain by prev_id in request order."""
    rooms = [services.room_create(user=alice, name=f"Room {i}") for i in range(5)]
    for room in rooms[2:]:
        send(alice, room, "before")

    def statements(requests):
        with CaptureQueriesContext(connection) as captured, committed():
            results = services.message_send_batch(requests)
        assert all(created for _, created in results)
        return len(captured), results

    one, _ = statements([dict(user=alice, slug=rooms[0].slug, body="x", client_id="one")])
    published.clear()
    many, results = statements(
        [
            dict(user=alice, slug=room.slug, body=f"m{i}", client_id=f"m{i}-{room.pk}")
            for i in range(2)
            for room in rooms
        ]
    )
    assert many == one
    for room in rooms:
        stored = list(Message.objects.filter(room=room).order_by("id").values_list("id", flat=True))
        chain = [(e["message_id"], e["prev_id"]) for g, e in published if g == f"room.{room.pk}"]
        assert chain == list(zip(stored[-2:], stored[-3:-1] if len(stored) > 2 else [0] + stored[-2:-1]))


def test_a_batch_with_nothing_to_write_opens_no_transaction(alice, bob, general, secret):
    """Every send refused, or answered with its original: nothing is locked, inserted or committed."""
    original = send(alice, general, "first", client_id="c-1")
    with CaptureQueriesContext(connection) as captured:
        results = services.message_send_batch(
            [
                dict(user=bob, slug="secret", body="not a member"),
                dict(user=alice, slug="general", body="again", client_id="c-1"),
            ]
        )
    assert isinstance(results[0], Forbidden) and results[1] == (original, False)
    assert not [
        query["sql"]
        for query in captured
        if "FOR UPDATE" in query["sql"]
        or "INSERT" in query["sql"]
        or "SAVEPOINT" in query["sql"]
        or " IN ()" in query["sql"]
    ]


def test_a_duplicate_racing_a_batch_leaves_its_other_rooms_written(
    alice, general, secret, monkeypatch, published, committed
):
    """A client_id reused by a request racing the batch rolls the batch back; written again,
    room by room, the duplicate gets its original and the rest is stored once."""
    original = send(alice, general, "first", client_id="c-1")
    real, calls = services.batch._originals_from, []

    def lookup(rows, wanted):  # the batch's own lookup runs before the racing original commits
        calls.append(wanted)
        return {} if len(calls) == 1 else real(rows, wanted)

    monkeypatch.setattr(services.batch, "_originals_from", lookup)
    with committed():
        again, other = services.message_send_batch(
            [
                dict(user=alice, slug="general", body="again", client_id="c-1"),
                dict(user=alice, slug="secret", body="new", client_id="c-2"),
            ]
        )
    assert again == (original, False)
    assert other[1] is True and Message.objects.filter(client_id="c-2").count() == 1
    assert Message.objects.filter(client_id="c-1").count() == 1
    assert [f["message"]["body"] for f in frames(published, "message.new")] == ["new"]


@pytest.mark.postgres  # SQLite refuses several statements in one execute
def test_a_batch_outside_a_transaction_is_two_round_trips_and_still_recovers_a_duplicate(
    transactional_db, alice, general, secret, monkeypatch, published
):
    """On PostgreSQL, outside a transaction (as the database thread calls it), a batch's checks
    read in one query string, and its locks, newest ids and insert are another, its own
    transaction. A duplicate racing it rolls that back whole; written again room by room, the
    rest is stored once."""
    assert connection.get_autocommit()  # the path under test: outside any transaction
    first = services.message_send_batch([dict(user=alice, slug="general", body="first", client_id="c-1")])[0][0]
    with CaptureQueriesContext(connection) as captured:
        [(alone, created)] = services.message_send_batch(
            [dict(user=alice, slug="secret", body="alone", client_id="c-0")]
        )
    assert created and Message.objects.get(pk=alone.pk).body == "alone"
    # Two round trips in all: the checks' reads (reused client_ids, memberships), then the write.
    reads, write = [q["sql"] for q in captured]
    assert "client_id <> ''" in reads and "JOIN" in reads and "INSERT" not in reads
    assert "FOR UPDATE" in write and "INSERT" in write and "SAVEPOINT" not in write

    real, calls = services.batch._originals_from, []

    def lookup(rows, wanted):  # the batch's own lookup runs before the racing original commits
        calls.append(wanted)
        return {} if len(calls) == 1 else real(rows, wanted)

    monkeypatch.setattr(services.batch, "_originals_from", lookup)
    published.clear()
    again, other = services.message_send_batch(
        [
            dict(user=alice, slug="general", body="again", client_id="c-1"),
            dict(user=alice, slug="secret", body="new", client_id="c-2"),
        ]
    )
    assert again == (first, False)
    assert other[1] is True and Message.objects.get(client_id="c-2").pk == other[0].pk
    assert Message.objects.filter(client_id="c-1").count() == 1
    assert [(f["message"]["body"], f["message"]["id"]) for f in frames(published, "message.new")] == [
        ("new", other[0].pk)
    ]
    assert [e["prev_id"] for _, e in published if e.get("message_id")] == [alone.pk]


def test_a_nul_character_in_one_send_does_not_fail_the_others_of_its_batch(alice, bob, general, committed):
    services.room_join(user=bob, slug="general")
    with committed():
        bad, good = services.message_send_batch(
            [
                dict(user=alice, slug="general", body="x\x00", client_id="a-1"),
                dict(user=bob, slug="general", body="fine", client_id="b-1"),
            ]
        )
    assert isinstance(bad, Invalid) and good[1] is True
    assert list(Message.objects.filter(kind="user").values_list("body", flat=True)) == ["fine"]


@pytest.fixture
def ten_members(make_user, general):
    users = [make_user(f"member{i}") for i in range(10)]
    for user in users:
        services.room_join(user=user, slug="general")
    return users


def test_a_batch_checks_its_sends_with_as_many_queries_and_one_rate_count(ten_members, monkeypatch, settings):
    """1 or 10 sends to one room by different members: the same queries, one rate-counter round trip."""
    counted, executed = [], []
    count, execute = limits._counts, redis.client.Pipeline.execute
    monkeypatch.setattr(limits, "_counts", lambda keys: counted.append(len(keys)) or count(keys))
    monkeypatch.setattr(
        redis.client.Pipeline,
        "execute",
        lambda pipe, *args, **kwargs: executed.append(len(pipe.command_stack)) or execute(pipe, *args, **kwargs),
    )

    def queries(users, tag):
        requests = [dict(user=user, slug="general", body="hi", client_id=f"{tag}-{i}") for i, user in enumerate(users)]
        with CaptureQueriesContext(connection) as captured:
            results = services.message_send_batch(requests)
        assert [created for _, created in results] == [True] * len(users)
        return len(captured)

    one, ten = queries(ten_members[:1], "a"), queries(ten_members, "b")
    assert one == ten
    assert counted == [1, 10]
    assert executed == ([2, 20] if settings.REDIS_URL else [])  # INCR and EXPIRE per send, one round trip


def test_a_mixed_batch_refuses_sends_without_counting_them_toward_the_rate(
    alice, bob, carol, make_user, general, settings, monkeypatch
):
    """Refused sends interleaved with good ones: each gets its own refusal, and only the sends
    that reach the rate check (the good ones and the rate-limited) count toward it, in order."""
    settings.CHAT_RATE_PER_10S = 2
    monkeypatch.setattr(limits, "time", SimpleNamespace(time=lambda: 1_000_003.5))
    dave, erin = make_user("dave"), make_user("erin")
    for user in (bob, carol, erin):
        services.room_join(user=user, slug="general")
    Membership.objects.filter(user=carol).update(muted_until=timezone.now() + timedelta(minutes=5))
    send(erin, general, "e1"), send(erin, general, "e2")  # erin's window is full
    results = services.message_send_batch(
        [
            dict(user=alice, slug="general", body="a1"),
            dict(user=dave, slug="general", body="not a member"),
            dict(user=carol, slug="general", body="muted"),
            dict(user=bob, slug="general", body=" "),
            dict(user=erin, slug="general", body="e3"),
            dict(user=bob, slug="general", body="b1"),
            dict(user=alice, slug="general", body="a2"),
            dict(user=bob, slug="general", body="b2"),  # bob's blank body did not count
            dict(user=alice, slug="general", body="a3"),
        ]
    )
    assert [type(r) if isinstance(r, Exception) else r[0].body for r in results] == [
        "a1",
        Forbidden,
        Muted,
        Invalid,
        RateLimited,
        "b1",
        "a2",
        "b2",
        RateLimited,
    ]
    assert list(Message.objects.filter(kind="user").order_by("id").values_list("body", flat=True)) == [
        "e1",
        "e2",
        "a1",
        "b1",
        "a2",
        "b2",
    ]
    # Refused before the rate check, carol and dave still have their whole budget.
    Membership.objects.filter(user=carol).update(muted_until=None)
    services.room_join(user=dave, slug="general")
    for user in (carol, dave):
        assert [send(user, general, f"{user.username} {i}").author for i in range(2)] == [user, user]
        with pytest.raises(RateLimited):
            send(user, general, "one too many")


def test_a_batch_refuses_each_send_as_a_send_alone_is_refused(
    alice, bob, carol, staff, make_user, general, secret, settings
):
    """Every refusal of `message_send`, in one batch with good sends: the same error and message."""
    dave, erin = make_user("dave"), make_user("erin")
    services.room_join(user=bob, slug="general")
    services.room_join(user=carol, slug="general")
    Membership.objects.filter(user=carol).update(muted_until=timezone.now() + timedelta(minutes=5))
    Membership.objects.create(room=general, user=dave, banned=True)
    services.room_create(user=alice, name="Old")
    services.room_archive(user=alice, slug="old")
    services.room_create(user=alice, name="Quiet")
    services.member_invite(actor=alice, slug="quiet", username="bob")
    services.member_invite(actor=alice, slug="quiet", username="root")
    services.room_update(user=alice, slug="quiet", locked=True)
    requests = [
        dict(user=alice, slug="general", body="good"),
        dict(user=bob, slug="nope", body="hi"),
        dict(user=alice, slug="old", body="hi"),
        dict(user=bob, slug="secret", body="hi"),
        dict(user=dave, slug="general", body="hi"),
        dict(user=erin, slug="general", body="hi"),
        dict(user=bob, slug="quiet", body="hi"),
        dict(user=carol, slug="general", body="hi"),
        dict(user=staff, slug="quiet", body="staff may"),
        dict(user=staff, slug="secret", body="hi"),
        dict(user=alice, slug="general", body="hi", client_id="c" * 65),
        dict(user=alice, slug="general", body="hi", kind="system"),
        dict(user=alice, body="hi"),
        dict(user=alice, slug=["general"], body="hi"),
        dict(user=alice, to="nobody", body="hi"),
        dict(user=alice, to="alice", body="hi"),
        dict(user=bob, slug="general", body="x" * (settings.CHAT_MAX_BODY + 1)),
        dict(user=alice, to="bob", body="direct"),
        dict(user=bob, slug="general", body="good too"),
    ]
    results = services.message_send_batch(requests)
    assert [r[0].body for r in results if not isinstance(r, Exception)] == ["good", "staff may", "direct", "good too"]
    assert [type(r) for r in results if isinstance(r, Exception)] == [
        NotFound,
        Gone,
        Forbidden,
        Forbidden,
        Forbidden,
        RoomLocked,
        Muted,
        Forbidden,
        Invalid,
        Invalid,
        Invalid,
        Invalid,
        NotFound,
        Invalid,
        TooLarge,
    ]
    for request, result in zip(requests, results):
        if isinstance(result, Exception):
            with pytest.raises(type(result)) as alone:
                services.message_send(**request)
            assert re.sub(r"\d+", "N", str(alone.value)) == re.sub(r"\d+", "N", str(result))  # muted: seconds left


# Concurrency


def _drop_slow_insert(table):
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS test_slow_insert ON {table}")
        cursor.execute("DROP FUNCTION IF EXISTS test_slow_insert()")


@pytest.mark.postgres  # SQLite has a single writer, so commits cannot interleave there
def test_ids_grow_in_commit_order_under_concurrent_senders(transactional_db, settings, request, published, make_user):
    """A reader that polls "messages after the last id I saw" never misses one.

    That holds only if ids are visible in id order. Each insert sleeps after drawing its ids
    and before its transaction commits (a trigger, inside the one statement string of the
    write), so without the per-room lock a smaller id would routinely commit after a larger
    one and the poller would skip it.
    """
    settings.CHAT_RATE_PER_10S = 10_000
    owner = make_user("owner")
    room = services.room_create(user=owner, name="Busy")
    senders = [make_user(f"sender{i}") for i in range(6)]
    for user in senders:
        services.room_join(user=user, slug="busy")
    start = Message.objects.filter(room=room).order_by("-id").values_list("id", flat=True).first()

    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_slow_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.001 + random() * 0.003); RETURN NULL; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER test_slow_insert AFTER INSERT ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION test_slow_insert()"
        )
    request.addfinalizer(lambda: _drop_slow_insert(table))
    per_sender, barrier, errors, sent, seen = 12, threading.Barrier(len(senders) + 1), [], [], []
    done = threading.Event()

    def sender(user):
        try:
            barrier.wait()
            for i in range(per_sender):
                sent.append(services.message_send(user=user, slug="busy", body=f"{user.username} {i}")[0].pk)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    def poller():
        last = start
        try:
            barrier.wait()
            while True:
                finished = done.is_set()
                ids = list(Message.objects.filter(room=room, id__gt=last).order_by("id").values_list("id", flat=True))
                seen.extend(ids)
                last = ids[-1] if ids else last
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sender, args=(user,)) for user in senders]
    reader = threading.Thread(target=poller)
    for thread in [*threads, reader]:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    reader.join(60)

    assert errors == []
    assert len(sent) == len(set(sent)) == len(senders) * per_sender
    assert seen == sorted(sent), "the poller skipped ids that committed after a larger one"
    delivered = [e["message_id"] for _, e in published if e.get("message_id") and e["message_id"] > start]
    assert sorted(delivered) == sorted(sent)
    # Each message names the one committed before it, though its writer waited for the lock
    # that commit released: the newest id is read after the lock, not with the snapshot before it.
    chain = sorted((e["message_id"], e["prev_id"]) for _, e in published if (e.get("message_id") or 0) > start)
    assert [prev_id for _, prev_id in chain] == [start or 0] + [message_id for message_id, _ in chain[:-1]]
