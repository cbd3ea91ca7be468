"""`GET /api/search/` (PROTOCOL.md, "Search"): on SQLite by default, on PostgreSQL with DATABASE_URL."""

import random
import string

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import search, services
from chat.models import Message
from tests.support import joined, private_room, public_room, send

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=["walk", "index"])
def read(request, monkeypatch):
    """Each test twice: as the first read finds messages (walking the newest ids, row by row),
    and as the second does (through the search index: trigram or pairs, FTS5 on SQLite)."""
    if request.param == "index":
        monkeypatch.setattr(search, "RECENT", 0)
    return request.param


def found(api, user, query, **params):
    response = api(user).get("/api/search/", {"q": query, **params})
    assert response.status_code == 200, response.json()
    return [r["message"]["body"] for r in response.json()["results"]]


def test_every_word_must_match_newest_first(api, alice):
    room = public_room(alice)
    send(alice, room, "red apple pie")
    send(alice, room, "green apple")
    send(alice, room, "red car")
    assert found(api, alice, "apple") == ["green apple", "red apple pie"]
    assert found(api, alice, "red apple") == ["red apple pie"]
    assert found(api, alice, "APPLE Red") == ["red apple pie"]
    assert found(api, alice, "CA") == ["red car"]  # two characters: the character-pair path


def test_a_quoted_phrase_matches_as_a_whole_and_minus_excludes(api, alice):
    room = public_room(alice)
    send(alice, room, "the quick brown fox")
    send(alice, room, "brown and quick")
    assert found(api, alice, '"quick brown"') == ["the quick brown fox"]
    assert found(api, alice, "quick -fox") == ["brown and quick"]
    assert found(api, alice, 'quick -"brown and"') == ["the quick brown fox"]


def test_chinese_matches_by_substring_including_two_characters(api, alice):
    room = public_room(alice)
    send(alice, room, "我们明天开会讨论中文消息搜索")
    send(alice, room, "今天天气很好")
    assert found(api, alice, "中文") == ["我们明天开会讨论中文消息搜索"]
    assert found(api, alice, "消息搜索") == ["我们明天开会讨论中文消息搜索"]
    assert found(api, alice, "天气") == ["今天天气很好"]
    assert found(api, alice, "明天 -天气") == ["我们明天开会讨论中文消息搜索"]
    assert found(api, alice, "日本") == []


def test_like_wildcards_are_plain_characters(api, alice):
    room = public_room(alice)
    send(alice, room, "100% sure")
    send(alice, room, "1000 sure")
    assert found(api, alice, "100%") == ["100% sure"]
    assert found(api, alice, "_") == []


def test_filters_by_room_and_author(api, alice, bob):
    general = joined(public_room(alice), bob)
    random = joined(public_room(alice, "random"), bob)
    send(alice, general, "lunch alice general")
    send(bob, general, "lunch bob general")
    send(bob, random, "lunch bob random")
    assert found(api, alice, "lunch", room="general") == ["lunch bob general", "lunch alice general"]
    assert found(api, alice, "lunch", author="bob") == ["lunch bob random", "lunch bob general"]
    assert found(api, alice, "lunch", room="random", author="alice") == []
    assert api(alice).get("/api/search/", {"q": "lunch", "room": "nowhere"}).status_code == 404


def test_only_rooms_the_caller_may_read(api, alice, bob, carol, staff):
    general = public_room(alice)
    secret = private_room(alice, members=[bob])
    send(alice, general, "needle public")
    send(alice, secret, "needle secret")
    assert found(api, alice, "needle") == ["needle secret", "needle public"]
    assert found(api, bob, "needle") == ["needle secret"]  # not a member of general
    assert found(api, carol, "needle") == []
    assert api(carol).get("/api/search/", {"q": "needle", "room": "secret"}).status_code == 403
    assert found(api, staff, "needle") == ["needle secret", "needle public"]
    services.room_leave(user=bob, slug="secret")
    assert found(api, bob, "needle") == []


