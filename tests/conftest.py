"""Shared fixtures: users, JWT-authenticated API clients, a recorder of published events, a fresh
channel layer, the rooms every module uses, and the service tests' checks of what a call changed
(`committed`, `refused`). Helpers that are not fixtures are in tests/support.py."""

import importlib.util
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from chat import broker, events, services
from tests.support import PASSWORD, access_token, flush_layers, joined, snapshot

User = get_user_model()

pytest_plugins = [
    "tests.live",
    "tests.faults",
]  # fixtures for real servers: daphne_a/b, redis_url, private_redis, pg_proxy


def _missing() -> set[str]:
    """What this run lacks of what some tests need (the markers `redis`, `postgres`, `browser`, `gettext`, `s3`)."""
    from django.conf import settings

    missing = set()
    if not settings.REDIS_URL:
        missing.add("redis")
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.add("postgres")
    if not Path("/usr/bin/chromium").exists():
        missing.add("browser")
    if shutil.which("xgettext") is None:
        missing.add("gettext")
    if importlib.util.find_spec("moto") is None:
        missing.add("s3")
    return missing


def pytest_sessionstart(session):
    """The compiled catalogues, as `make test` builds them: pages, sockets and live servers speak Chinese."""
    from django.core.management import call_command

    call_command("build_catalogues", verbosity=0)


def pytest_collection_modifyitems(config, items):
    """Tests needing a service this run lacks belong to the other run (`make test-services`):
    they are deselected, and listed as such, never collected and skipped. Under
    CHAT_REQUIRE_SERVICES=1 nothing is deselected, so a missing service fails them."""
    if os.environ.get("CHAT_REQUIRE_SERVICES") == "1":
        return
    missing = _missing()
    keep, drop = [], []
    for item in items:
        needs = {marker.name for marker in item.iter_markers()} & {"redis", "postgres", "browser", "gettext", "s3"}
        if "redis_url" in getattr(item, "fixturenames", ()):
            needs.add("redis")
        (drop if needs & missing else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _isolated_cache(settings):
    """Each test starts with empty rate-limit counters, and hashes passwords cheaply."""
    from django.core.cache import cache

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if settings.REDIS_URL:  # only this run's keys: other runs may share the Redis database
        client = broker.sync_client()
        keys = list(client.scan_iter(f"{settings.REDIS_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)
    else:
        cache.clear()
    yield


@pytest.fixture
def make_user(db):
    def make(username="alice", password=PASSWORD, **extra):
        return User.objects.create_user(username=username, password=password, **extra)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def dave(make_user):
    return make_user("dave")


@pytest.fixture
def staff(make_user):
    """A staff member, not a superuser."""
    return make_user("root", is_staff=True)


@pytest.fixture
def admin_user(make_user):
    """A superuser (in place of pytest-django's, so that it goes through `make_user`)."""
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def api():
    """An APIClient factory: `api(user)` is authenticated with a JWT, `api()` is anonymous."""

    def client(user=None):
        c = APIClient()
        if user is not None:
            c.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token(user)}")
        return c

    return client


@pytest.fixture
def published(monkeypatch):
    """Records every event sent to the channel layer as (group, event).

    Events are round-tripped through JSON (the Redis layer uses msgpack), so a payload
    that is not plain data fails here. `chat.frame` events get their decoded `frame`.
    """
    sent = []

    def record(group, event):
        event = json.loads(json.dumps(event))
        if "text" in event:
            event["frame"] = json.loads(event["text"])
        sent.append((group, event))

    monkeypatch.setattr(events, "send", record)
    return sent


@pytest.fixture
async def fresh_layer():
    """A channel layer per test (layers hold queues bound to the test's event loop), and no
    presence left from another test. Modules of communicator tests use it with `usefixtures`."""
    from channels.layers import channel_layers
    from django.conf import settings

    channel_layers.backends = {}
    if settings.REDIS_URL:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        keys = await client.keys(f"{settings.REDIS_PREFIX}:presence:*")
        if keys:
            await client.delete(*keys)
        await client.aclose()
    yield
    await flush_layers()


# The service tests' checks (tests/test_services_*.py, and others that write through services)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """`with committed():` runs the on-commit callbacks (the publishes) registered inside."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def refused(published, committed):
    """`with refused(Error):` the call raises Error, changes no row and publishes nothing."""

    @contextmanager
    def check(error, match=None):
        before = snapshot()
        with pytest.raises(error, match=match) as info:
            with committed():
                yield info
        assert snapshot() == before
        assert published == []

    return check


# Rooms


@pytest.fixture
def general(alice):
    """A public room `general` owned by alice, its only member."""
    return services.room_create(user=alice, name="General", slug="general")


@pytest.fixture
def general_with_bob(general, bob):
    """`general` with bob as a member too."""
    return joined(general, bob)


@pytest.fixture
def general_with_bob_and_carol(general_with_bob, carol):
    return joined(general_with_bob, carol)


@pytest.fixture
def general_of_four(general_with_bob_and_carol, dave):
    """`general` with alice (owner), bob, carol and dave."""
    return joined(general_with_bob_and_carol, dave)


@pytest.fixture
def secret(alice):
    """A private room `secret` owned by alice, its only member."""
    return services.room_create(user=alice, name="Secret", slug="secret", kind="private")
