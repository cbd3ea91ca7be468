"""chat/system_text.py: system messages stored in English, read in the reader's language."""

import pytest
from django.utils import translation

from chat import system_text

TOPIC = r"100% (sure) [a-z]+ $1 \d %(user)s? *.^ 50%s"  # regex and format characters, a line break too
CASES = [
    ("joined", {"user": "bob"}, "bob joined", "bob 加入了房间"),
    ("left", {"user": "bob"}, "bob left", "bob 离开了房间"),
    ("added", {"actor": "alice", "user": "bob"}, "alice added bob", "alice 添加了 bob"),
    ("removed", {"actor": "alice", "user": "bob"}, "alice removed bob", "alice 移除了 bob"),
    ("topic_set", {"user": "alice", "topic": TOPIC + "\nok"}, f"alice set the topic: {TOPIC}\nok", None),
    ("topic_set", {"user": "李雷", "topic": "bob joined"}, "李雷 set the topic: bob joined", None),
    ("topic_cleared", {"user": "alice"}, "alice cleared the topic", "alice 清除了话题"),
]


@pytest.mark.parametrize("code, params, english, chinese", CASES)
def test_write_stores_english_and_localize_translates_it_back(code, params, english, chinese):
    with translation.override("zh-hans"):  # the writer's language does not matter
        body = system_text.write(code, **params)
    assert body == english
    assert system_text.localize(body, "en") == english
    localized = system_text.localize(body, "zh-hans")
    if chinese is None:
        assert localized == f"{params['user']} 将话题设为：{params['topic']}"
    else:
        assert localized == chinese
    with translation.override("zh-hans"):
        assert system_text.localize(body) == localized  # default: the active language


def test_every_template_has_a_case_and_a_chinese_translation():
    assert {case[0] for case in CASES} == set(system_text.TEMPLATES)
    with translation.override("zh-hans"):
        pairs = system_text.client_templates().values()
    assert all(english != chinese for english, chinese in pairs)


@pytest.mark.parametrize(
    "body", ["bob joined the fun", "hello", "", "alice set the topic", "two words joined", "alice added"]
)
def test_localize_leaves_other_text_alone(body):
    assert system_text.localize(body, "zh-hans") == body


def test_client_templates_pair_english_with_the_active_language():
    with translation.override("zh-hans"):
        templates = system_text.client_templates()
    assert set(templates) == set(system_text.TEMPLATES)
    assert templates["joined"] == ["%(user)s joined", "%(user)s 加入了房间"]
    with translation.override("en"):
        assert system_text.client_templates()["left"] == ["%(user)s left", "%(user)s left"]
