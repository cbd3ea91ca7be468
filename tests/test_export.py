"""History export (chat/export.py): the REST view, the management command, the three formats and flat memory."""

import csv
import gc
import io
import json
import tracemalloc

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import AsyncClient

from chat import export, services
from chat.models import Message, Room
from tests.support import access_token, db_state, joined, private_room, public_room

TRICKY = [
    "héllo wörld, ünïcode ✓ 日本語 🎉",
    'a "quoted", comma-separated line',
    "two\nlines\r\nand more",
    "=1+1",
    "+A1",
    "-2",
    "@SUM(A1:A2)",
    "\tleading tab",
    "plain",
]


@pytest.fixture
def room(alice, bob):
    """`general` with alice (owner) and bob; TRICKY bodies by alice, then one edited and one deleted message by bob."""
    room = joined(public_room(alice), bob)
    for index, body in enumerate(TRICKY):
        services.message_send(user=alice, slug="general", body=body, client_id=f"c-{index}")
    edited, _ = services.message_send(user=bob, slug="general", body="first draft")
    services.message_edit(user=bob, message_id=edited.pk, body="second, final draft")
    deleted, _ = services.message_send(user=bob, slug="general", body="regret")
    services.message_delete(user=bob, message_id=deleted.pk)
    return room


def stored(room) -> list[dict]:
    from chat.serializers import message_data

    return [message_data(m) for m in Message.objects.filter(room=room).select_related("room", "author").order_by("id")]


def body(response) -> bytes:
    assert response.streaming
    return b"".join(response.streaming_content)


def parse_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline="")))


# The formats


