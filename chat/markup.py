"""Message bodies rendered to HTML: the Markdown subset of the protocol, mentions, then an allowlist sanitizer.

`render()` runs once per message written or edited (PROTOCOL.md, Version 2, "The message, extended").
The subset: paragraphs, a single newline as `<br>`, emphasis, strong, `~~strikethrough~~` (`<s>`),
inline code, fenced code blocks (`class="language-<name>"` on `code`), block quotes, ordered and
unordered lists, links and bare URLs (http, https and mailto only; relative links are refused), and
mentions. Everything else stays text: raw HTML is escaped, `![a](b)` shows the `!` and then a link
to `b`, headings, tables, rules and indented code blocks stay paragraphs.

Mentions:
- `@name` is a mention when the lowercased name is a key of `members`; it renders as
  `<span class="mention" data-user="<username>">@<username></span>` with the canonical username.
- `@room` and `@all` mention the whole room (even if a user has that name): they set
  `mentions_room` and render as `<span class="mention" data-user="room">@room</span>` (`@all` keeps
  its text, `data-user` stays `room`), so clients style them like user mentions.
- A name is `[\\w.@+-]{1,150}` (Django's usernames) without its trailing dots ("@bob." is bob).
  It is never one inside code, inside a link (its text or its URL), nor right after an ASCII
  letter, digit or one of `.@+-` (`me@bob`, e-mail addresses); after Chinese text it is
  (`你好@bob`). `\\@bob` is not a mention. `@bob.com` is a link (linkify) and not a mention.

Links carry `rel="nofollow noopener noreferrer" target="_blank"`, in the contract's order (nh3 writes
`target` first; `_contract_order` swaps them in the sanitizer's output, where a `<a ` is always a tag).

Speed: plain messages (no Markdown character, nothing that looks like a URL, no `@`) skip the
parser and the sanitizer: `_plain_html` builds what the full path would, which the tests check by
property. Otherwise `mention_candidates` and the `render` after it share one parse (`_tokens`), which
the batch writer makes as a send arrives (`parse_ahead`), while the batch before it is written.
"""

import functools
import html
import re
from dataclasses import dataclass, field

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOM_NAMES = frozenset({"room", "all"})
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
USERNAME_MAX = 150

# `@` not glued to an ASCII word (an e-mail address), then a Django username. `_` may come before
# it, as in `_@bob_` (emphasis).
MENTION_RE = re.compile(r"(?<![A-Za-z0-9.@+-])@([\w.@+-]+)")
NAME_CHAR_RE = re.compile(r"[A-Za-z0-9.@+-]")
LANGUAGE_CLASS_RE = re.compile(r"language-[\w#+.-]{1,40}")
START_RE = re.compile(r"\d{1,9}")

# The fast path refuses anything the parser could read differently from text: inline markup,
# entities, HTML, escapes, `://` (markdown-it's inline linkify finds URLs that linkify.test misses
# after some letters), and line starts that open a list, a quote or a fence.
NOT_PLAIN_RE = re.compile(r"[\\`*_~\[\]<&@\x00-\x09\x0b-\x1f\x7f\xa0\u2028\u2029\ud800-\udfff]|://")
# A JSON body may hold a lone surrogate (`"\\ud800"`), which the sanitizer cannot encode.
SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
BLOCK_START_RE = re.compile(r"(?m)^(?:[-+>]|\d+[.)])")
# What linkify's pretest needs (a schema's `:` or `//`, `localhost`, `www.`, a dot before a TLD or
# an IP address's digits; `@` is refused above), cheaper than the pretest itself (6 µs).
SANITIZED_LINK_RE = re.compile(r'(<a(?: href="[^"]*")?) target="_blank" rel="nofollow noopener noreferrer">')
MAYBE_LINK_RE = re.compile(r"[:/]|localhost|www\.|\.[^\W_]", re.IGNORECASE)


@dataclass(frozen=True)
class Rendered:
    html: str
    mentions: list[dict] = field(default_factory=list)  # [{"id": 8, "username": "bob"}], first appearance order
    mentions_room: bool = False


def _link_allowed(url: str) -> bool:
    """markdown-it's validateLink: only absolute http, https and mailto URLs become links."""
    scheme, colon, _ = url.partition(":")
    return bool(colon) and scheme.lower() in LINK_SCHEMES


