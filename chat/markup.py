# placeholder until the markup branch merges (not committed)
import html as _h
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rendered:
    html: str
    mentions: list = field(default_factory=list)
    mentions_room: bool = False


def mention_candidates(body):
    import re

    return {m.lower() for m in re.findall(r"@([\w.+-]+)", body)}


def render(body, members):
    mentions = []
    for name in mention_candidates(body):
        if name in members:
            mentions.append({"id": members[name][0], "username": members[name][1]})
    return Rendered("<p>" + _h.escape(body) + "</p>", mentions, "@room" in body)
