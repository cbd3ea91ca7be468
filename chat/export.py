"""History export: one generator of encoded chunks behind `GET /api/rooms/<slug>/export/` and `manage.py export_history`.

Rows come from one query iterated in chunks (`.iterator()`: a server-side cursor on
PostgreSQL, chunked fetches on SQLite), and the output is yielded in blocks of about
`BLOCK_BYTES`, so memory stays flat whatever the room's size. Each row is `message_data`,
the one message representation; CSV flattens it.

`since` and `until` are message ids: `since` exclusive (as in the WebSocket `since`, so a
previous export's last id resumes it), `until` inclusive (the last id wanted).

Each export served over HTTP holds a database connection and a thread for as long as its
client takes to read it, so `export_slot` caps them per user and per process.
"""

import csv
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from . import selectors, sql
from .errors import Forbidden, Invalid, RateLimited
from .models import Message, Room
from .serializers import message_data

# format -> (media type, file extension)
FORMATS = {
    "json": ("application/json", "json"),
    "ndjson": ("application/x-ndjson", "ndjson"),
    "csv": ("text/csv; charset=utf-8", "csv"),
}
# No `html`: a spreadsheet shows text, and `body` is its source. New columns go at the end, so
# that a reader of the earlier columns by position keeps working.
CSV_COLUMNS = [
    "id",
    "created_at",
    "author",
    "kind",
    "body",
    "edited_at",
    "deleted",
    "client_id",
    "reply_to",
    "thread",
    "reply_count",
    "mentions",
    "reactions",
    "seq",
    "attachments",
]
# Spreadsheets evaluate a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# The BOM tells spreadsheet software the file is UTF-8.
BOM = "\ufeff"
# Rows held per export while its client reads: up to CHAT_MAX_BODY characters each, times the exports running.
ROWS_PER_FETCH = 100
SQLITE_EXPORT_CACHE_KIB = 128
BLOCK_BYTES = 64 * 1024
EXPORT_RETRY_AFTER_S = 30  # an export of a large room takes about that long

# user id -> exports this process is serving them; guarded by _slots_lock (views run in several threads).
_running: Counter = Counter()
_slots_lock = threading.Lock()


def room_for_export(user, slug: str) -> Room:
    """The room, if `user` may export it: its members and staff. Raises as `room_for_user` does,
    and Forbidden for a non-member of a public room (reading a page is not taking the archive)."""
    room, membership = selectors.room_for_user(user, slug)
    if membership is None and not user.is_staff:
        raise Forbidden(_("Only members of '%(slug)s' and staff can export its history: join it first."), slug=slug)
    return room


def export_filename(room: Room, fmt: str) -> str:
    return f"{room.slug}-history.{FORMATS[fmt][1]}"


class ExportSlot:
    """One export in progress for `user_id`; `release()` (idempotent) gives it back."""

    def __init__(self, user_id: int):
        self.user_id, self.released = user_id, False

    def release(self) -> None:
        with _slots_lock:
            if not self.released:
                self.released = True
                _running[self.user_id] -= 1
                if not _running[self.user_id]:
                    del _running[self.user_id]


def export_slot(user) -> ExportSlot:
    """Take one of this process's export slots for `user`; raises RateLimited (429 with Retry-After)
    when the user already runs CHAT_EXPORTS_PER_USER exports here, or the process CHAT_EXPORTS_PER_PROCESS."""
    with _slots_lock:
        if _running[user.pk] >= settings.CHAT_EXPORTS_PER_USER:
            raise RateLimited(
                _(
                    "You already have %(count)s exports running: let one finish first "
                    "(a later export can resume with 'since')."
                ),
                count=_running[user.pk],
                retry_after=EXPORT_RETRY_AFTER_S,
            )
        if sum(_running.values()) >= settings.CHAT_EXPORTS_PER_PROCESS:
            raise RateLimited(
                _("The server is serving as many exports as it can right now: retry later."),
                retry_after=EXPORT_RETRY_AFTER_S,
            )
        _running[user.pk] += 1
        return ExportSlot(user.pk)