def _name_at(match: re.Match) -> str | None:
    """The lowercased name of a `@name` match, without trailing dots; None if none is left or too long."""
    name = match.group(1).rstrip(".")
    if not name or len(name) > USERNAME_MAX:
        return None
    return name.lower()


def _split_mentions(token: Token, before: str, link_next: bool) -> list[Token] | None:
    """`token` (text) cut into text and `mention` tokens; None if it holds no `@name`.

    `before` is the source character before the token; `link_next` says a link follows it at once, so
    a name running into the token's end was cut short by the link (`@bob.example.com`).
    """
    content = token.content
    pieces: list[Token] = []
    position = 0
    for match in MENTION_RE.finditer(content):
        if match.start() == 0 and NAME_CHAR_RE.fullmatch(before):
            continue
        if link_next and match.end() == len(content):
            continue
        name = _name_at(match)
        if name is None:
            continue
        if match.start() > position:
            pieces.append(_inline_token("text", content[position : match.start()], token.level))
        written = "@" + match.group(1).rstrip(".")
        pieces.append(_inline_token("mention", written, token.level, meta={"name": name}))
        position = match.start() + len(written)
    if not pieces:
        return None
    if position < len(content):
        pieces.append(_inline_token("text", content[position:], token.level))
    return pieces


def _inline_token(kind: str, content: str, level: int, meta: dict | None = None) -> Token:
    return Token(kind, "", 0, content=content, level=level, meta=meta or {})


def _mentions_rule(state) -> None:
    """Core rule after linkify: every `@name` in text (never in code or links) becomes a `mention` token.

    Whether it names a member is decided when rendering, so one parse serves every `members`.
    """
    if "@" not in state.src:
        return
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        link_depth = 0
        before = ""  # the source character before the current token, for the e-mail rule
        for index, child in enumerate(block.children):
            if child.type == "link_open":
                link_depth += 1
            elif child.type == "link_close":
                link_depth -= 1
            elif child.type == "text" and not link_depth:
                following = block.children[index + 1] if index + 1 < len(block.children) else None
                pieces = _split_mentions(child, before, following is not None and following.type == "link_open")
                if pieces is not None:
                    children.extend(pieces)
                    before = child.content[-1:]
                    continue
            children.append(child)
            before = _last_source_char(child)
        block.children = children


def _last_source_char(token: Token) -> str:
    """The source character a token ends with, as far as the e-mail rule cares."""
    if token.type in ("text", "text_special"):
        return token.content[-1:]
    if token.type == "link_close" and token.markup == "linkify":
        return "a"  # a bare URL or address ends with a name character or `/`: `x.com@bob` is no mention
    return token.markup[-1:]


def _render_mention(self, tokens, idx, options, env) -> str:
    """A member's or the room's mention as a span, recorded in env; any other name as its text."""
    token = tokens[idx]
    name = token.meta["name"]
    if name in ROOM_NAMES:
        env["mentions_room"] = True
        username, shown = "room", "@" + name
    elif (member := env["members"].get(name)) is not None:
        user_id, username = member
        env["mentioned"].setdefault(user_id, username)
        shown = "@" + username
    else:
        return html.escape(token.content)
    return f'<span class="mention" data-user="{html.escape(username)}">{html.escape(shown)}</span>'


