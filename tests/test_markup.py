"""chat.markup: the Markdown subset, the sanitizer, mentions, and the plain-text fast path."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat import markup
from chat.markup import Rendered, mention_candidates, render

MEMBERS = {"bob": (8, "bob"), "alice": (7, "Alice"), "张三": (9, "张三"), "dot.name": (10, "dot.name")}
LINK = 'rel="nofollow noopener noreferrer" target="_blank"'


def html(body: str, members=MEMBERS) -> str:
    return render(body, members).html


def test_the_protocol_example():
    rendered = render("**hi** @bob, see https://example.com", MEMBERS)
    assert rendered == Rendered(
        html='<p><strong>hi</strong> <span class="mention" data-user="bob">@bob</span>, see '
        f'<a href="https://example.com" {LINK}>https://example.com</a></p>',
        mentions=[{"id": 8, "username": "bob"}],
        mentions_room=False,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("hello", "<p>hello</p>"),
        ("one\ntwo", "<p>one<br>\ntwo</p>"),
        ("one  \ntwo", "<p>one<br>\ntwo</p>"),
        ("one\n\ntwo", "<p>one</p>\n<p>two</p>"),
        ("*em* _em_", "<p><em>em</em> <em>em</em></p>"),
        ("**strong** __strong__", "<p><strong>strong</strong> <strong>strong</strong></p>"),
        ("~~gone~~", "<p><s>gone</s></p>"),
        ("`a < b`", "<p><code>a &lt; b</code></p>"),
        ("```python\nx = 1\n```", '<pre><code class="language-python">x = 1\n</code></pre>'),
        ("```\nplain\n```", "<pre><code>plain\n</code></pre>"),
        ("~~~c++\nint x;\n~~~", '<pre><code class="language-c++">int x;\n</code></pre>'),
        ("> quoted", "<blockquote>\n<p>quoted</p>\n</blockquote>"),
        ("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>"),
        ("* a\n+ b", "<ul>\n<li>a</li>\n</ul>\n<ul>\n<li>b</li>\n</ul>"),
        ("1. a\n2. b", "<ol>\n<li>a</li>\n<li>b</li>\n</ol>"),
        ("3. a\n4. b", '<ol start="3">\n<li>a</li>\n<li>b</li>\n</ol>'),
        ("[site](https://example.com/a?b=1)", f'<p><a href="https://example.com/a?b=1" {LINK}>site</a></p>'),
        ("[mail](mailto:a@example.com)", f'<p><a href="mailto:a@example.com" {LINK}>mail</a></p>'),
        ("see http://example.com/x.", f'<p>see <a href="http://example.com/x" {LINK}>http://example.com/x</a>.</p>'),
        ("www.example.com", f'<p><a href="http://www.example.com" {LINK}>www.example.com</a></p>'),
        ("<https://example.com>", f'<p><a href="https://example.com" {LINK}>https://example.com</a></p>'),
        ("write a@example.com", f'<p>write <a href="mailto:a@example.com" {LINK}>a@example.com</a></p>'),
    ],
)
def test_the_subset(body, expected):
    assert html(body) == expected


def test_nested_quotes_and_lists():
    assert html("> a\n> > b\n> - c\n>   - d") == (
        "<blockquote>\n<p>a</p>\n<blockquote>\n<p>b</p>\n</blockquote>\n"
        "<ul>\n<li>c\n<ul>\n<li>d</li>\n</ul>\n</li>\n</ul>\n</blockquote>"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("# title", "<p># title</p>"),
        ("title\n===", "<p>title<br>\n===</p>"),
        ("a\n\n---", "<p>a</p>\n<p>---</p>"),
        ("|a|b|\n|-|-|\n|1|2|", "<p>|a|b|<br>\n|-|-|<br>\n|1|2|</p>"),
        ("    indented", "<p>indented</p>"),
        ("[a]: https://example.com", '<p>[a]: <a href="https://example.com" ' + LINK + ">https://example.com</a></p>"),
    ],
)
def test_what_stays_text(body, expected):
    assert html(body) == expected


@pytest.mark.parametrize(
    "body",
    ["![alt](https://example.com/a.png)", "![alt](a.png)", "<img src=x>", '<img src="https://x/a.png">'],
)
def test_images_never_render(body):
    assert "<img" not in html(body)


def test_an_image_with_a_url_is_a_link():
    assert html("![alt](https://example.com/a.png)") == f'<p>!<a href="https://example.com/a.png" {LINK}>alt</a></p>'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
        ("<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
        ("<b onclick='x'>b</b>", "<p>&lt;b onclick='x'&gt;b&lt;/b&gt;</p>"),
        ("<!-- c -->", "<p>&lt;!-- c --&gt;</p>"),
        ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
        ("[x](JAVASCRIPT:alert(1))", "<p>[x](JAVASCRIPT:alert(1))</p>"),
        ("[x]( javascript:alert(1))", "<p>[x]( javascript:alert(1))</p>"),
        ("[x](&#106;avascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
        ("[x](&#x6A;avascript&#58;alert(1))", "<p>[x](javascript:alert(1))</p>"),
        ("[x](java&#x09;script:alert(1))", "<p>[x](java\tscript:alert(1))</p>"),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", "<p>[x](data:text/html;base64,PHNjcmlwdD4=)</p>"),
        ("[x](vbscript:msgbox)", "<p>[x](vbscript:msgbox)</p>"),
        ("[x](ftp://example.com)", "<p>[x](ftp://example.com)</p>"),
        ("[x](/relative) [y](#top) [z](//example.com)", "<p>[x](/relative) [y](#top) [z](//example.com)</p>"),
        ("<javascript:alert(1)>", "<p>&lt;javascript:alert(1)&gt;</p>"),
        (
            '[x](https://e.com "t" onclick="y")',
            f'<p>[x](<a href="https://e.com" {LINK}>https://e.com</a> "t" onclick="y")</p>',
        ),
        ('[x](https://example.com "title")', f'<p><a href="https://example.com" {LINK}>x</a></p>'),
    ],
)
def test_nothing_executable_survives(body, expected):
    assert html(body) == expected


def test_an_html_link_in_the_body_is_text():
    result = html('<a href="javascript:alert(1)">y</a> <a href="https://example.com">z</a>')
    assert "&lt;a href=" in result
    assert '<a href="javascript' not in result


def test_a_fence_language_is_kept_only_when_it_looks_like_one():
    assert html('```x" onclick="y\ncode\n```') == "<pre><code>code\n</code></pre>"
    assert html("```py{.a}\ncode\n```") == "<pre><code>code\n</code></pre>"


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ('<a href="javascript:alert(1)">x</a>', f"<a {LINK}>x</a>"),
        ('<a href="/relative" title="t" onclick="y">x</a>', f"<a {LINK}>x</a>"),
        ('<span class="evil" data-user="bob" style="x">@bob</span>', '<span data-user="bob">@bob</span>'),
        ('<code class="language-py evil">x</code>', "<code>x</code>"),
        ('<ol start="1;x"><li>a</li></ol>', "<ol><li>a</li></ol>"),
        ("<img src=x onerror=alert(1)><script>alert(1)</script><h1>h</h1><hr><table></table>", "h"),
    ],
)
def test_the_sanitizer_is_an_allowlist(dirty, clean):
    """The second line of defence holds even if the renderer let something through."""
    assert markup.sanitize(dirty) == clean


def test_mentions_of_members_in_first_appearance_order_once():
    rendered = render("@alice and @BOB, then @bob again and @Alice.", MEMBERS)
    assert rendered.mentions == [{"id": 7, "username": "Alice"}, {"id": 8, "username": "bob"}]
    assert rendered.html == (
        '<p><span class="mention" data-user="Alice">@Alice</span> and '
        '<span class="mention" data-user="bob">@bob</span>, then '
        '<span class="mention" data-user="bob">@bob</span> again and '
        '<span class="mention" data-user="Alice">@Alice</span>.</p>'
    )
    assert rendered.mentions_room is False


def test_a_non_member_stays_text():
    rendered = render("hi @carol and @bob", MEMBERS)
    assert rendered.html == '<p>hi @carol and <span class="mention" data-user="bob">@bob</span></p>'
    assert rendered.mentions == [{"id": 8, "username": "bob"}]


@pytest.mark.parametrize(
    "body",
    [
        "`@bob`",
        "```\n@bob\n```",
        "~~~\n@bob\n~~~",
        "[@bob](https://example.com)",
        "[**@bob**](https://example.com)",
        "https://example.com/@bob",
        "mailto:bob@example.com",
        "me@bob.com",
        "me@bob",
        "x.@bob",
        "\\@bob",
        "@bobby",
        "<https://example.com/@bob>",
    ],
)
def test_where_mentions_are_never_recognised(body):
    rendered = render(body, MEMBERS)
    assert rendered.mentions == []
    assert "mention" not in rendered.html


@pytest.mark.parametrize(
    ("body", "candidates"),
    [
        ("no at sign", set()),
        ("@Bob @bob. @alice, @carol! (@dave) @e-f", {"bob", "alice", "carol", "dave", "e-f"}),
        ("@dot.name. @x+y@z", {"dot.name", "x+y@z"}),
        ("@room @ALL @all.", set()),
        ("`@code` @bob\n```\n@block\n```\n~~~\n@tilde\n~~~", {"bob"}),
        ("me@bob.com me@bob x1@bob", set()),
        ("_@bob_ x_@alice", {"bob", "alice"}),
        ("你好@张三，世界", {"张三"}),
        ("@" + "a" * 150, {"a" * 150}),
        ("@" + "a" * 151, set()),
        ("@...", set()),
    ],
)
def test_mention_candidates(body, candidates):
    assert mention_candidates(body) == candidates


def test_a_trailing_dot_is_punctuation():
    assert html("ask @dot.name.") == '<p>ask <span class="mention" data-user="dot.name">@dot.name</span>.</p>'


def test_mentions_inside_markup_and_after_chinese():
    assert html("**@bob** > _@alice_") == (
        '<p><strong><span class="mention" data-user="bob">@bob</span></strong> &gt; '
        '<em><span class="mention" data-user="Alice">@Alice</span></em></p>'
    )
    assert html("你好@张三，世界") == '<p>你好<span class="mention" data-user="张三">@张三</span>，世界</p>'


@pytest.mark.parametrize("body", ["@room look", "@all look", "@ALL. look", "> @room"])
def test_room_mentions(body):
    rendered = render(body, MEMBERS)
    assert rendered.mentions_room is True
    assert rendered.mentions == []
    assert '<span class="mention" data-user="room">@' in rendered.html


def test_room_mention_text_and_user_mentions_together():
    rendered = render("@all and @bob", {**MEMBERS, "all": (99, "all")})
    assert rendered.html == (
        '<p><span class="mention" data-user="room">@all</span> and '
        '<span class="mention" data-user="bob">@bob</span></p>'
    )
    assert rendered.mentions == [{"id": 8, "username": "bob"}]


def test_room_in_code_is_no_room_mention():
    assert render("`@room`", MEMBERS).mentions_room is False


@pytest.mark.parametrize(
    "body",
    ["你好，世界！今天天气很好。", "שלום עולם, מה שלומך?", "مرحبا بالعالم", "混合 text עם RTL 和中文 🎉"],
)
def test_chinese_and_right_to_left_text_pass_unchanged(body):
    assert html(body) == f"<p>{body}</p>"


def test_a_lone_surrogate_becomes_a_replacement_character():
    assert html("a \ud800 *b*") == "<p>a \ufffd <em>b</em></p>"


def test_a_long_body_renders():
    body = ("word **bold** [l](https://example.com) @bob\n" * 100)[:4000]
    rendered = render(body, MEMBERS)
    assert len(body) == 4000
    assert rendered.html.count("<strong>") == body.count("**bold**")
    assert rendered.mentions == [{"id": 8, "username": "bob"}]


# The fast path: whatever it accepts, it must render exactly as the parser and sanitizer do.

PLAIN_ALPHABET = st.sampled_from(
    list("ab z1 .,:;!?'\"()/#=|-+>%$^{}\n\t\r\xa0\u3000") + ["0.", "1)", "中", "ש", "é", "😀", "co", "www.", "http://"]
)
plain_like = st.lists(PLAIN_ALPHABET | st.characters(), min_size=1, max_size=40).map("".join)


def full_path(body: str) -> str:
    env = {"members": {}, "mentioned": {}, "mentions_room": False}
    return markup.sanitize(markup.MARKDOWN.render(markup.SURROGATE_RE.sub("\ufffd", body), env)).strip()


@settings(max_examples=800, deadline=None)
@given(plain_like)
def test_the_fast_path_renders_what_the_parser_renders(body):
    fast = markup._plain_html(body)
    if fast is not None:
        assert fast == full_path(body)


@pytest.mark.parametrize(
    "body",
    [
        "hello there",
        "ok. see you at 5",
        "what? no!\nreally",
        "你好，世界",
        'she said "yes" (twice)',
        "a > b",
        "100% sure",
    ],
)
def test_common_plain_messages_take_the_fast_path(body):
    assert markup._plain_html(body) == full_path(body)


@pytest.mark.parametrize(
    "body",
    [
        "see example.com",
        "http://x.org",
        "- item",
        "1. item",
        "> quote",
        "a\n\nb",
        " lead",
        "a & b",
        "a <b>",
        "@bob",
        "*x*",
    ],
)
def test_the_fast_path_declines_what_may_be_markup(body):
    assert markup._plain_html(body) is None


class EveryoneIsAMember(dict):
    """Members that answer for any name, recording which names render asked about."""

    def __init__(self):
        super().__init__()
        self.asked = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return (len(self.asked), name)


MENTION_ALPHABET = st.sampled_from(
    list("@ab.B_-+*`~[]()\\\n >&#;:/x¹") + ["@room", "https://", "e.com", "中", "`@c`", "&#95;", "&#64;", "www."]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(MENTION_ALPHABET, min_size=1, max_size=30).map("".join))
def test_render_only_looks_up_candidates(body):
    """The integrator looks up `mention_candidates` only: render must never need another name."""
    members = EveryoneIsAMember()
    render(body, members)
    assert members.asked <= mention_candidates(body)


WARM_UP_CHECK = """
import re, sys
from unittest import mock
from chat import markup
if sys.argv[1] == "warm":
    markup.warm_up()
