"""Maps service errors to DRF responses: `{"detail": ...}` with the error's status."""

import logging

from django.utils.translation import gettext_lazy as _
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.errors import INFRASTRUCTURE, RETRY_AFTER_S, ChatError, Unavailable

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    if isinstance(exc, INFRASTRUCTURE):
        logger.warning("request failed: %s unavailable", type(exc).__name__)
        exc = Unavailable(
            _("The server cannot reach its database or Redis right now: retry."), retry_after=RETRY_AFTER_S
        )
    if isinstance(exc, ChatError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return Response({"detail": exc.detail, "code": exc.code}, status=exc.status, headers=headers)
    return drf_exception_handler(exc, context)
