"""English and Simplified Chinese: the catalogues are complete, and each way in speaks its caller's language.

REST and pages follow the request (LocaleMiddleware: the `django_language` cookie, else
Accept-Language); a WebSocket its handshake, for its `error` frames' `detail` only (`code`,
close reasons and logs stay as they are); commands the environment (`chat.management.base`).
"""

import gettext
import re
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import translation

from chat import checks, services
from chat.management.base import environment_language
from chat.management.commands.build_catalogues import compile_with_polib
from tests.support import connect, db

BASE_DIR = Path(settings.BASE_DIR)
CATALOGUES = [BASE_DIR / "locale" / "zh_Hans" / "LC_MESSAGES" / f"{domain}.po" for domain in ("django", "djangojs")]
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


def problems(po_path: Path) -> list[str]:
    """Every entry of a catalogue that is not fit to ship: untranslated, fuzzy, or with other placeholders."""
    catalogue = polib.pofile(str(po_path))
    found = ["the header is fuzzy"] if catalogue.metadata_is_fuzzy else []
    for entry in catalogue:
        if entry.obsolete:
            continue
        translations = list(entry.msgstr_plural.values()) if entry.msgid_plural else [entry.msgstr]
        if "fuzzy" in entry.flags:
            found.append(f"fuzzy: {entry.msgid!r}")
        elif not all(translations):
            found.append(f"untranslated: {entry.msgid!r}")
        elif any(
            sorted(set(PLACEHOLDER.findall(text))) != sorted(set(PLACEHOLDER.findall(entry.msgid)))
            for text in translations
        ):
            found.append(f"placeholders differ: {entry.msgid!r}")
    return found


# The catalogues


def test_every_entry_of_the_chinese_catalogues_is_translated_and_none_is_fuzzy():
    for po_path in CATALOGUES:
        assert po_path.exists(), po_path
        assert problems(po_path) == [], f"{po_path.name}: translate these, then `make messages`"


@pytest.mark.gettext
def test_the_catalogues_hold_every_message_of_the_code_and_nothing_else(tmp_path):
    """makemessages on a copy of the project: a message of the code, the templates or the client
    missing from the catalogue comes back untranslated, one the code dropped comes back obsolete."""
    copy = tmp_path / "project"
    shutil.copytree(
        BASE_DIR,
        copy,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "tests",
            "bench",
            "deploy",
            "staticfiles",
            "__pycache__",
            "*.sqlite3*",
            "*.mo",
            ".*cache",
            ".hypothesis",
            "node_modules",
        ),
    )
    env = {"PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "true", "HOME": str(tmp_path)}
    for domain in ("django", "djangojs"):
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "makemessages",
                "-l",
                "zh_Hans",
                "-d",
                domain,
                "--ignore=.venv",
                "--ignore=tests",
                "--ignore=bench",
                "--ignore=staticfiles",
            ],
            cwd=copy,
            env=env,
            check=True,
            capture_output=True,
        )
    for po_path in CATALOGUES:
        regenerated = copy / po_path.relative_to(BASE_DIR)
        stale = [entry.msgid for entry in polib.pofile(str(regenerated)) if entry.obsolete]
        assert problems(regenerated) == [], f"{po_path.name} lacks messages of the code: `make messages-update`"
        assert stale == [], f"{po_path.name} holds messages the code no longer has: `make messages-update`"


@pytest.mark.gettext
def test_polib_compiles_what_msgfmt_compiles(tmp_path):
    """A fresh machine without GNU gettext gets the same catalogues (`build_catalogues`'s fallback)."""
    for po_path in CATALOGUES:
        subprocess.run(["msgfmt", "-o", str(tmp_path / "msgfmt.mo"), str(po_path)], check=True)
        compile_with_polib(po_path, tmp_path / "polib.mo")
        with open(tmp_path / "msgfmt.mo", "rb") as a, open(tmp_path / "polib.mo", "rb") as b:
            by_msgfmt, by_polib = gettext.GNUTranslations(a), gettext.GNUTranslations(b)
        assert by_msgfmt.plural(3) == by_polib.plural(3) == 0  # the header's Plural-Forms
        del by_msgfmt._catalog[""], by_polib._catalog[""]  # headers: msgfmt leaves out POT-Creation-Date
        assert by_msgfmt._catalog == by_polib._catalog and len(by_polib._catalog) > 50


