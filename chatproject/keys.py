"""What makes a signing key fit for production, and random keys for servers started locally.

Plain Python, no Django: the settings, the `check --deploy` check (chat/checks.py) and the
launchers in bench/ and deploy/cluster.py all use it.
"""

import secrets

# Django's own bar for SECRET_KEY (security.W009), applied to the JWT key too: HS256 wants
# at least 256 bits, and 50 random characters of `token_urlsafe` carry about 300.
MIN_LENGTH = 50
MIN_UNIQUE_CHARACTERS = 5
# Words of the development defaults and of deploy/chat.env.example's placeholders.
PLACEHOLDERS = ("insecure", "change-me", "changeme")

HOW_TO_SET = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def gettext_noop(message: str) -> str:
    """Django's marker, without Django: `makemessages` collects the message, chat/checks.py translates it."""
    return message


def key_problem(value: str, translate=str) -> str | None:
    """Why `value` is no production key, or None if it is one; `translate` (a gettext) says it in the
    active language, for `check --deploy`. The settings say it in English: they load before Django."""
    if not value:
        return translate(gettext_noop("is not set"))
    if any(word in value.lower() for word in PLACEHOLDERS):
        return translate(gettext_noop("is a development default or a placeholder"))
    if len(value) < MIN_LENGTH or len(set(value)) < MIN_UNIQUE_CHARACTERS:
        problem = gettext_noop("is too weak (use at least %(length)s random characters)")
        return translate(problem) % {"length": MIN_LENGTH}
    return None


_LOCAL_KEYS = {name: secrets.token_urlsafe(MIN_LENGTH) for name in ("DJANGO_SECRET_KEY", "JWT_SIGNING_KEY")}


def setdefault_local_keys(environ) -> None:
    """Give `environ` random keys where it has none: for a process that starts servers on this
    machine (a test run, the bench, `make cluster`), whose servers and tools it runs must sign
    and check with the same keys. The same keys for the whole life of this process."""
    for name, value in _LOCAL_KEYS.items():
        if not environ.get(name):
            environ[name] = value
