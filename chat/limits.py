"""Per-user write budgets (messages, and each action of CHAT_WRITE_RATES), shared by every
process through Redis (the local cache without it), and the flags that pace join/leave notes."""

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext_lazy as _

from . import broker
from .errors import INFRASTRUCTURE, RateLimited

logger = logging.getLogger(__name__)

WINDOW_S = 10

# What each budget counts, for its refusal.
NOUNS = {
    "send": _("messages"),
    "join": _("room joins"),
    "leave": _("room leaves"),
    "edit": _("edits"),
    "delete": _("deletions"),
    "report": _("reports"),
    "invite": _("invitations"),
    "room": _("new rooms"),
    "direct": _("new direct conversations"),
    "update": _("room changes"),
    "react": _("reactions"),
    "upload": _("uploads"),
}


def check_send_rate(user_id: int) -> None:
    """Count one message for `user_id`; raise RateLimited once the 10-second window is full."""
    refusal = check_send_rates([user_id])[0]
    if refusal is not None:
        raise refusal


def check_send_rates(user_ids: list[int]) -> list[RateLimited | None]:
    """`check_send_rate` for one message of each user in `user_ids`, in order (a user may
    appear more than once), in one Redis round trip. Returns the refusal or None for each."""
    return _check("send", user_ids, settings.CHAT_RATE_PER_10S, WINDOW_S)


def check_rate(action: str, user_id: int) -> None:
    """Count one `action` (a key of CHAT_WRITE_RATES) for `user_id`; raise RateLimited beyond its budget."""
    limit, window_s = settings.CHAT_WRITE_RATES[action]
    refusal = _check(action, [user_id], limit, window_s)[0]
    if refusal is not None:
        raise refusal


def _check(action: str, user_ids: list[int], limit: int, window_s: int) -> list[RateLimited | None]:
    """Count one `action` for each of `user_ids` in the current fixed window of `window_s` seconds.

    A fixed window costs one Redis round trip; its worst-case burst (twice the limit
    across a window edge) is acceptable for chat.
    """
    if not user_ids:
        return []
    now = time.time()
    window = int(now // window_s)
    try:
        counts = _counts([(f"chat:rate:{action}:{user_id}:{window}", window_s * 2) for user_id in user_ids])
    except INFRASTRUCTURE:
        # The counters live in Redis: while it is away, accept rather than refuse every write.
        logger.warning("rate limit not checked: cache unavailable")
        return [None] * len(user_ids)
    retry_after = max(1, int((window + 1) * window_s - now + 0.999))
    detail = _("Slow down: at most %(limit)s %(things)s per %(window)s seconds; try again in %(retry_after)s s.")
    params = {"limit": limit, "things": NOUNS[action], "window": window_s}
    return [RateLimited(detail, retry_after=retry_after, **params) if count > limit else None for count in counts]


def _counts(keys: list[tuple[str, int]]) -> list[int]:
    """Increment each (key, seconds it lives) (a key listed twice counts twice); the counts after each increment."""
    if settings.REDIS_URL:
        pipe = broker.sync_client().pipeline(transaction=False)
        for key, expire_s in keys:
            pipe.incr(f"{settings.REDIS_PREFIX}:{key}")
            pipe.expire(f"{settings.REDIS_PREFIX}:{key}", expire_s)
        return pipe.execute()[::2]
    return [_cache_count(key, expire_s) for key, expire_s in keys]


def _cache_count(key: str, expire_s: int) -> int:
    if cache.add(key, 1, timeout=expire_s):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=expire_s)
        return 1


# Flags: a key that is set for a while, in the same store as the counters.


def flag_is_set(key: str) -> bool:
    """Whether `key` is set; False when the store is unreachable."""
    try:
        if settings.REDIS_URL:
            return bool(broker.sync_client().exists(f"{settings.REDIS_PREFIX}:{key}"))
        return cache.get(key) is not None
    except INFRASTRUCTURE:
        logger.warning("flag %s not read: cache unavailable", key)
        return False


def set_flag(key: str, seconds: int | None) -> None:
    """Set `key` for `seconds` (None: clear it). Best effort: a store that is away loses it."""
    try:
        if settings.REDIS_URL:
            client, key = broker.sync_client(), f"{settings.REDIS_PREFIX}:{key}"
            client.set(key, 1, ex=seconds) if seconds else client.delete(key)
        else:
            cache.set(key, 1, timeout=seconds) if seconds else cache.delete(key)
    except INFRASTRUCTURE:
        logger.warning("flag %s not set: cache unavailable", key)
