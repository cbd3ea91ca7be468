"""Rebuild emoji.json from emojibase-data (npm, MIT): `npm pack emojibase-data@17.0.0`, unpack it,
then `python3 build.py path/to/package > emoji.json`. Keeps every fully-qualified emoji without
skin-tone variants, in Unicode's fully-qualified form, grouped as emojibase groups them, with the English and Chinese names and the
words a search matches (tags in both languages and GitHub shortcodes)."""

import json
import sys
from pathlib import Path

COMPONENTS = 2  # skin tones and hair styles: not reactions of their own


def qualified(emoji: dict) -> str:
    """Unicode's fully-qualified form: emojibase adds U+FE0F to every emoji that also has a text
    style, but one shown as emoji by default (type 1) is fully-qualified without it (👍, not 👍️)."""
    text = emoji["emoji"]
    if emoji["type"] == 1 and len(text) == 2 and text.endswith("\ufe0f"):
        return text[0]
    return text


def main(package: Path) -> None:
    english = json.loads((package / "en/data.json").read_text())
    chinese = {e["hexcode"]: e for e in json.loads((package / "zh/compact.json").read_text())}
    shortcodes = json.loads((package / "en/shortcodes/github.json").read_text())
    groups = json.loads((package / "en/messages.json").read_text())["groups"]
    version = json.loads((package / "package.json").read_text())["version"]
    by_group: dict[int, list] = {}
    for emoji in sorted((e for e in english if e.get("group", COMPONENTS) != COMPONENTS), key=lambda e: e["order"]):
        zh = chinese.get(emoji["hexcode"], {})
        codes = shortcodes.get(emoji["hexcode"], [])
        codes = [codes] if isinstance(codes, str) else codes
        words = " ".join(sorted(set(emoji.get("tags", []) + zh.get("tags", []) + codes)))
        by_group.setdefault(emoji["group"], []).append([qualified(emoji), emoji["label"], zh.get("label", ""), words])
    data = {
        "source": f"emojibase-data {version} (MIT)",
        "groups": [{"key": g["key"], "emoji": by_group[g["order"]]} for g in groups if g["order"] in by_group],
    }
    sys.stdout.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
