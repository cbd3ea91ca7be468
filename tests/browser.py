"""Helpers shared by the browser tests (tests/test_browser_*.py): headless Debian Chromium
driven by Playwright against real daphne servers (tests/live.py), two users side by side.

Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls, so
the database is prepared before the browser starts and checked after it stops, or written
from another thread (`in_thread`) meanwhile.
"""

import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import global_settings
from django.db import connection
from django.test import override_settings
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "s3cret-pass-1"  # conftest's make_user default
TIMEOUT_MS = 15_000
CHINESE = "zh-CN"  # a browser locale: its Accept-Language picks zh-hans, and Intl formats dates the Chinese way
ONLINE = {"en-US": "online", CHINESE: "在线"}
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 800}
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SHOTS = Path("/tmp/web-shots")
SHOTS_CHINESE = Path("/tmp/web-shots-zh")


def in_thread(fn, *args, **kwargs):
    """Run an ORM call while the browser runs, closing the thread's own connection after it."""

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def use_server_hasher(*users):
    """conftest hashes passwords cheaply; daphne runs the real settings, whose hashers must read them."""
    with override_settings(PASSWORD_HASHERS=global_settings.PASSWORD_HASHERS):
        for user in users:
            user.set_password(PASSWORD)
            user.save(update_fields=["password"])


@contextlib.contextmanager
def chromium():
    """A headless browser; enter it only after the test's own ORM calls (see the module docstring)."""
    if not Path(CHROMIUM).exists():  # conftest deselects these tests then, unless CHAT_REQUIRE_SERVICES=1
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, server, *, viewport=None, color_scheme="light", locale="en-US", has_touch=False):
    context = browser.new_context(
        base_url=server.url,
        viewport=viewport or DESKTOP,
        color_scheme=color_scheme,
        locale=locale,
        timezone_id="Europe/Paris",
        has_touch=has_touch,
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []  # script errors and console errors: a test may assert there were none
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on(
        "console",
        lambda msg: page.errors.append(msg.text) if msg.type == "error" and not network_error(msg.text) else None,
    )
    return page


def network_error(text: str) -> bool:
    """The browser's own console lines about a server a test stopped, or a refusal a test provokes."""
    return text.startswith(("WebSocket connection to", "Failed to load resource"))


def log_in(browser, server, username, **options):
    page = new_page(browser, server, **options)
    assert page.goto("/login/").status == 200
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")  # not the header's language switcher
    page.wait_for_url(f"{server.url}/")
    return page


def open_room(page, slug, online="online"):
    """Open a room and wait until its socket is up; `online` is the status line in the page's language."""
    assert page.goto(f"/rooms/{slug}/").status == 200
    expect(page.locator("#conn-state")).to_have_text(online, timeout=TIMEOUT_MS)
    assert page.errors == [], page.errors


def session_fetch(page, method, url, data=None) -> int:
    """The status of a same-origin JSON request from `page`, with its session cookie and CSRF token."""
    return page.evaluate(
        """async ([method, url, data]) => {
        const token = document.cookie.match(/csrftoken=([^;]+)/)[1];
        const response = await fetch(url, {method, body: data === null ? undefined : JSON.stringify(data),
                                           headers: {"X-CSRFToken": token, "Content-Type": "application/json"}});
        return response.status;
    }""",
        [method, url, data],
    )


def message_ids(page) -> list[int]:
    return page.eval_on_selector_all("#messages .msg", "items => items.map(node => Number(node.dataset.id))")


def last_body(page) -> str:
    return page.locator("#messages .msg .body").last.text_content()


def axe_violations(page) -> list[str]:
    """axe-core's violations on the page as it is now, one line each (rule, impact, first targets)."""
    # Through DevTools, not a <script> tag: the Content-Security-Policy refuses inline scripts.
    page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {json.dumps([n['target'] for n in v['nodes'][:3]])}" for v in result["violations"]
    ]


def screenshot(page, name: str, folder: Path = SHOTS) -> None:
    """For a person to look at; never committed."""
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))
