"""Prometheus metrics of this process, served at /metrics.

Each server process exposes its own; the scraper adds them up across processes. Only the
addresses in CHAT_METRICS_ALLOW (loopback by default) or a scraper sending CHAT_METRICS_TOKEN
may read them.
"""

import hmac
import ipaddress

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Its value is read from `chat.realtime.connections`, which registers the function that counts them.
OPEN_CONNECTIONS = Gauge("chat_open_connections", "WebSocket connections open on this process")
DIRECT_CONNECTIONS = Gauge(
    "chat_direct_connections",
    "Open connections whose frames the hub writes straight to "
    "their socket (fewer than chat_open_connections: something wraps daphne's ASGI send)",
)
MESSAGES_ACCEPTED = Counter("chat_messages_accepted", "Messages persisted (duplicates of a client_id excluded)")
MESSAGES_DELIVERED = Counter("chat_messages_delivered", "message.new frames written to WebSocket clients")
LAYER_GAPS = Counter(
    "chat_layer_gap_messages",
    "Messages read from the database because their event came late or never "
    "(once per process, or per connection when too many were missing)",
)
LAYER_RESETS = Counter("chat_layer_resets", "Times the watchdog closed every socket after a Redis outage or restart")
LAYER_DROPS = Counter(
    "chat_layer_drops", "Events dropped for a connection whose inbox (or in-process layer queue) was full"
)
PUBLISH_FAILURES = Counter("chat_publish_failures", "Channel-layer sends that failed (the change was committed)")
SEND_TO_PERSIST = Histogram(
    "chat_send_to_persist_seconds",
    "From a message.send frame's arrival to its commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


def scraper_allowed(remote_addr: str, authorization: str) -> bool:
    """Whether a request from `remote_addr` (the TCP peer, never X-Forwarded-For, which anyone
    can write) with this Authorization header may read the metrics."""
    scheme, _, token = authorization.partition(" ")
    if settings.CHAT_METRICS_TOKEN and scheme.lower() == "bearer":
        return hmac.compare_digest(token.strip().encode(), settings.CHAT_METRICS_TOKEN.encode())
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.CHAT_METRICS_ALLOW)