def test_deleted_never_and_edited_by_current_text(api, alice):
    room = public_room(alice)
    gone = send(alice, room, "secret plans")
    edited = send(alice, room, "old wording")
    services.message_delete(user=alice, message_id=gone.pk)
    services.message_edit(user=alice, message_id=edited.pk, body="new phrasing")
    assert found(api, alice, "secret") == []
    assert found(api, alice, "old") == []
    assert found(api, alice, "phrasing") == ["new phrasing"]
    assert Message.objects.get(pk=gone.pk).body == "secret plans"  # kept, yet never found


def test_highlight_escapes_html_and_marks_matches(api, alice):
    room = public_room(alice)
    send(alice, room, "<script>alert(1)</script> Alert & co")
    response = api(alice).get("/api/search/", {"q": "alert"})
    assert response.json()["results"][0]["highlight"] == (
        "&lt;script&gt;<mark>alert</mark>(1)&lt;/script&gt; <mark>Alert</mark> &amp; co"
    )


def test_highlight_of_a_long_body_is_a_window_around_the_first_match():
    body = "x" * 500 + " 中文 " + "y" * 500
    text = search.highlight(body, ["中文"])
    assert "<mark>中文</mark>" in text and text.startswith("…") and text.endswith("…")
    assert len(text) < 200


def test_pages_back_with_before_and_a_constant_number_of_queries(api, alice, bob):
    room = joined(public_room(alice), bob)
    sent = [send(alice if i % 2 else bob, room, f"page item {i}").pk for i in range(7)]
    first = api(alice).get("/api/search/", {"q": "item", "limit": 3}).json()
    assert [r["message"]["id"] for r in first["results"]] == sent[:-4:-1] and first["has_more"] is True
    with CaptureQueriesContext(connection) as small:
        api(alice).get("/api/search/", {"q": "item", "limit": 50, "room": "general"})
    with CaptureQueriesContext(connection) as large:
        last = api(alice).get("/api/search/", {"q": "item", "limit": 5, "room": "general", "before": sent[4]})
    assert [r["message"]["id"] for r in last.json()["results"]] == sent[3::-1] and last.json()["has_more"] is False
    # Whatever the page size and the number of results: the caller, the room, the newest messages,
    # and for the older ones the ids of the caller's rooms, (on PostgreSQL) the words containing
    # `item`, then the messages.
    expected = 6 if connection.vendor == "postgresql" else 5
    assert len(small.captured_queries) == len(large.captured_queries) == expected


def test_older_matches_are_found_past_the_recent_window(api, alice, monkeypatch):
    room = public_room(alice)
    old = send(alice, room, "ancient needle").pk
    recent = [send(alice, room, f"recent needle {i}").pk for i in range(3)]
    monkeypatch.setattr(search, "RECENT", 2)  # the newest two messages only in the first read
    response = api(alice).get("/api/search/", {"q": "needle", "limit": 3}).json()
    assert [r["message"]["id"] for r in response["results"]] == recent[::-1] and response["has_more"] is True
    response = api(alice).get("/api/search/", {"q": "needle", "limit": 10}).json()
    assert [r["message"]["id"] for r in response["results"]] == [*recent[::-1], old]


@pytest.mark.parametrize("query", [None, "", "   ", "-only", '""'])
def test_an_empty_query_is_invalid(api, alice, query):
    params = {} if query is None else {"q": query}
    response = api(alice).get("/api/search/", params)
    assert response.status_code == 400 and response.json()["code"] == "invalid"


def test_anonymous_is_refused(api):
    assert api().get("/api/search/", {"q": "x"}).status_code == 401


@pytest.mark.postgres
def test_the_character_pairs_index_holds_every_pair_of_a_long_body():
    """`chat_bigrams` (migration 0009_search): every lower-cased pair of adjacent characters, at
    even and odd offsets, newlines and Chinese included."""
    body = ("Ab中文\n例子 xY" * 400)[:4000]
    with connection.cursor() as cursor:
        cursor.execute("SELECT chat_bigrams(%s)", [body])
        [pairs] = cursor.fetchone()
    lower = body.lower()
    assert set(pairs) == {lower[i : i + 2] for i in range(len(lower) - 1)}
    assert len(pairs) == len(set(pairs))


