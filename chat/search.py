"""Message search (PROTOCOL.md, "Search"): the query language, the database filter and the highlight.

Substring matching everywhere, so that Chinese, Japanese and Korean text, written without
spaces, matches any part of a message. PostgreSQL answers a term of Latin letters and digits
through the index of each body's words (`search_words`: the words that contain it, looked up
in `chat_word`), other terms with `ILIKE` over a `pg_trgm` GIN index on the body (and a GIN
index of the body's character pairs for two-character terms): migrations 0009_search and
0010_search_words. SQLite uses an FTS5 trigram table that triggers keep (0009_search).
Shorter terms are filtered by `instr` / `ILIKE` alone. The access rule is
`selectors.searchable_room_ids`; docs/protocol.md, "Search", has the why.
"""

import re
from dataclasses import dataclass, field
from html import escape

from django.db import connection
from django.db.models import F, Lookup, Q
from django.db.models.expressions import RawSQL
from django.utils.translation import gettext_lazy as _

from . import selectors
from .errors import Invalid
from .models import Message

MAX_QUERY = 200  # characters of `q`
MAX_TERMS = 10
HIGHLIGHT_CHARS = 160  # the window of a long body shown around its first match
RECENT = 5_000  # ids searched by walking back from the newest (`search_messages`)
WORD_LIST_MAX = 50  # words containing a term, past which the trigram index answers it (`word_lists`)

TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
# A term `chat_words` (migration 0010_search_words) can answer: it lies inside one of the body's words.
LATIN_WORD = re.compile(r"[a-z0-9]*[a-z][a-z0-9]*")


@dataclass
class Query:
    include: list[str] = field(default_factory=list)  # words and phrases, all must match
    exclude: list[str] = field(default_factory=list)


def parse(q: str | None) -> Query:
    """Words, `"quoted phrases"` and `-word` / `-"phrase"` to exclude; `invalid` when nothing
    is left to look for (an empty `q`, or only exclusions)."""
    q = (q or "").strip()
    if len(q) > MAX_QUERY:
        raise Invalid(_("A search is at most %(max)s characters."), max=MAX_QUERY)
    query = Query()
    for match in TOKEN.finditer(q):
        negated, phrase, word = match.groups()
        if word is not None:
            negated, term = word.startswith("-") and len(word) > 1, word
            term = term[1:] if negated else term
        else:
            term = " ".join(phrase.split())
        if term:
            (query.exclude if negated else query.include).append(term)
    if not query.include:
        raise Invalid(_("Type a word to search for."))
    if len(query.include) + len(query.exclude) > MAX_TERMS:
        raise Invalid(_("A search has at most %(max)s words."), max=MAX_TERMS)
    return query


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class ContainsScan(Lookup):
    """`body__search_scan=term`: the same test row by row, for a read that walks a bounded range
    of ids: a plain `ILIKE` on PostgreSQL (the character pairs of each row walked cost more)."""

    lookup_name = "search_scan"

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        if connection.vendor == "postgresql":
            return f"{lhs} ILIKE %s", [*params, _like(self.rhs)]
        return f"instr(lower({lhs}), lower(%s)) > 0", [*params, self.rhs]


class Contains(ContainsScan):
    """`body__search_has=term`: the body holds `term`, ignoring case, in a form the PostgreSQL
    search indexes answer: an `ILIKE` (`search_scan`) for the trigram index, for terms of three
    characters or more, and the character pairs for terms of two. Elsewhere, and for one
    character, it is `search_scan` (SQLite's FTS5 MATCH is added by `matching_q`)."""

    lookup_name = "search_has"

    def as_sql(self, compiler, connection):
        if connection.vendor != "postgresql" or len(self.rhs) != 2:
            return super().as_sql(compiler, connection)
        # The character-pair index (migration 0009_search) finds two-character terms.
        lhs, params = self.process_lhs(compiler, connection)
        sql = f"(chat_bigrams({lhs}) @> ARRAY[lower(%s)] AND {lhs} ILIKE %s)"
        return sql, [*params, self.rhs, *params, _like(self.rhs)]


