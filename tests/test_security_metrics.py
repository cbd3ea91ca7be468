"""/metrics answers only its scrapers: configured addresses (the TCP peer) or a bearer token; nginx refuses it."""

from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from django.test import Client

from deploy import cluster
from tests.faults import missing
from tests.live import LIVE_ENV, Endpoint, free_port, run_daphne

OUTSIDE = "203.0.113.7"


def status(remote_addr: str = "127.0.0.1", **headers) -> int:
    return Client().get("/metrics", REMOTE_ADDR=remote_addr, headers=headers).status_code


def test_loopback_reads_and_an_outsider_is_refused(db):
    assert status("127.0.0.1") == 200
    assert status("::1") == 200
    assert status("::ffff:127.0.0.1") == 200
    response = Client().get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 403
    assert b"CHAT_METRICS_ALLOW" in response.content and b"chat_" not in response.content


def test_a_forged_x_forwarded_for_does_not_count(db):
    assert status(OUTSIDE, **{"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}) == 403


def test_configured_networks_are_allowed(db, settings):
    settings.CHAT_METRICS_ALLOW = ["10.0.0.0/8"]
    assert (status("10.1.2.3"), status("127.0.0.1"), status(OUTSIDE)) == (200, 403, 403)


def test_a_bearer_token_opens_it_from_anywhere(db, settings):
    settings.CHAT_METRICS_TOKEN = "scrape-me-0123456789"
    assert status(OUTSIDE, Authorization="Bearer scrape-me-0123456789") == 200
    assert status(OUTSIDE, Authorization="Bearer wrong") == 403
    assert status(OUTSIDE) == 403


def test_no_token_configured_opens_nothing(db, settings):
    settings.CHAT_METRICS_TOKEN = ""
    assert status(OUTSIDE, Authorization="Bearer ") == 403


def http_status(url: str) -> int:
    try:
        with urlopen(Request(url), timeout=10) as response:
            return response.status
    except HTTPError as exc:
        return exc.code


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_the_shipped_nginx_site_refuses_metrics(tmp_path, redis_url):
    """nginx on the same machine reaches the server from loopback: the site itself must refuse /metrics.

    Run as `make cluster` runs it, on Redis, like tests/test_cluster.py's nginx tests (so it
    belongs to `make test-services`, whose machine has nginx)."""
    if cluster.nginx_binary() is None:
        missing("needs nginx (apt-get install nginx)")
    with run_daphne({**LIVE_ENV, "REDIS_URL": redis_url}) as server:
        front = Endpoint(free_port())
        nginx = cluster.Nginx(
            tmp_path,
            cluster.site_config(
                upstreams=[f"127.0.0.1:{server.port}"], listen=f"127.0.0.1:{front.port}", static_root=tmp_path
            ),
        )
        nginx.start()
        try:
            cluster.wait_for_port("127.0.0.1", front.port, nginx.process, timeout=10)
            assert http_status(server.url + "/metrics") == 200  # the scraper's way, straight to the process
            assert http_status(front.url + "/metrics") == 403
            assert http_status(front.url + "/healthz") == 200
        finally:
            nginx.stop()
