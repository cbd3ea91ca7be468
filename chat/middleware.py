"""Refuses a request whose URL (path or query string) breaks the text rule of `chat.protocol`,
before any view looks its parts up in the database (PostgreSQL fails on a NUL); serves the
static files."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpResponseBadRequest, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from django.utils.translation import gettext
from whitenoise.middleware import WhiteNoiseMiddleware

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


class StaticFiles(WhiteNoiseMiddleware):
    """WhiteNoise, with an async path. WhiteNoise's own middleware is sync only, and one sync
    middleware among async ones makes Django run every request under daphne through a thread
    and back (the view's own thread switch included: three in all instead of one)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        super().__init__(get_response)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        if self.autorefresh:  # development: looks on disk, for static URLs only (WHITENOISE_ROOT is not used)
            static = request.path_info.startswith(self.static_prefix)
            static_file = await sync_to_async(self.find_file)(request.path_info) if static else None
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)  # stats and opens the file
        return await self.get_response(request)
