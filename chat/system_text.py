"""The text of system messages ("bob joined"), stored in English and shown in the reader's language.

A system message's body is stored text (the wire contract has no code or parameter fields), so
services store the English sentence and readers get it back translated: `localize` recognises
the English sentence by its template and fills the template of the reader's language with the
same values. The browser client does the same with `client_templates()` (timeline.js).
"""

import functools
import re

from django.utils import translation
from django.utils.translation import gettext_lazy as _

TEMPLATES = {
    "joined": _("%(user)s joined"),
    "left": _("%(user)s left"),
    "added": _("%(actor)s added %(user)s"),
    "removed": _("%(actor)s removed %(user)s"),
    "topic_set": _("%(user)s set the topic: %(topic)s"),
    "topic_cleared": _("%(user)s cleared the topic"),
}

_PARAM = re.compile(r"%\((\w+)\)s")


def write(code: str, **params: str) -> str:
    """The English body of system message `code` (a key of TEMPLATES) with its values filled in."""
    with translation.override("en"):
        return str(TEMPLATES[code]) % params


def localize(body: str, language: str | None = None) -> str:
    """`body` in `language` (default: the active one) if it is a system message `write` produced, else `body`."""
    for code, pattern in _patterns().items():
        match = pattern.fullmatch(body)
        if match:
            with translation.override(language or translation.get_language()):
                return str(TEMPLATES[code]) % match.groupdict()
    return body


def client_templates() -> dict[str, list[str]]:
    """For the browser: each code's English template and the active language's."""
    with translation.override("en"):
        english = {code: str(template) for code, template in TEMPLATES.items()}
    return {code: [english[code], str(template)] for code, template in TEMPLATES.items()}


@functools.cache
def _patterns() -> dict[str, re.Pattern]:
    """Each English template as a regex. A username has no spaces (Django's username validator),
    so a topic that itself reads "bob joined" is never taken for a join; the topic may hold anything."""
    with translation.override("en"):
        return {code: _pattern(str(template)) for code, template in TEMPLATES.items()}


def _pattern(template: str) -> re.Pattern:
    parts = []
    position = 0
    for param in _PARAM.finditer(template):
        parts.append(re.escape(template[position : param.start()]))
        name = param.group(1)
        parts.append(f"(?P<{name}>.*)" if name == "topic" else rf"(?P<{name}>\S+)")
        position = param.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts), re.DOTALL)
