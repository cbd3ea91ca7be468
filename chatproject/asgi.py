"""ASGI entry point: HTTP goes to Django, WebSockets to the chat consumer."""

import gc
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")

import django  # noqa: E402

django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application, whose handler is replaced

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat import markup  # noqa: E402
from chat.auth import WebSocketAuthMiddleware  # noqa: E402
from chat.handlers import Handler  # noqa: E402
from chat.realtime.daphne import patch_daphne  # noqa: E402
from chat.realtime.routing import websocket_urlpatterns  # noqa: E402
from chat.uploads.limit import BodyLimit  # noqa: E402

patch_daphne()
markup.warm_up()

application = ProtocolTypeRouter(
    {
        "http": BodyLimit(Handler()),
        "websocket": WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)

# Django, DRF and Channels leave over 100,000 objects behind at import, and every full
# garbage collection walks them with the GIL held: 85-90 ms without a frame sent or a
# message written, measured under load (about 20 ms once they are frozen).
gc.freeze()

# The event loop and the database thread share the GIL. Back from each round trip to the
# database or Redis (three per batch of messages), the database thread waits for the loop to
# let go of it, and under load the loop lets go only when the switch interval is up.
sys.setswitchinterval(settings.CHAT_SWITCH_INTERVAL_MS / 1000)
