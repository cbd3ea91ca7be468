"""Maps service errors to DRF responses: `{"detail": ...}` with the error's status."""
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.errors import ChatError


def exception_handler(exc, context):
    if isinstance(exc, ChatError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return Response({"detail": exc.detail, "code": exc.code}, status=exc.status, headers=headers)
    return drf_exception_handler(exc, context)
