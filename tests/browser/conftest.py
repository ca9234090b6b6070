"""Browser tests: Playwright for Python drives Debian's Chromium, headless, against a live
installation (tests/e2e/stack.py: the web server, a worker, Redis and a database of its own).

Fixtures:

- `browser`: one Chromium for all the browser tests (Playwright's driver and the browser take
  about a second to start). Playwright never
  downloads a browser here: it launches CHROMIUM_PATH (default /usr/bin/chromium, which
  `.ci/run` installs). Without it the tests skip, or fail when CI=true.
- `live_stack`: one `LiveStack` for all the browser tests: its `url`, and the owner of the
  organization "acme" (who owns the project "demo" and the stack's API key) with a password to
  sign in with. Tests share it: each works in projects and users of its own.
- `page`: a fresh context (no cookies, 1280x800, `base_url` = the stack's URL) and page per
  test. A failed test leaves a screenshot in var/screenshots/<test name>.png.

Helpers: `sign_in(page, live_stack)` signs in through a Django login form; `shot(page, name)`
saves var/screenshots/<name>.png.

    def test_home_lists_the_project(page, live_stack):
        sign_in(page, live_stack)
        expect(page.get_by_role("link", name="demo")).to_be_visible()
        shot(page, "home")

`browser` and the stack are scoped to this package: started once, and stopped once the last
browser test has run, so they do not idle through the rest of the suite, and Playwright's event
loop is gone before the tests that use the test database. While it runs, Django may see it and
refuse in-process database access (SynchronousOnlyOperation): a browser test reads and writes
the stack's data through its API (`live_stack.stack.api`) or `live_stack.stack.manage`, never
through the ORM (the stack has a database of its own anyway).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.stack import ROOT, Stack

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start. The network flags:
# the machine has no network, and Chromium stalls on its background requests without them.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
# Playwright's defaults (30 s) make a broken page slow to fail; the live server answers in ms.
TIMEOUT_MS = 10_000

# Sets the owner's password and makes them staff (as the first-run admin is), so that the owner
# can sign in to the web UI and to the admin.
_OWNER_SETUP = """
import json
from projects.models import User
user = User.objects.get(email={email!r})
user.set_password({password!r})
user.is_staff = user.is_superuser = True
user.save(update_fields=["password", "is_staff", "is_superuser"])
print("BROWSER_OWNER " + json.dumps({{"username": user.username}}))
"""

# A user who can sign in, a member (or owner) of the stack's organization.
_USER_CREATE = """
import json
from projects.models import Organization
from projects.services import membership_set, user_get_or_create
user = user_get_or_create(email={email!r})
user.set_password({password!r})
user.is_staff = {staff!r}
user.save(update_fields=["password", "is_staff"])
membership_set(organization=Organization.objects.get(name={organization!r}), user=user, role={role!r})
print("BROWSER_USER " + json.dumps({{"username": user.username}}))
"""


@dataclass(frozen=True)
class Login:
    username: str
    password: str
    email: str


@dataclass
class LiveStack:
    """A started Stack (`stack`: its API with the owner's key, `manage`, `sdk_log`, ...) and the
    login of its owner, owner@example.com in the organization "acme"."""

    stack: Stack
    owner: Login
    organization: str = "acme"

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def email(self) -> str:
        return self.owner.email

    @property
    def username(self) -> str:
        return self.owner.username

    @property
    def password(self) -> str:
        return self.owner.password

    def user_create(self, email: str, *, role: str = "member", staff: bool = False) -> Login:
        """A user who can sign in with the returned login: a member of the organization with
        `role` ("member" or "owner") and no project grant; `staff` lets them into the admin."""
        password = secrets.token_urlsafe(12)
        code = _USER_CREATE.format(
            email=email, password=password, staff=staff, organization=self.organization, role=role
        )
        return Login(
            username=_marked(self.stack, code, "BROWSER_USER")["username"], password=password, email=email
        )


def _marked(stack: Stack, code: str, marker: str) -> dict:
    """Run `code` in `manage.py shell` on the stack, and decode the line it printed after `marker`."""
    output = stack.manage("shell", "-c", code).stdout
    lines = [line for line in output.splitlines() if line.startswith(marker + " ")]
    assert lines, output
    return json.loads(lines[-1].removeprefix(marker + " "))


def shot(page: Page, name: str) -> Path:
    """Save a screenshot of the page's viewport to var/screenshots/<name>.png; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=path)
    return path


def sign_in(page: Page, live: LiveStack, login: Login | None = None, *, path: str = "/accounts/login/",
            next: str | None = None) -> None:  # fmt: skip
    """Sign in as `login` (the owner by default) through the Django login form at `path` (fields
    `username` and `password`), then to `next` when given. Returns on the page the form
    redirected to; AssertionError, with the form's error, if it showed the form again."""
    login = login or live.owner
    url = live.url + path + (f"?{urllib.parse.urlencode({'next': next})}" if next else "")
    page.goto(url)
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=username]").fill(login.username)
    form.locator("input[name=password]").fill(login.password)
    with page.expect_navigation():
        form.locator("button:not([type]), [type=submit]").first.click()
    if urllib.parse.urlsplit(page.url).path == path:
        errors = page.locator(".errornote, .errorlist, [role=alert]").all_inner_texts()
        raise AssertionError(f"Signing in as {login.username!r} at {path} failed: {errors or page.title()}")


# --- Fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser() -> Browser:
    if not os.access(CHROMIUM_PATH, os.X_OK):
        message = (
            f"No Chromium at {CHROMIUM_PATH} (set CHROMIUM_PATH, or `apt-get install chromium` as "
            "`.ci/run` does): the browser tests cannot run."
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with sync_playwright() as playwright:
        # Playwright gives it a fresh temporary --user-data-dir, removed on close.
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="package")
def _live_stack(tmp_path_factory) -> LiveStack:
    stack = Stack(tmp_path_factory.mktemp("browser-stack"), workers=1)
    with stack:
        password = secrets.token_urlsafe(12)
        email = "owner@example.com"  # the owner tests/e2e/stack.py provisions
        owner = _marked(stack, _OWNER_SETUP.format(email=email, password=password), "BROWSER_OWNER")
        yield LiveStack(stack=stack, owner=Login(username=owner["username"], password=password, email=email))


@pytest.fixture
def live_stack(_live_stack, pytestconfig) -> LiveStack:
    """The package's stack, whose output is appended to the report of this test if it fails (the
    plugin is registered per test, not for the stack's life, so other tests' reports stay clean)."""
    plugin = _live_stack.stack.pytest_plugin()
    pytestconfig.pluginmanager.register(plugin)
    yield _live_stack
    pytestconfig.pluginmanager.unregister(plugin)


@pytest.fixture
def page(browser, live_stack) -> Page:
    context = browser.new_context(viewport=VIEWPORT, base_url=live_stack.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test: a screenshot of its page, while the page is still open."""
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.failed and report.when == "call" and page is not None and not page.is_closed():
        try:
            path = shot(page, item.name)
        except Exception as exc:  # a crashed page must not hide the test's own failure
            report.sections.append(("screenshot", f"none: {exc}"))
        else:
            report.sections.append(("screenshot", str(path)))
    return report
