"""What rendering a message body costs: chat.markup.render, in microseconds per message.

Three bodies: a short plain message (the fast path), a Markdown-heavy one (bold, a link, a
list, a code block, two mentions) and a 4,000-character one. Each is rendered --repeat times
after a warm-up, in this process, one core; the best of --rounds rounds is kept, since other
processes only ever add time:

    .venv/bin/python bench/render_cost.py
    .venv/bin/python bench/render_cost.py --repeat 2000 --rounds 7

Prints one JSON line, then a table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: chat from the repository root

from chat import markup  # noqa: E402
from chat.markup import mention_candidates, render  # noqa: E402

MEMBERS = {"bob": (8, "bob"), "alice": (7, "alice")}
HEAVY = (
    "**Release** is out, @bob and @alice please check [the notes](https://example.com/notes):\n\n"
    "- fixed the *reconnect* loop\n- faster history, see https://example.com/pr/42\n\n"
    "```python\ndef hello():\n    return 'world'\n```"
)
LONG_LINE = "Some *text* with `code`, a link https://example.com/page and @bob in it.\n"
BODIES = {
    "plain short text": "ok, see you at 5 tomorrow!",
    "Markdown-heavy": HEAVY,
    "4,000 characters": (LONG_LINE * (4000 // len(LONG_LINE) + 1))[:4000],
}


def cost_us(body: str, repeat: int, rounds: int) -> float:
    """Best-of-`rounds` microseconds per message: `mention_candidates` then `render`, as the server calls them.

    The parse cache is emptied before each message, since every message written is new.
    """
    for _ in range(min(repeat, 200)):
        render(body, MEMBERS)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            markup._tokens.cache_clear()
            mention_candidates(body)
            render(body, MEMBERS)
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the fastest is kept")
    args = parser.parse_args()
    figures = {name: round(cost_us(body, args.repeat, args.rounds), 1) for name, body in BODIES.items()}
    print(json.dumps({"render_us": figures, "repeat": args.repeat, "rounds": args.rounds}))
    print(f"{'body':<20} {'chars':>6} {'µs/message':>11}")
    for name, body in BODIES.items():
        print(f"{name:<20} {len(body):>6} {figures[name]:>11}")


if __name__ == "__main__":
    main()
