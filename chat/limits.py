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
    limit = settings.CHAT_RATE_PER_10S
    now = time.time()
    window = int(now // WINDOW_S)
    key = f"chat:rate:{user_id}:{window}"
    try:
        count = _count(key)
    except INFRASTRUCTURE:
        # The counters live in Redis: while it is away, accept rather than refuse every message.
        logger.warning("rate limit not checked: cache unavailable")
        return
    if count > limit:
        retry_after = max(1, int((window + 1) * WINDOW_S - now + 0.999))
        raise RateLimited(f"Slow down: at most {limit} messages per {WINDOW_S} seconds.", retry_after=retry_after)


def _count(key: str) -> int:
    if settings.REDIS_URL:
        pipe = broker.sync_client().pipeline(transaction=False)
        pipe.incr(f"{settings.REDIS_PREFIX}:{key}")
        pipe.expire(f"{settings.REDIS_PREFIX}:{key}", WINDOW_S * 2)
        return pipe.execute()[0]
    if cache.add(key, 1, timeout=WINDOW_S * 2):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=WINDOW_S * 2)
        return 1
