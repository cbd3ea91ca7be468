"""The base of this project's commands: they speak the operator's language.

A command has no request to take a language from, so it takes the environment's:
`CHAT_LANGUAGE` (`zh-hans`, `en`), else the POSIX locale variables in gettext's order
(`LANGUAGE`, `LC_ALL`, `LC_MESSAGES`, `LANG`: `zh_CN.UTF-8` is Simplified Chinese), else
LANGUAGE_CODE. The data a command writes (exports, demo content) is never translated.
"""

import os

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import translation

ENVIRONMENT = ("CHAT_LANGUAGE", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def environment_language(environ=os.environ) -> str:
    """The first supported language the environment names; LANGUAGE_CODE if none does."""
    for name in ENVIRONMENT:
        for value in environ.get(name, "").split(":"):  # LANGUAGE may list several
            code = translation.to_language(value.split(".")[0].split("@")[0]) if value else ""
            if code in ("", "c", "posix"):
                continue
            try:
                return translation.get_supported_language_variant(code)
            except LookupError:
                continue
    return settings.LANGUAGE_CODE


class ChatCommand(BaseCommand):
    def run_from_argv(self, argv):
        with translation.override(environment_language()):  # --help and errors too
            return super().run_from_argv(argv)

    def execute(self, *args, **options):
        with translation.override(environment_language()):
            return super().execute(*args, **options)