class HeldChunks:
    """An export's blocks that hold `slot` until closed: Django closes a response's iterator when
    the response ends, and `aiter_chunks` when its client leaves, even before the first block."""

    def __init__(self, chunks: Iterator[bytes], slot: ExportSlot):
        self.chunks, self.slot = chunks, slot

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        try:
            self.chunks.close()
        finally:
            self.slot.release()

    def __del__(self):
        # A response cancelled before its first block closes nothing: the slot goes back when it is collected.
        self.slot.release()


def export_messages(room: Room, *, since: int | None = None, until: int | None = None):
    """The room's messages in the range, ascending by id (a queryset, not yet evaluated)."""
    messages = Message.objects.filter(room=room)
    if since is not None:
        messages = messages.filter(id__gt=since)
    if until is not None:
        messages = messages.filter(id__lte=until)
    return messages.select_related("room", "author").order_by("id")


def export_chunks(
    room: Room,
    fmt: str,
    *,
    since: int | None = None,
    until: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """UTF-8 blocks of the export; `progress(count)` is called with the rows written so far after each block.

    Raises Invalid at once, before anything is streamed, for an unknown format or an empty range.
    """
    if fmt not in FORMATS:
        raise Invalid(
            _("Unknown export format '%(format)s': use one of %(formats)s."), format=fmt, formats=", ".join(FORMATS)
        )
    for name, value in (("since", since), ("until", until)):
        if value is not None and value < 0:
            raise Invalid(_("'%(name)s' is a message id: use a number from 0 up."), name=name)
    if since is not None and until is not None and until <= since:
        raise Invalid(_("'until' must be greater than 'since' (since is exclusive, until inclusive)."))
    return _chunks(export_messages(room, since=since, until=until), ENCODERS[fmt], progress)


def _chunks(messages, encoder, progress) -> Iterator[bytes]:
    head, encode_row, separator, tail = encoder
    # The head goes out before the query runs, so the download starts at once.
    yield head().encode()
    parts, size, count = [], 0, 0
    with sql.sqlite_page_cache(messages.db, SQLITE_EXPORT_CACHE_KIB):
        for message in messages.iterator(chunk_size=ROWS_PER_FETCH):
            row = encode_row(message)
            parts.append(separator + row if count else row)
            size += len(row)
            count += 1
            if size >= BLOCK_BYTES:
                yield "".join(parts).encode()
                parts, size = [], 0
                if progress:
                    progress(count)
    parts.append(tail(count))
    yield "".join(parts).encode()
    if progress:
        progress(count)


def _json(message: Message) -> str:
    return json.dumps(message_data(message), ensure_ascii=False)


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    value = str(value)
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _csv_line(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_csv_cell(v) for v in values])  # QUOTE_MINIMAL, "\r\n" as RFC 4180 says
    return buffer.getvalue()


def _csv_row(message: Message) -> str:
    data = message_data(message)
    data["author"] = data["author"] and data["author"]["username"]
    data["mentions"] = " ".join(user["username"] for user in data["mentions"])
    data["reactions"] = (
        json.dumps(data["reactions"], ensure_ascii=False, separators=(",", ":")) if data["reactions"] else ""
    )
    # Files are listed (their metadata and URL as in `message_data`), never inlined.
    data["attachments"] = (
        json.dumps(data["attachments"], ensure_ascii=False, separators=(",", ":")) if data["attachments"] else ""
    )
    return _csv_line(data[column] for column in CSV_COLUMNS)


# format -> (head, row, separator between rows, tail given the row count)
ENCODERS = {
    "json": (lambda: "[", _json, ",\n", lambda count: "]\n"),
    "ndjson": (lambda: "", lambda m: _json(m) + "\n", "", lambda count: ""),
    "csv": (lambda: BOM + _csv_line(CSV_COLUMNS), _csv_row, "", lambda count: ""),
}


async def aiter_chunks(chunks: Iterator[bytes]):
    """`chunks` pulled one block at a time in Django's sync thread, for a response served under ASGI.

    Django would turn a sync iterator into a list first (`StreamingHttpResponse.__aiter__`),
    holding the whole export in memory; thread-sensitive calls keep the cursor on the
    request's database connection.
    """
    pull = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await pull(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()
