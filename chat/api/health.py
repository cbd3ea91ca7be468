"""`/healthz` and `/metrics`: plain Django views for load balancers and scrapers, served outside `/api/`."""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from chat import metrics, sql

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 3


def check_database() -> None:
    sql.ping()


def check_channel_layer() -> None:
    """A `group_send` to a group nobody joins: the path every publish takes, storing nothing.

    On Redis it is a round trip to the server; on the in-memory layer, a no-op.
    """
    layer = get_channel_layer()

    async def probe():
        await asyncio.wait_for(layer.group_send("healthz", {"type": "healthz"}), HEALTH_TIMEOUT_S)

    async_to_sync(probe)()


@require_safe
@never_cache
def healthz(request):
    """200 when the database and the channel layer answer, else 503 naming the part that failed."""
    state = {}
    for name, check in (("database", check_database), ("channel_layer", check_channel_layer)):
        try:
            check()
            state[name] = "ok"
        except Exception:  # any failure means unhealthy; the details go to the log, not to the public
            logger.exception("healthz: %s check failed", name)
            state[name] = "error"
    healthy = all(value == "ok" for value in state.values())
    return JsonResponse(state, status=200 if healthy else 503)


@require_safe
@never_cache
def metrics_view(request):
    """This process's Prometheus metrics, for the addresses in CHAT_METRICS_ALLOW or a bearer of CHAT_METRICS_TOKEN."""
    if not metrics.scraper_allowed(request.META.get("REMOTE_ADDR", ""), request.headers.get("Authorization", "")):
        return HttpResponse(
            "Forbidden: scrape /metrics from an address in CHAT_METRICS_ALLOW, or send "
            "'Authorization: Bearer <CHAT_METRICS_TOKEN>'.\n",
            status=403,
            content_type="text/plain",
        )
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
