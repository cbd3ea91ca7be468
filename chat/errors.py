"""The errors services and selectors raise; each maps to one protocol error code and one HTTP status."""

import redis
from django.db import InterfaceError, OperationalError
from django.utils import translation
from django.utils.functional import lazy

# Failures of the database or Redis, not of the request: answered `unavailable`, retried later.
INFRASTRUCTURE = (
    OperationalError,
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
RETRY_AFTER_S = 2


class TranslatedError(Exception):
    """An error a person reads: `message` (a `gettext_lazy` string, its placeholders named) and the
    `params` that fill them, rendered when read rather than when raised. A send refused inside the
    batch writer is answered on its own connection, in that connection's language."""

    def __init__(self, message, **params):
        super().__init__(message)
        self.message, self.params = message, params

    @property
    def detail(self) -> str:
        """In the active language: the request's (LocaleMiddleware), or the connection's."""
        text = str(self.message)
        return text % self.params if self.params else text

    @property
    def reason(self) -> str:
        """In English: close reasons and logs are for protocol and operators, never translated."""
        with translation.override("en"):
            return self.detail

    def __str__(self) -> str:
        return self.detail


class ChatError(TranslatedError):
    code = "invalid"
    status = 400

    def __init__(self, message, *, retry_after: int | None = None, **params):
        if retry_after is not None:  # a placeholder the message may name
            params.setdefault("retry_after", retry_after)
        super().__init__(message, **params)
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


def _interpolate(message, params: dict) -> str:
    return str(message) % params


# `gettext_lazy(...) % params` translates at once; this waits until the text is read, like `detail`.
interpolate_lazy = lazy(_interpolate, str)
