"""The Django handler daphne calls for HTTP (chatproject/asgi.py)."""

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.core.handlers.base import BaseHandler
from django.urls import get_resolver

from .uploads.limit import BodyFileHandler


class Handler(BodyFileHandler):
    """A request for a sync view (the pages, the REST API) goes to a thread once, where the
    middleware and the view run as under WSGI. Django's async mode would go to a thread and back
    for each of a Django middleware's hooks, about twenty switches a request (bench/README.md,
    item 32). A request for an async view (uploads, downloads) keeps the async path, so that a
    long upload never holds the request's thread."""

    def __init__(self):
        super().__init__()
        self.sync_handler = BaseHandler()
        self.sync_handler.load_middleware(is_async=False)

    async def get_response_async(self, request):
        if async_view(request.path_info):
            return await super().get_response_async(request)
        return await sync_to_async(self.sync_handler.get_response, thread_sensitive=True)(request)


def async_view(path_info: str) -> bool:
    """Whether `path_info` resolves to an async view. A path that does not resolve goes the sync
    way, whose chain answers it (404, the slash redirect, or a 500 for a broken URLconf). The
    root URLconf is resolved as is: with `i18n_patterns` or a middleware setting
    `request.urlconf`, an async view could be missed and run through `async_to_sync`, slower."""
    try:
        return iscoroutinefunction(get_resolver().resolve(path_info).func)
    except Exception:
        return False
