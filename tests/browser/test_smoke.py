"""The browser harness itself: Chromium, the live stack and the owner's login work together."""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import shot, sign_in

pytestmark = pytest.mark.e2e


def test_admin_login_page_renders(page, live_stack):
    failed = []
    page.on("response", lambda response: response.status >= 400 and failed.append(response.url))

    page.goto("/admin/login/")
    expect(page.locator("input[name=username]")).to_be_visible()
    shot(page, "admin_login")
    sign_in(page, live_stack, path="/admin/login/", next="/admin/")

    assert page.url == f"{live_stack.url}/admin/"
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    expect(page.get_by_role("link", name="Rules", exact=True)).to_be_visible()
    expect(page.locator("#user-tools")).to_contain_text(live_stack.username, ignore_case=True)
    shot(page, "admin_index")
    assert failed == [], "pages or their static files failed to load"


def test_the_api_docs_render_from_this_server_alone(page, live_stack):
    """Swagger UI's files come from this server (no CDN): the docs work without internet."""
    elsewhere = []
    page.on(
        "request", lambda request: request.url.startswith(live_stack.url) or elsewhere.append(request.url)
    )

    page.goto("/api/docs/")
    expect(page.locator(".swagger-ui .opblock-summary-path").first).to_be_visible()
    expect(page.get_by_text("/v1/project_score/test").first).to_be_visible()
    shot(page, "api_docs")
    assert elsewhere == [], "the API docs asked another server"