def test_json_export_round_trips_the_message_shape(api, alice, room):
    response = api(alice).get("/api/rooms/general/export/?format=json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="general-history.json"'
    rows = json.loads(body(response))
    assert rows == stored(room)
    assert [r["body"] for r in rows if (r["client_id"] or "").startswith("c-")] == TRICKY  # as written
    edited, deleted = rows[-2:]
    assert edited["body"] == "second, final draft" and edited["edited_at"] is not None and not edited["deleted"]
    assert deleted["deleted"] is True and deleted["body"] == ""


def test_json_is_the_default_and_an_empty_room_is_an_empty_array(api, alice):
    public_room(alice)
    response = api(alice).get("/api/rooms/general/export/")
    assert response["Content-Type"] == "application/json"
    assert json.loads(body(response)) == []


def test_ndjson_export_is_one_message_per_line(api, alice, room):
    response = api(alice).get("/api/rooms/general/export/?format=ndjson")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"] == 'attachment; filename="general-history.ndjson"'
    data = body(response).decode("utf-8")
    assert data.endswith("\n")
    assert [json.loads(line) for line in data.split("\n")[:-1]] == stored(room)


def test_csv_export_opens_in_a_spreadsheet(api, alice, bob, room):
    response = api(alice).get("/api/rooms/general/export/?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="general-history.csv"'
    header, *rows = parse_csv(body(response))
    assert header[:8] == ["id", "created_at", "author", "kind", "body", "edited_at", "deleted", "client_id"]
    expected = stored(room)
    assert [int(r[0]) for r in rows] == [m["id"] for m in expected]
    assert [r[1] for r in rows] == [m["created_at"] for m in expected]
    assert rows[0][2:5] == ["bob", "system", "bob joined"]  # joining wrote a system message
    assert rows[0][7] == ""
    tricky = [r for r in rows if r[7].startswith("c-")]
    # Formula-like cells get a leading quote; everything else comes back exactly.
    assert [r[4] for r in tricky] == [
        "héllo wörld, ünïcode ✓ 日本語 🎉",
        'a "quoted", comma-separated line',
        "two\nlines\r\nand more",
        "'=1+1",
        "'+A1",
        "'-2",
        "'@SUM(A1:A2)",
        "'\tleading tab",
        "plain",
    ]
    assert {r[2] for r in tricky} == {"alice"}
    assert [r[7] for r in tricky] == [f"c-{i}" for i in range(len(TRICKY))]
    edited, deleted = rows[-2:]
    assert (edited[2], edited[4], edited[6], edited[7]) == ("bob", "second, final draft", "false", "")
    assert edited[5] == expected[-2]["edited_at"]
    assert (deleted[4], deleted[5], deleted[6]) == ("", "", "true")


def test_csv_carries_replies_mentions_reactions_and_seq_but_no_html(api, alice, bob):
    joined(public_room(alice), bob)
    root, _ = services.message_send(user=alice, slug="general", body="@bob @alice, a question")
    reply, _ = services.message_send(user=bob, slug="general", body="an answer", reply_to=root.pk)
    services.message_send(user=alice, slug="general", body="thanks", reply_to=reply.pk)
    Message.objects.filter(pk=root.pk).update(reactions=[{"emoji": "👍", "count": 2, "users": ["alice", "bob"]}])
    header, *rows = parse_csv(body(api(alice).get("/api/rooms/general/export/?format=csv")))
    assert header == [
        *("id", "created_at", "author", "kind", "body", "edited_at", "deleted", "client_id"),
        *("reply_to", "thread", "reply_count", "mentions", "reactions", "seq", "attachments"),
    ]
    cells = [dict(zip(header, row)) for row in rows if row[3] == "user"]
    first, answer, thanks = cells
    assert sorted(first["mentions"].split(" ")) == ["alice", "bob"]
    # Compact JSON (PostgreSQL's jsonb keeps its keys in an order of its own).
    assert json.loads(first["reactions"]) == [{"emoji": "👍", "count": 2, "users": ["alice", "bob"]}]
    assert ", " not in first["reactions"] and ": " not in first["reactions"]
    assert (first["reply_to"], first["thread"], first["reply_count"]) == ("", "", "2")
    assert (answer["reply_to"], answer["thread"], answer["reply_count"]) == (str(root.pk), str(root.pk), "0")
    assert (thanks["reply_to"], thanks["thread"]) == (str(reply.pk), str(root.pk))
    assert (answer["mentions"], answer["reactions"]) == ("", "")
    stored_seqs = dict(Message.objects.values_list("id", "seq"))
    assert all(int(row[13]) == stored_seqs[int(row[0])] for row in rows)


def test_csv_neutralises_formula_like_author_names(api, make_user):
    mallory = make_user("@mallory")
    public_room(mallory)
    services.message_send(user=mallory, slug="general", body="hi")
    _, row = parse_csv(body(api(mallory).get("/api/rooms/general/export/?format=csv")))
    assert row[2] == "'@mallory"


def test_large_exports_stream_in_blocks(api, alice):
    room = public_room(alice)
    Message.objects.bulk_create(
        [Message(room=room, author=alice, body=f"message {i} " + "x" * 100) for i in range(3000)]
    )
    chunks = list(api(alice).get("/api/rooms/general/export/?format=ndjson").streaming_content)
    assert chunks[0] == b""  # the (empty) head goes out before the query runs
    assert len(chunks) > 4 and max(len(c) for c in chunks) < 2 * export.BLOCK_BYTES
    lines = b"".join(chunks).decode().split("\n")[:-1]
    assert [json.loads(line)["body"] for line in lines] == [f"message {i} " + "x" * 100 for i in range(3000)]


# since / until


def test_since_is_exclusive_and_until_inclusive(api, alice, room):
    ids = [m["id"] for m in stored(room)]
    for query, expected in [
        (f"since={ids[2]}", ids[3:]),
        (f"until={ids[2]}", ids[:3]),
        (f"since={ids[2]}&until={ids[5]}", ids[3:6]),
        (f"since={ids[-1]}", []),
        ("since=0", ids),
    ]:
        for fmt in ("json", "ndjson", "csv"):
            data = body(api(alice).get(f"/api/rooms/general/export/?format={fmt}&{query}"))
            if fmt == "json":
                got = [m["id"] for m in json.loads(data)]
            elif fmt == "ndjson":
                got = [json.loads(line)["id"] for line in data.decode().split("\n")[:-1]]
            else:
                got = [int(row[0]) for row in parse_csv(data)[1:]]
            assert got == expected, (query, fmt)


@pytest.mark.parametrize(
    "query",
    [
        "format=xml",
        "format=JSON",
        "since=abc",
        "since=-1",
        "until=0",
        "until=1.5",
        "since=5&until=5",
        "since=9&until=3",
    ],
)
def test_bad_parameters_are_400_and_change_nothing(api, alice, room, query):
    before = db_state()
    response = api(alice).get(f"/api/rooms/general/export/?{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()
    assert db_state() == before


# Who may export


def test_members_and_staff_may_export_others_may_not(api, alice, bob, carol, make_user, room):
    staff = make_user("sam", is_staff=True)
    private_room(alice, "secret", members=[bob])
    services.message_send(user=alice, slug="secret", body="hush")
    for user in (alice, bob, staff):  # owner, member, staff who is no member
        for slug in ("general", "secret"):
            assert api(user).get(f"/api/rooms/{slug}/export/?format=ndjson").status_code == 200, (user, slug)

    outsider = api(carol).get("/api/rooms/general/export/")  # may read the public room, not export it
    assert (outsider.status_code, outsider.json()["code"]) == (403, "forbidden")
    assert "join it first" in outsider.json()["detail"]
    assert api(carol).get("/api/rooms/secret/export/").status_code == 403
    assert api(carol).get("/api/rooms/nowhere/export/").status_code == 404
    assert api().get("/api/rooms/general/export/").status_code == 401
    services.room_leave(user=bob, slug="general")
    assert api(bob).get("/api/rooms/general/export/").status_code == 403


def test_a_banned_member_may_not_export(api, alice, bob, room):
    room.memberships.filter(user=bob).update(banned=True)
    assert api(bob).get("/api/rooms/general/export/").status_code == 403


def test_an_archived_room_is_gone(api, alice, room):
    services.room_archive(user=alice, slug="general")
    assert api(alice).get("/api/rooms/general/export/").status_code == 410


# Under ASGI (daphne), the view hands Django an async iterator: a sync one would be read into a list first.


@pytest.mark.django_db(transaction=True)
async def test_the_export_streams_under_asgi(alice, bob):
    @sync_to_async
    def setup():
        room = joined(public_room(alice), bob)
        Message.objects.bulk_create([Message(room=room, author=bob, body=f"m{i}") for i in range(2500)])
        return access_token(bob)

    token = await setup()
    try:
        response = await AsyncClient().get(
            "/api/rooms/general/export/?format=ndjson", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        assert response.is_async
        data = b"".join([chunk async for chunk in response.streaming_content])
    finally:
        await sync_to_async(close_shared_connection)()
    bodies = [json.loads(line)["body"] for line in data.decode().split("\n")[:-1]]
    assert bodies == ["bob joined"] + [f"m{i}" for i in range(2500)]


def close_shared_connection():
    """Close the connection the view used from asgiref's worker thread (the test client does not), so
    PostgreSQL can drop the test database; the connection object is shared with the test's context."""
    connection.inc_thread_sharing()
    try:
        connection.close()
    finally:
        connection.dec_thread_sharing()


# The command


def test_command_writes_the_file_and_prints_nothing_when_not_a_tty(alice, room, tmp_path, capfd):
    for fmt in ("ndjson", "json", "csv"):
        target = tmp_path / f"out.{fmt}"
        call_command("export_history", "--room", "general", "--format", fmt, "--output", str(target))
        expected = body_of_view(room, fmt)
        assert target.read_bytes() == expected
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def body_of_view(room, fmt, **kwargs) -> bytes:
    return b"".join(export.export_chunks(room, fmt, **kwargs))


def test_command_writes_to_stdout_with_since_and_until(alice, room):
    ids = [m["id"] for m in stored(room)]
    out = io.StringIO()
    call_command("export_history", "--room", "general", "--since", str(ids[0]), "--until", str(ids[2]), stdout=out)
    assert [json.loads(line)["id"] for line in out.getvalue().split("\n")[:-1]] == ids[1:3]


def test_command_shows_progress_on_a_terminal(alice, room, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    call_command("export_history", "--room", "general", "--output", str(tmp_path / "out.ndjson"))
    total = len(stored(room))
    assert terminal.getvalue() == f"\r{total}/{total} messages (100%)\n"


def test_command_rejects_bad_input(alice, room, tmp_path):
    with pytest.raises(CommandError, match="No room 'nowhere'"):
        call_command("export_history", "--room", "nowhere", "--output", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="'until' must be greater"):
        call_command(
            "export_history", "--room", "general", "--since", "5", "--until", "2", "--output", str(tmp_path / "x")
        )
    with pytest.raises(CommandError):
        call_command("export_history", "--room", "general", "--format", "xml")
    assert not (tmp_path / "x").exists()


# Memory


def peak_allocation(room, fmt) -> int:
    """Peak Python allocation while the whole export is read and thrown away."""
    gc.collect()
    tracemalloc.start()
    try:
        total = 0
        for chunk in export.export_chunks(room, fmt):
            total += len(chunk)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "json"])
def test_export_memory_does_not_grow_with_the_room(alice, fmt):
    small, large = (Room.objects.create(slug=slug, name=slug) for slug in ("small", "large"))
    # Both rooms take several fetches of ROWS_PER_FETCH rows, so both peaks hold two fetches at once.
    for room, count in ((small, 5_000), (large, 25_000)):
        Message.objects.bulk_create(
            (Message(room=room, author=alice, body=f"message number {i}, with some text") for i in range(count)),
            batch_size=2000,
        )
    peak_small, peak_large = peak_allocation(small, fmt), peak_allocation(large, fmt)
    # 5x the rows: a list of them all would be ~5x the memory; streaming stays flat.
    assert peak_large < 1.5 * peak_small + 256 * 1024, (peak_small, peak_large)


def test_csv_carries_the_conversation_columns(api, alice, bob, general_with_bob):
    """Replies, threads, reactions (as JSON text), mentions (usernames) and `seq` come out in CSV too."""
    root, _ = services.message_send(user=alice, slug="general", body="lunch?")
    [(reply, _)] = services.message_send_batch([dict(user=bob, slug="general", body="@alice yes", reply_to=root.pk)])
    services.reaction_add(user=bob, message_id=root.pk, emoji="👍")
    header, *rows = parse_csv(body(api(alice).get("/api/rooms/general/export/?format=csv")))
    cells = {int(row[0]): dict(zip(header, row, strict=True)) for row in rows}
    root.refresh_from_db(), reply.refresh_from_db()
    assert cells[root.pk]["reply_count"] == "1" and cells[root.pk]["reply_to"] == cells[root.pk]["thread"] == ""
    assert json.loads(cells[root.pk]["reactions"]) == [{"emoji": "👍", "count": 1, "users": ["bob"]}]
    assert cells[root.pk]["seq"] == str(root.seq)
    assert (cells[reply.pk]["reply_to"], cells[reply.pk]["thread"]) == (str(root.pk), str(root.pk))
    assert (cells[reply.pk]["mentions"], cells[reply.pk]["reactions"]) == ("alice", "")