def _build_parser() -> MarkdownIt:
    md = MarkdownIt("zero", {"breaks": True, "linkify": True, "html": False})
    md.enable(
        ["blockquote", "fence", "list", "newline", "escape", "backticks", "strikethrough", "emphasis"]
        + ["link", "autolink", "linkify", "entity"]
    )
    md.validateLink = _link_allowed
    md.core.ruler.after("linkify", "mentions", _mentions_rule)
    md.add_render_rule("mention", _render_mention)
    return md


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute_filter: the only classes are `language-*` on code and `mention` on span."""
    if attribute == "class":
        if tag == "code" and LANGUAGE_CLASS_RE.fullmatch(value):
            return value
        if tag == "span" and value == "mention":
            return value
        return None
    if attribute == "start":
        return value if START_RE.fullmatch(value) else None
    return value


MARKDOWN = _build_parser()
SANITIZER = nh3.Cleaner(
    tags={"p", "br", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a", "span"},
    attributes={"*": set(), "a": {"href"}, "code": {"class"}, "span": {"class", "data-user"}, "ol": {"start"}},
    attribute_filter=_keep_attribute,
    link_rel="nofollow noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=set(LINK_SCHEMES),
    url_relative="deny",
)


def _plain_html(body: str) -> str | None:
    """The HTML of a body the parser would read as plain text, or None if it might not."""
    if NOT_PLAIN_RE.search(body) or BLOCK_START_RE.search(body):
        return None
    lines = body.split("\n")
    for line in lines:
        if not line or line[0].isspace() or line[-1].isspace():
            return None
    if MAYBE_LINK_RE.search(body) and MARKDOWN.linkify.test(body):
        return None
    return "<p>" + "<br>\n".join(html.escape(line, quote=False) for line in lines) + "</p>"


# A batch's worth: the bodies parsed ahead (`parse_ahead`) stay until their batch renders them.
PARSED_KEPT = 500
AHEAD_MAX_CHARS = 1000  # a longer body is parsed on the database thread, never on the event loop


@functools.lru_cache(maxsize=PARSED_KEPT)
def _tokens(body: str) -> list[Token]:
    """The parse of `body`, shared by `parse_ahead`, `mention_candidates` and the `render` that follows.

    Rendering only reads tokens, so a cached list is safe to render again.
    """
    return MARKDOWN.parse(SURROGATE_RE.sub("\ufffd", body))


def parse_ahead(body) -> None:
    """Parse a short body that needs the parser now, so that rendering it later only reads the
    parse: the batch writer calls this on the event loop as a send arrives, while the database
    thread writes the batch before it."""
    if isinstance(body, str) and len(body) <= AHEAD_MAX_CHARS and body.strip() and _plain_html(body) is None:
        _tokens(body)


def render(body: str, members: dict[str, tuple[int, str]]) -> Rendered:
    """`body` (not only whitespace) as sanitized HTML with its mentions.

    `members` maps each lowercased candidate name (see `mention_candidates`) that is a member of
    the room to (user id, canonical username); other names stay text.
    """
    plain = _plain_html(body)
    if plain is not None:
        return Rendered(html=plain)
    env = {"members": members, "mentioned": {}, "mentions_room": False}
    dirty = MARKDOWN.renderer.render(_tokens(body), MARKDOWN.options, env)
    mentions = [{"id": user_id, "username": username} for user_id, username in env["mentioned"].items()]
    clean = sanitize(dirty).strip()
    return Rendered(html=clean, mentions=mentions, mentions_room=env["mentions_room"])


def sanitize(dirty: str) -> str:
    """The allowlist sanitizer, with link attributes in the contract's order."""
    return _contract_order(SANITIZER.clean(dirty))


def _contract_order(clean: str) -> str:
    return SANITIZED_LINK_RE.sub(r'\1 rel="nofollow noopener noreferrer" target="_blank">', clean)


def warm_up() -> None:
    """Render one body that takes every path once: the regular expressions the parser and linkify
    compile on first use then cost the server's start, not its first message (about 40 ms)."""
    body = "**a** _b_ `c` ~~d~~ [e](https://example.com) https://example.com/e //example.com/e www.example.com"
    body += " mailto:e@example.com e@example.com @f\n> g\n- h\n1. i\n```j\nk\n```"
    render(body, {"f": (0, "f")})
    _tokens.cache_clear()


def mention_candidates(body: str) -> set[str]:
    """The lowercased names written as `@name` outside code, to look up before `render`.

    A superset of what `render` will look up (names in link URLs may be included), never less.
    `room` and `all` are not candidates.
    """
    if "@" not in body:
        return set()
    # Code, `_@bob_` (`_` ends both the name and the emphasis), escapes and entities (`\\@`, `&#64;`)
    # cut names where the text alone does not: let the parser read those.
    if any(char in body for char in "`~_\\&"):
        return {
            child.meta["name"]
            for block in _tokens(body)
            if block.type == "inline"
            for child in block.children or ()
            if child.type == "mention"
        } - ROOM_NAMES
    names = {_name_at(match) for match in MENTION_RE.finditer(body)}
    return names - ROOM_NAMES - {None}