class WordsContain(Lookup):
    """`body__search_words=(term, lists)`, PostgreSQL only: for each word of `term` (a word, or
    a phrase's words), some word of the body is in its list (the words that contain it, from
    `word_lists`), by the word index; then the body holds `term`, by `strpos` on the lower-cased
    body (what `ILIKE` compares, and which the trigram index cannot answer: the planner uses the
    word index alone)."""

    lookup_name = "search_words"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        term, lists = self.rhs
        sql = " AND ".join([f"chat_words({lhs}) && %s::text[]"] * len(lists) + [f"strpos(lower({lhs}), %s) > 0"])
        return f"({sql})", [*(value for words in lists for value in (*params, words)), *params, term.lower()]


def word_lists(terms: list[str]) -> dict[str, list[str]]:
    """For each word of `terms` (phrases split) of three or more ASCII letters and digits with a
    letter, the words ever written (`chat_word`, migration 0010_search_words) that contain it,
    in one query; PostgreSQL only. A word inside more than WORD_LIST_MAX words is left out: the
    trigram index answers it with fewer lists."""
    latin = sorted({key for t in terms for w in t.split(" ") if (key := _latin_word(w))})
    if connection.vendor != "postgresql" or not latin:
        return {}
    sql = (
        "SELECT t, ARRAY(SELECT word FROM chat_word WHERE word LIKE '%%' || t || '%%' LIMIT %s) "
        "FROM unnest(%s::text[]) AS t"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [WORD_LIST_MAX + 1, latin])
        return {word: found for word, found in cursor.fetchall() if len(found) <= WORD_LIST_MAX}


def _latin_word(word: str) -> str | None:
    """`word` lower-cased if `chat_words` can answer it (three or more ASCII letters and digits
    with a letter), else None. ASCII before lowering: `\u212a` (a Kelvin sign) lowers to `k`
    here, and in PostgreSQL only where the database's ctype says so."""
    if not word.isascii() or len(word) < 3:
        return None
    word = word.lower()
    return word if LATIN_WORD.fullmatch(word) else None


def _indexed(term: str, words: dict[str, list[str]]) -> Q:
    """The second read's test of an included term: by the word index when every word of it has
    a list, else by the trigram or character-pair index."""
    lists = [words.get(_latin_word(w)) for w in term.split(" ")]
    if all(found is not None for found in lists):
        return Q(body__search_words=(term, lists))
    return Q(body__search_has=term)


Message._meta.get_field("body").register_lookup(Contains)
Message._meta.get_field("body").register_lookup(ContainsScan)
Message._meta.get_field("body").register_lookup(WordsContain)


def matching_q(query: Query, *, indexed: bool = True, words: dict[str, list[str]] | None = None) -> Q:
    """The filter for messages matching `query` (deleted ones and access are the caller's).
    `indexed=False`: row by row, for a read that walks a bounded range of ids, where the FTS5
    table would first list every match in the room (SQLite) and the character pairs of each
    row walked would be computed (PostgreSQL). `words`: `word_lists(query.include)`, for the
    terms the word index answers. Exclusions are always tested row by row."""
    has = "body__search_has" if indexed else "body__search_scan"
    found = Q()
    long_terms = [t for t in query.include if len(t) >= 3]
    if connection.vendor == "sqlite" and long_terms and indexed:
        # One MATCH on the trigram table for every long term (FTS5 phrases, implicitly ANDed).
        table = Message._meta.db_table
        phrases = " AND ".join('"' + t.replace('"', '""') + '"' for t in long_terms)
        found &= Q(id__in=RawSQL(f"SELECT rowid FROM {table}_fts WHERE {table}_fts MATCH %s", [phrases]))
        found &= Q(*[Q(**{has: t}) for t in query.include if len(t) < 3])
    elif indexed and words:
        found &= Q(*[_indexed(t, words) for t in query.include])
    else:
        found &= Q(*[Q(**{has: t}) for t in query.include])
    for term in query.exclude:
        found &= ~Q(body__search_scan=term)
    return found


