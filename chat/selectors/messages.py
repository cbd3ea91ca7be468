"""Reads of a room's messages: history pages, threads, and what a resume replays."""

from ..models import Message, Room


def last_message_id(room: Room) -> int | None:
    return Message.objects.filter(room=room).order_by("-id").values_list("id", flat=True).first()


def message_history(
    room: Room, *, before: int | None = None, after: int | None = None, limit: int = 50
) -> tuple[list[Message], bool]:
    """One keyset page, ascending by id, and whether more lie beyond it.

    `after` pages forward from an id; otherwise the page is the newest before `before`
    (or the newest overall). Two queries at most, whatever `limit` is.
    """
    qs = Message.objects.filter(room=room).select_related("room", "author")
    if after is not None:
        qs = qs.filter(id__gt=after)
        if before is not None:
            qs = qs.filter(id__lt=before)
        rows = list(qs.order_by("id")[: limit + 1])
        return rows[:limit], len(rows) > limit
    if before is not None:
        qs = qs.filter(id__lt=before)
    rows = list(qs.order_by("-id")[: limit + 1])
    has_more = len(rows) > limit
    return list(reversed(rows[:limit])), has_more


def message_page_around(room: Room, around: int, *, limit: int = 50) -> tuple[list[Message], bool, bool]:
    """The page centred on id `around` (which it holds when it exists), ascending by id, and
    whether more lie before and after it. Near either end of the history the other side fills
    the page, so it holds `limit` messages whenever the room has them. Two keyset reads, like
    `message_history`."""
    before, more_before = message_history(room, before=around + 1, limit=limit)
    after, more_after = message_history(room, after=around, limit=limit)
    take_after = min(len(after), max(limit // 2, limit - len(before)))
    take_before = min(len(before), limit - take_after)
    page = before[len(before) - take_before :] + after[:take_after]
    return page, more_before or take_before < len(before), more_after or take_after < len(after)


def messages_since(room_id: int, since: int, limit: int, until: int | None = None) -> tuple[list[Message], bool]:
    """Messages after `since` (and up to `until`), ascending; if more than `limit`, the newest `limit` and True (a gap)."""
    rows = Message.objects.filter(room_id=room_id, id__gt=since)
    if until is not None:
        rows = rows.filter(id__lte=until)
    rows = list(rows.select_related("room", "author").order_by("-id")[: limit + 1])
    gap = len(rows) > limit
    return list(reversed(rows[:limit])), gap


def changed_since(room_id: int, seq: int, limit: int) -> tuple[list[Message], bool]:
    """The room's messages whose last change came after `seq`, in seq order; beyond `limit`, the first `limit` and True."""
    rows = list(
        Message.objects.filter(room_id=room_id, seq__gt=seq)
        .select_related("room", "author")
        .order_by("seq")[: limit + 1]
    )
    return rows[:limit], len(rows) > limit


def changes_since(
    room_id: int, after_seq: int, through_id: int, limit: int, until_seq: int | None = None
) -> tuple[list[Message], bool]:
    """The room's messages up to id `through_id` changed after `after_seq` (and up to `until_seq`),
    in seq order; if more than `limit`, the first `limit` and True (a gap)."""
    rows = Message.objects.filter(room_id=room_id, seq__gt=after_seq, id__lte=through_id)
    if until_seq is not None:
        rows = rows.filter(seq__lte=until_seq)
    rows = list(rows.select_related("room", "author").order_by("seq")[: limit + 1])
    return rows[:limit], len(rows) > limit


def last_message_id_for(room_id: int) -> int | None:
    return Message.objects.filter(room_id=room_id).order_by("-id").values_list("id", flat=True).first()
