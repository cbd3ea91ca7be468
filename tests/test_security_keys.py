"""Production refuses insecure signing keys, and `check --deploy` reports a weak JWT key."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks

BASE_DIR = Path(__file__).resolve().parent.parent
GOOD, OTHER = secrets.token_urlsafe(50), secrets.token_urlsafe(50)
DEV_SECRET = "django-insecure-dev-only-change-me-5v#p2!k"  # the embedded development defaults
DEV_JWT = "jwt-insecure-dev-only-change-me-q8r3w"


def start(code: str, **env) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with `env` over a production-like environment: DEBUG off,
    no keys, and not under pytest (whose runs get random keys of their own)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_VERSION", "DJANGO_SECRET_KEY", "JWT_SIGNING_KEY", "DJANGO_DEBUG")
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "DJANGO_SETTINGS_MODULE": "chatproject.settings", **env},
    )


def settings_refusal(**env) -> str:
    """The error (last line) importing the settings ends with, or "" if they load."""
    done = start("import django; django.setup()", **env)
    if done.returncode == 0:
        return ""
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "env, named",
    [
        ({}, "DJANGO_SECRET_KEY is not set"),
        ({"JWT_SIGNING_KEY": GOOD}, "DJANGO_SECRET_KEY is not set"),
        ({"DJANGO_SECRET_KEY": GOOD}, "JWT_SIGNING_KEY is not set"),
        ({"DJANGO_SECRET_KEY": DEV_SECRET, "JWT_SIGNING_KEY": GOOD}, "DJANGO_SECRET_KEY is a development default"),
        ({"DJANGO_SECRET_KEY": GOOD, "JWT_SIGNING_KEY": DEV_JWT}, "JWT_SIGNING_KEY is a development default"),
        (
            {"DJANGO_SECRET_KEY": GOOD, "JWT_SIGNING_KEY": "change-me-to-another-50-random-characters"},
            "JWT_SIGNING_KEY is a development default or a placeholder",
        ),
        ({"DJANGO_SECRET_KEY": GOOD, "JWT_SIGNING_KEY": "s3cr3t-but-short"}, "JWT_SIGNING_KEY is too weak"),
        ({"DJANGO_SECRET_KEY": "ab" * 40, "JWT_SIGNING_KEY": GOOD}, "DJANGO_SECRET_KEY is too weak"),
        ({"DJANGO_SECRET_KEY": GOOD, "JWT_SIGNING_KEY": GOOD}, "JWT_SIGNING_KEY equals DJANGO_SECRET_KEY"),
    ],
)
def test_without_debug_the_settings_refuse_insecure_keys_naming_the_variable(env, named):
    refusal = settings_refusal(DJANGO_DEBUG="false", **env)
    assert named in refusal
    assert "token_urlsafe" in refusal or "equals" in named  # how to fix it


def test_strong_separate_keys_start():
    assert settings_refusal(DJANGO_SECRET_KEY=GOOD, JWT_SIGNING_KEY=OTHER) == ""


def test_debug_on_runs_on_the_development_keys():
    """`make run` sets DJANGO_DEBUG=true: a fresh clone serves with nothing else set."""
    assert settings_refusal(DJANGO_DEBUG="true") == ""


def test_the_asgi_application_and_manage_py_refuse_too():
    server = start("import chatproject.asgi")
    assert server.returncode != 0 and "DJANGO_SECRET_KEY is not set" in server.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_VERSION", "DJANGO_SECRET_KEY", "JWT_SIGNING_KEY")}
    manage = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        env={**env, "DJANGO_DEBUG": "false"},
        timeout=60,
    )
    assert manage.returncode != 0 and "DJANGO_SECRET_KEY is not set" in manage.stderr


def deploy_check_ids() -> set[str]:
    return {message.id for message in run_checks(include_deployment_checks=True)}


@pytest.mark.parametrize("key", ["", DEV_JWT, "short-key", "x" * 60])
def test_check_deploy_reports_a_weak_jwt_key(settings, key):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": key}
    assert "chat.W001" in deploy_check_ids()


def test_check_deploy_reports_a_jwt_key_equal_to_the_secret_key(settings):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": settings.SECRET_KEY}
    assert "chat.W002" in deploy_check_ids()


def test_check_deploy_accepts_a_strong_jwt_key(settings):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": OTHER}
    assert not {"chat.W001", "chat.W002"} & deploy_check_ids()