@pytest.mark.postgres
def test_the_words_of_a_body_are_its_latin_runs_with_a_letter():
    """`chat_words` (migration 0010_search_words): lower-cased runs of ASCII letters and digits,
    three characters or more, with a letter; anything else (Chinese, accents, `_`, `-`) ends one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT chat_words(%s)", ["Hello, WORLD! abc123 12345 x1 ab 部署deploy了 meeting-notes café foo_bar"]
        )
        [words] = cursor.fetchone()
    assert sorted(words) == ["abc123", "bar", "caf", "deploy", "foo", "hello", "meeting", "notes", "world"]


KEY = "".join(random.Random(7).choice(string.ascii_letters + string.digits) for _ in range(3600))
TRICKY = [
    "redeployed the Meeting room",
    "部署deploy了，明天开会",
    "ＤＥＰＬＯＹ in full width",
    "the \u212aelvin scale",  # KELVIN SIGN, which lower() makes an ASCII k
    "café deploys, naïve meetings",
    "foo_bar-baz 2024deploy deploy2024 d3ploy",
    ("filler " * 500) + "needle at the end of a long body",
    f"a pasted key {KEY} longer than an index entry may be",
]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "term",
    [
        *["deploy", "DEPLOY", "eploy", "meeting", "kelvin", "caf", "bar", "2024deploy", "needle", "d3p"],
        *["deployed the mee", "room the", "scale the", KEY[1234:1434], KEY[3390:3590]],
    ],
)
def test_the_words_index_finds_what_ilike_finds(alice, term, monkeypatch):
    """The second read's test for a Latin term (`search_words`) against the row-by-row one (`ILIKE`)."""
    monkeypatch.setattr(search, "WORD_LIST_MAX", 100_000)  # `the` is inside many words of other tests
    room = public_room(alice)
    for body in TRICKY:
        send(alice, room, body)
    lists = [search.word_lists([term])[word] for word in term.lower().split(" ")]
    by_words = set(Message.objects.filter(body__search_words=(term, lists)).values_list("body", flat=True))
    by_rows = set(Message.objects.filter(body__search_scan=term).values_list("body", flat=True))
    assert by_words == by_rows
    assert by_rows or term in ("room the", "scale the")  # words of a body, not next to each other


@pytest.mark.postgres
def test_an_edit_adds_its_new_words_and_the_index_read_uses_them(api, alice):
    room = public_room(alice)
    message = send(alice, room, "nothing to see")
    services.message_edit(user=alice, message_id=message.pk, body="a brand new zyzzyvas sighting")
    with connection.cursor() as cursor:
        cursor.execute("SELECT word FROM chat_word WHERE word IN ('zyzzyvas', 'sighting', 'nothing')")
        assert {row[0] for row in cursor.fetchall()} == {"zyzzyvas", "sighting", "nothing"}
    with CaptureQueriesContext(connection) as queries:
        assert found(api, alice, "zyzzyva") == ["a brand new zyzzyvas sighting"]
    # Less than a page in the newest messages: the older ones are read through the word index.
    assert any("chat_words(" in q["sql"] for q in queries.captured_queries)


@pytest.mark.postgres
def test_a_word_inside_many_written_words_goes_to_the_trigram_index(api, alice, monkeypatch):
    room = public_room(alice)
    send(alice, room, "unqzbrkable")
    send(alice, room, "qzbrkfast")
    assert sorted(search.word_lists(["QZBRK"])["qzbrk"]) == ["qzbrkfast", "unqzbrkable"]
    monkeypatch.setattr(search, "WORD_LIST_MAX", 1)
    assert search.word_lists(["qzbrk", "qzbrkfa"]) == {"qzbrkfa": ["qzbrkfast"]}
    assert sorted(found(api, alice, "qzbrk")) == ["qzbrkfast", "unqzbrkable"]
