"""Per-user message rate limit, shared by every process through Redis (the local cache without it)."""
import logging
import time

from django.conf import settings
from django.core.cache import cache

from . import broker
from .errors import INFRASTRUCTURE, RateLimited

logger = logging.getLogger(__name__)

WINDOW_S = 10


def check_send_rate(user_id: int) -> None:
    """Count one message for `user_id`; raise RateLimited once the 10-second window is full.

    A fixed window costs one Redis round trip; its worst-case burst (twice the limit
    across a window edge) is acceptable for chat.
    """
    refusal = check_send_rates([user_id])[0]
    if refusal is not None:
        raise refusal


def check_send_rates(user_ids: list[int]) -> list[RateLimited | None]:
    """`check_send_rate` for one message of each user in `user_ids`, in order (a user may
    appear more than once), in one Redis round trip. Returns the refusal or None for each."""
    if not user_ids:
        return []
    limit = settings.CHAT_RATE_PER_10S
    now = time.time()
    window = int(now // WINDOW_S)
    try:
        counts = _counts([f"chat:rate:{user_id}:{window}" for user_id in user_ids])
    except INFRASTRUCTURE:
        # The counters live in Redis: while it is away, accept rather than refuse every message.
        logger.warning("rate limit not checked: cache unavailable")
        return [None] * len(user_ids)
    retry_after = max(1, int((window + 1) * WINDOW_S - now + 0.999))
    return [RateLimited(f"Slow down: at most {limit} messages per {WINDOW_S} seconds.", retry_after=retry_after)
            if count > limit else None for count in counts]


def _counts(keys: list[str]) -> list[int]:
    """Increment each key (a key listed twice counts twice); the counts after each increment."""
    if settings.REDIS_URL:
        pipe = broker.sync_client().pipeline(transaction=False)
        for key in keys:
            pipe.incr(f"{settings.REDIS_PREFIX}:{key}")
            pipe.expire(f"{settings.REDIS_PREFIX}:{key}", WINDOW_S * 2)
        return pipe.execute()[::2]
    return [_cache_count(key) for key in keys]


def _cache_count(key: str) -> int:
    if cache.add(key, 1, timeout=WINDOW_S * 2):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=WINDOW_S * 2)
        return 1
