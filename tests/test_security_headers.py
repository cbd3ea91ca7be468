"""Security headers: a Content-Security-Policy without inline scripts or styles on every page, pages
that need none, the TLS settings from the environment, and `check --deploy` clean in the
production environment docs/deployment.md gives."""

import os
import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client

from chat import services

BASE_DIR = Path(__file__).resolve().parent.parent


class InlineFinder(HTMLParser):
    """What a CSP without 'unsafe-inline' blocks: inline scripts, <style>, style="", on*="" and javascript: URLs."""

    def __init__(self):
        super().__init__()
        self.found, self._in_script = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" not in attrs and attrs.get("type") != "application/json":
            self._in_script = True
        if tag == "style":
            self.found.append("<style>")
        self.found += [
            f'{tag} {name}="{value}"'
            for name, value in attrs.items()
            if name == "style" or name.startswith("on") or (value or "").strip().lower().startswith("javascript:")
        ]

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"inline script: {data.strip()[:60]}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def inline_parts(html: bytes) -> list[str]:
    finder = InlineFinder()
    finder.feed(html.decode())
    return finder.found


def directives(response) -> dict[str, set[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    return {name: set(values) for name, *values in (part.split() for part in header.split(";") if part.strip())}


@pytest.fixture
def pages(general, alice, admin_user):
    """(client, path) for every kind of page: signed out, the chat pages, the admin, the API docs."""
    room = general
    services.message_send(user=alice, slug="general", body="<b onclick='x()'>hi</b> style=\"color:red\"")
    services.direct_room(user=alice, username=admin_user.username)
    user, admin = Client(), Client()
    user.force_login(alice)
    admin.force_login(admin_user)
    return [
        (Client(), "/login/"),
        (Client(), "/register/"),
        (Client(), "/api/docs/"),
        (user, "/"),
        (user, "/rooms/general/"),
        (user, "/rooms/nope/"),
        (admin, "/admin/"),
        (admin, f"/admin/chat/room/{room.pk}/change/"),
    ] + [
        (admin, f"/admin/{model}/")
        for model in (
            "chat/room",
            "chat/membership",
            "chat/message",
            "chat/moderationaction",
            "chat/report",
            "auth/user",
        )
    ]


def test_every_page_sends_a_policy_without_inline_scripts_or_styles(pages):
    for client, path in pages:
        response = client.get(path)
        policy = directives(response)
        assert policy.get("script-src") == {"'self'"}, (path, policy)
        assert policy.get("style-src") == {"'self'"}, (path, policy)
        assert (policy.get("object-src"), policy.get("frame-ancestors")) == ({"'none'"}, {"'none'"}), path


def test_pages_hold_nothing_that_policy_blocks(pages):
    for client, path in pages:
        response = client.get(path)
        assert response.status_code in (200, 404), path
        assert inline_parts(response.content) == [], path


def test_the_api_docs_start_from_a_script_of_this_origin(db):
    page = Client().get("/api/docs/").content.decode()
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts and all(src.startswith("/") for src in scripts)
    assert "googleapis" not in page


def test_tls_settings_take_effect(db, settings):
    """What the DJANGO_SECURE_* variables set takes effect: HSTS, the redirect to https (not for
    the probes), secure cookies. That the environment sets them: the check --deploy test below."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    client = Client()
    assert client.get("/login/").status_code == 301
    assert client.get("/healthz").status_code in (200, 503) and client.get("/metrics").status_code == 200
    secure = client.get("/login/", headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")
    assert secure.cookies["csrftoken"]["secure"] is True


def production_environment() -> dict[str, str]:
    """The environment docs/deployment.md gives for production, its `<...>` placeholders filled in."""
    text = (BASE_DIR / "docs" / "deployment.md").read_text()
    block = re.search(r"<!-- production environment -->\n```sh\n(.*?)```", text, re.S).group(1)
    env = {}
    for line in block.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = secrets.token_urlsafe(50) if value.startswith("<") else value
    return env


def test_check_deploy_is_clean_in_the_documented_production_environment():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "JWT_", "CHAT_")) and k not in ("PYTEST_VERSION", "REDIS_URL", "DATABASE_URL")
    }
    production = production_environment()
    assert {"DJANGO_SECRET_KEY", "JWT_SIGNING_KEY", "DJANGO_SECURE_HSTS_SECONDS"} <= production.keys()
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env={**env, **production},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
