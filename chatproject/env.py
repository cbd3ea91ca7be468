"""Settings from the environment: typed readers for chatproject/settings.py."""

import os
import re

from django.core.exceptions import ImproperlyConfigured


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


RATE_PERIODS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def env_rates(name: str, defaults: dict[str, str]) -> dict[str, tuple[int, int]]:
    """`action=count/period` pairs (period: s, min, hour or day, optionally times a number, as in
    `5/10min`) over `defaults`, which also name the only actions allowed: {action: (count, seconds)}."""
    rates = dict(defaults)
    for item in env_list(name, ""):
        action, _, rate = item.partition("=")
        if action.strip() not in defaults:
            raise ImproperlyConfigured(f"{name}: unknown action '{action.strip()}'; use {', '.join(defaults)}.")
        rates[action.strip()] = rate.strip()
    parsed = {}
    for action, rate in rates.items():
        match = re.fullmatch(r"(\d+)/([1-9]\d*)?([a-z]+)", rate)
        if match is None or match[3] not in RATE_PERIODS:
            raise ImproperlyConfigured(
                f"{name}: '{action}={rate}' is not a rate; write it as 20/min, 5/10s or 10/hour."
            )
        parsed[action] = (int(match[1]), int(match[2] or 1) * RATE_PERIODS[match[3]])
    return parsed
