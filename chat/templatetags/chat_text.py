"""Template filters for chat text."""

from django import template

from .. import system_text

register = template.Library()


@register.filter
def message_text(message) -> str:
    """A message's body as the reader reads it: system messages in the active language."""
    return system_text.localize(message.body) if message.kind == "system" else message.body
