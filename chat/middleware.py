"""Refuses a request whose URL (path or query string) breaks the text rule of `chat.protocol`,
before any view looks its parts up in the database (PostgreSQL fails on a NUL)."""

from asgiref.sync import iscoroutinefunction
from django.http import HttpResponseBadRequest, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from django.utils.translation import gettext

from . import protocol


def _refusal(request):
    texts = [request.path, *(text for key, values in request.GET.lists() for text in (key, *values))]
    if not any(protocol.unstorable(text) for text in texts):
        return None
    if request.path.startswith("/api/"):
        return JsonResponse(
            {
                "detail": gettext(
                    "The URL must not contain NUL (U+0000) or unpaired surrogates "
                    "(U+D800-U+DFFF): send valid Unicode text."
                ),
                "code": protocol.INVALID,
            },
            status=400,
        )
    return HttpResponseBadRequest(
        gettext("The address must not contain NUL characters or unpaired surrogates: correct it."),
        content_type="text/plain; charset=utf-8",
    )


@sync_and_async_middleware
def valid_text_urls(get_response):
    if iscoroutinefunction(get_response):

        async def middleware(request):
            return _refusal(request) or await get_response(request)
    else:

        def middleware(request):
            return _refusal(request) or get_response(request)

    return middleware