def highlight(body: str, terms: list[str], width: int = HIGHLIGHT_CHARS) -> str:
    """`body` HTML-escaped with every match of `terms` in `<mark>`, ignoring case; a long body
    is cut to a window of about `width` characters around its first match."""
    pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)
    first = pattern.search(body)
    start, end = 0, len(body)
    if len(body) > width:
        at = first.start() if first else 0
        start = max(0, min(at - width // 3, len(body) - width))
        end = start + width
    text = body[start:end]
    parts, pos = [], 0
    for match in pattern.finditer(text):
        parts.append(escape(text[pos : match.start()], quote=False))
        parts.append(f"<mark>{escape(match.group(), quote=False)}</mark>")
        pos = match.end()
    parts.append(escape(text[pos:], quote=False))
    return ("…" if start > 0 else "") + "".join(parts) + ("…" if end < len(body) else "")


def search_messages(
    user, q: str | None, *, room: str | None = None, author: str | None = None, before: int | None = None, limit=20
) -> tuple[list[tuple[Message, str]], bool]:
    """One page of the messages matching `q` that `user` may read, newest first, each with its
    highlight, and whether more lie before it (`before`: a message id, exclusive).

    Two reads at most, so that neither plan's worst case is met: the newest `RECENT` messages
    first (walking the id index backwards, fast when matches are common), then, only if they
    held less than a page, the older ones through the search indexes, sorted after matching
    (`id + 0` keeps the planner off the id index: fast when matches are rare); on PostgreSQL
    the words of the query's Latin terms are looked up before that second read (`word_lists`).
    """
    query = parse(q)
    room_id = selectors.room_for_user(user, room)[0].pk if room else None
    table = Message._meta.db_table
    floor = RawSQL(f"(SELECT MAX(id) FROM {table}) - %s", [RECENT])
    # The walk names the rooms by a subquery: given their ids as values, the planner expected few
    # matches among the newest ids and started parallel workers for it (5-8 ms more).
    recent = _scope(selectors.searchable_room_ids(user), room_id, author, before, indexable=True)
    rows = list(recent.filter(matching_q(query, indexed=False), id__gt=floor).order_by("-id")[: limit + 1])
    if len(rows) <= limit:
        older = _scope(list(selectors.searchable_room_ids(user)), room_id, author, before, indexable=False)
        older = older.filter(matching_q(query, words=word_lists(query.include)), scope_id__lte=floor)
        older = older.order_by("-scope_id")
        rows += list(older[: limit + 1 - len(rows)])
    return [(m, highlight(m.body, query.include)) for m in rows[:limit]], len(rows) > limit


def _scope(room_ids, room_id: int | None, author: str | None, before: int | None, *, indexable: bool):
    """The messages a search may return, before matching: in `room_ids` (a subquery or values),
    and in `room_id` if given.

    Not `indexable`, for the read through the search index: the rooms come as values, so that
    the planner knows how many messages each holds and reads a small room through the room's
    index, a large one through the search index alone (with a subquery it guessed, and ANDed
    the two: 10-35 ms to list a large room's ids for the ten that hold a rare word); and the id
    is tested as `id + 0` (`scope_id`), so that it cannot use that index by the id range either."""
    if indexable:
        found, id_name = Message.objects.all(), "id"
    else:
        found, id_name = Message.objects.alias(scope_id=F("id") + 0), "scope_id"
    found = found.filter(room_id__in=room_ids, deleted=False)
    if room_id is not None:  # a room the caller may not see answered as everywhere else (404, 403, 410)
        found = found.filter(room_id=room_id)
    if author:
        found = found.filter(author__username=author)
    if before is not None:
        found = found.filter(**{f"{id_name}__lt": before})
    return found.select_related("room", "author")