def test_build_catalogues_without_msgfmt_writes_loadable_catalogues(tmp_path, monkeypatch):
    locale = tmp_path / "locale"
    shutil.copytree(BASE_DIR / "locale", locale, ignore=shutil.ignore_patterns("*.mo"))
    monkeypatch.setattr(settings, "LOCALE_PATHS", [locale])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    call_command("build_catalogues", verbosity=0)
    with open(locale / "zh_Hans" / "LC_MESSAGES" / "django.mo", "rb") as mo:
        assert gettext.GNUTranslations(mo).gettext("No room '%(slug)s'.") == "没有房间“%(slug)s”。"


# REST and pages


def test_a_rest_error_detail_is_in_the_requests_language(api, alice):
    english = api(alice).get("/api/rooms/nope/")
    chinese = api(alice).get("/api/rooms/nope/", HTTP_ACCEPT_LANGUAGE="zh-Hans,zh;q=0.9,en;q=0.5")
    assert english.status_code == chinese.status_code == 404
    assert english.json() == {"detail": "No room 'nope'.", "code": "not_found"}
    assert chinese.json() == {"detail": "没有房间“nope”。", "code": "not_found"}
    assert chinese["Content-Language"] == "zh-hans"


def test_rest_refusals_and_rate_limits_are_in_the_requests_language(api, alice, general, settings):
    response = api(alice).post(
        f"/api/rooms/{general.slug}/messages/", {"body": " "}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert response.json() == {"detail": "body: 必须是非空字符串。", "code": "invalid"}
    response = api().get("/api/me/", HTTP_ACCEPT_LANGUAGE="zh-hans")  # DRF's own messages: its catalogue
    assert response.status_code == 401 and response.json()["detail"] == "身份认证信息未提供。"
    settings.CHAT_RATE_PER_10S = 1
    client = api(alice)
    client.post(f"/api/rooms/{general.slug}/messages/", {"body": "one"}, format="json")
    response = client.post(
        f"/api/rooms/{general.slug}/messages/", {"body": "two"}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert response.status_code == 429
    retry_after = response["Retry-After"]
    assert response.json() == {
        "code": "rate_limited",
        "detail": f"操作过于频繁：每 10 秒最多发送消息 1 次，请在 {retry_after} 秒后重试。",
    }


def test_a_page_says_its_language_in_html_lang_and_the_switcher_keeps_it(db):
    client = Client()
    english = client.get("/login/").content.decode()
    assert '<html lang="en">' in english
    chinese = client.get("/login/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert '<html lang="zh-hans">' in chinese and "登录" in chinese

    # The switcher in the header: the other language, named in itself, and the way back to this page.
    def switcher(html):
        return " ".join(re.search(r'<form[^>]*id="language-switcher".*?</form>', html, re.S)[0].split())

    assert 'action="/i18n/setlang/"' in switcher(english)
    assert '<input type="hidden" name="next" value="/login/">' in switcher(english)
    assert 'name="language" value="zh-hans" lang="zh-hans">简体中文</button>' in switcher(english)
    assert 'name="language" value="en" lang="en">English</button>' in switcher(chinese)
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/login/"})
    assert response.status_code == 302 and response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert '<html lang="zh-hans">' in client.get("/login/", HTTP_ACCEPT_LANGUAGE="en").content.decode()


def test_the_javascript_catalogue_is_in_the_requests_language(db):
    chinese = Client().get("/jsi18n/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    english = Client().get("/jsi18n/").content.decode()
    assert "\\u590d\\u5236\\u94fe\\u63a5" in chinese or "复制链接" in chinese  # "Copy link"
    assert "复制链接" not in english and "\\u590d\\u5236" not in english


def test_the_admin_in_chinese_shows_the_apps_own_actions_fields_and_messages(admin_client, alice, bob, general):
    page = admin_client.get("/admin/chat/room/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    for text in ("锁定所选房间（只读）", "解锁所选房间", "归档所选房间", "短标识", "已锁定"):
        assert text in page, text
    assert "Lock selected rooms" not in page
    response = admin_client.post(
        "/admin/chat/room/",
        {"action": "lock_rooms", "_selected_action": [general.pk]},
        HTTP_ACCEPT_LANGUAGE="zh-hans",
        follow=True,
    )
    assert "已锁定 1 个房间。" in response.content.decode()
    services.room_join(user=bob, slug=general.slug)
    services.room_update(user=alice, slug=general.slug, locked=False)
    message = services.message_send(user=alice, slug=general.slug, body="spam")[0]
    services.message_report(user=bob, message_id=message.pk, reason="spam")
    reports = admin_client.get("/admin/chat/report/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "处理：驳回" in reports and "以 已处理" in reports  # an action, and the list filter's title
    assert "举报人" in reports  # a field's verbose name


def test_the_admin_in_english_is_unchanged(admin_client, general):
    page = admin_client.get("/admin/chat/room/").content.decode()
    assert "Lock selected rooms (read-only)" in page
    response = admin_client.post(
        "/admin/chat/room/", {"action": "lock_rooms", "_selected_action": [general.pk]}, follow=True
    )
    assert "1 room(s) locked." in response.content.decode()


def test_deploy_check_messages_are_translated(settings):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "SIGNING_KEY": ""}
    with translation.override("zh-hans"):
        [warning] = checks.check_jwt_signing_key(None)
    assert warning.id == "chat.W001"
    assert warning.msg == "JWT_SIGNING_KEY 未设置：任何知道或猜到它的人都能以任意用户身份签发令牌。"


# WebSocket


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_a_websocket_error_detail_is_in_the_handshakes_language(alice, bob):
    await db(services.room_create)(user=alice, name="Secret", slug="secret", kind="private")
    chinese = await connect(bob, headers=[(b"accept-language", b"zh-Hans,zh;q=0.9")])
    english = await connect(bob)
    for client in (chinese, english):
        await client.send(type="join", room="secret", ref="j")
        await client.send(type="message.send", room="secret", body="hi", ref="s")  # through the batch writer
        await client.send(type="join", room="Not A Slug", ref="f")  # refused by the protocol module
    assert [await chinese.expect("error", ref=ref) for ref in ("j", "s", "f")] == [
        {"type": "error", "code": "forbidden", "detail": "房间“secret”是私有房间，需要成员邀请你加入。", "ref": "j"},
        {"type": "error", "code": "forbidden", "detail": "房间“secret”是私有房间，需要成员邀请你加入。", "ref": "s"},
        {
            "type": "error",
            "code": "invalid",
            "detail": "room: 必须是房间短标识（1-50 个小写字母、数字或连字符）。",
            "ref": "f",
        },
    ]
    assert [(await english.expect("error", ref=ref))["detail"] for ref in ("j", "s", "f")] == [
        "Room 'secret' is private: a member must invite you.",
        "Room 'secret' is private: a member must invite you.",
        "room: must be a room slug (1-50 lowercase letters, digits or hyphens).",
    ]
    await chinese.close()
    await english.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_layer")
async def test_the_language_cookie_outranks_accept_language_and_close_reasons_stay_english(alice):
    client = await connect(alice, headers=[(b"accept-language", b"en"), (b"cookie", b"django_language=zh-hans")])
    await client.send(type="nonsense", ref="x")
    assert (await client.expect("error", ref="x"))["detail"] == "未知的帧类型 'nonsense'。"
    await client.close()
    refused = await connect(alice, "/ws/chat/nope/", headers=[(b"accept-language", b"zh-hans")], hello=False)
    assert await refused.close_frame() == (4404, "No room 'nope'.")


# Commands


@pytest.mark.parametrize(
    "environ, language",
    [
        ({}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh-hans"),
        ({"LANGUAGE": "fr:zh_CN", "LANG": "en_US.UTF-8"}, "zh-hans"),
        ({"CHAT_LANGUAGE": "en", "LC_ALL": "zh_CN.UTF-8"}, "en"),
        ({"CHAT_LANGUAGE": "zh-hans"}, "zh-hans"),
    ],
)
def test_commands_take_their_language_from_the_environment(environ, language):
    assert environment_language(environ) == language


def test_a_commands_output_and_errors_are_in_the_environments_language(db, monkeypatch, settings):
    monkeypatch.setenv("CHAT_LANGUAGE", "zh-hans")
    out = StringIO()
    call_command("seed_demo", stdout=out, stderr=StringIO())
    assert out.getvalue().startswith("演示数据已就绪。\n用户：alice, bob, carol 和 admin（工作人员）")
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="^未设置 REDIS_URL"):
        call_command("send_notice", "hello")
    monkeypatch.setenv("CHAT_LANGUAGE", "en")
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert out.getvalue().startswith("Demo data is ready.\n")