bodies = ["see https://example.com/a?b=c#d and http://x.org", "//x.org/a and www.x.cn/b", "mail e@example.com",
          "mailto:e@example.com", "x.co", "**a** _b_ `c` ~~d~~ @bob", "> q\\n- a\\n1. b", "[t](https://example.com)",
          "```py\\nx\\n```", "@all hi", "a & b < c"]
with mock.patch.object(re._compiler, "compile", wraps=re._compiler.compile) as compile:
    for body in bodies:
        markup.mention_candidates(body)
        markup.render(body, {"bob": (8, "bob")})
print(compile.call_count)
"""


@pytest.mark.parametrize(("mode", "compiles"), [("warm", False), ("cold", True)])
def test_after_the_warm_up_a_first_message_compiles_no_regular_expression(mode, compiles):
    """The server calls `warm_up` at start (chatproject/asgi.py): linkify and the parser compile
    their expressions on first use, which would otherwise stall the first messages written."""
    done = subprocess.run([sys.executable, "-c", WARM_UP_CHECK, mode], capture_output=True, text=True, check=True)
    assert (int(done.stdout.split()[-1]) > 0) is compiles


def test_a_body_parsed_ahead_is_rendered_without_parsing_it_again(monkeypatch):
    body = "**parsed** ahead, see https://example.com/ahead @bob"
    markup._tokens.cache_clear()
    markup.parse_ahead(body)
    parse = markup.MARKDOWN.parse
    calls = []
    monkeypatch.setattr(markup.MARKDOWN, "parse", lambda *args: calls.append(args) or parse(*args))
    assert mention_candidates(body) == {"bob"}
    assert render(body, MEMBERS).mentions == [{"id": 8, "username": "bob"}]
    assert calls == []


@pytest.mark.parametrize("body", ["plain text", "   ", "*" * (markup.AHEAD_MAX_CHARS + 1), None, 42])
def test_long_plain_and_odd_bodies_are_not_parsed_ahead(body, monkeypatch):
    """A long body would hold the event loop: the database thread parses it when it renders."""
    markup._tokens.cache_clear()
    monkeypatch.setattr(markup.MARKDOWN, "parse", lambda *args: pytest.fail("parsed ahead"))
    markup.parse_ahead(body)
