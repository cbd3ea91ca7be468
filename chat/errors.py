"""The errors services and selectors raise; each maps to one protocol error code and one HTTP status."""
import redis
from django.db import InterfaceError, OperationalError

# Failures of the database or Redis, not of the request: answered `unavailable`, retried later.
INFRASTRUCTURE = (OperationalError, InterfaceError, redis.exceptions.ConnectionError,
                  redis.exceptions.TimeoutError, ConnectionError, TimeoutError)
RETRY_AFTER_S = 2


class ChatError(Exception):
    code = "invalid"
    status = 400

    def __init__(self, detail: str, *, retry_after: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class Invalid(ChatError):
    code, status = "invalid", 400


class NotFound(ChatError):
    code, status = "not_found", 404


class Gone(NotFound):
    """The room exists but is archived."""

    status = 410


class Forbidden(ChatError):
    code, status = "forbidden", 403


class Muted(ChatError):
    code, status = "muted", 403


class RoomLocked(ChatError):
    code, status = "room_locked", 403


class TooLarge(ChatError):
    code, status = "too_large", 413


class RateLimited(ChatError):
    code, status = "rate_limited", 429


class Unavailable(ChatError):
    """The database or Redis failed; nothing was changed."""

    code, status = "unavailable", 503
