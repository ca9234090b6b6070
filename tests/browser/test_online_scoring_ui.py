"""The web UI in Chromium against a live installation: sign in, create a rule with a Test rule
preview, watch new traces get scored, score by hand (selected logs, past logs, one span in the
trace view), read a trace and its "why is there no score?", write a custom scorer, see the
trend chart, and get positioned BTQL errors. Each test works in a project of its own.

Screenshots of the main pages are saved to var/screenshots/ (the CI artifacts)."""

import time

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveStack, shot, sign_in

pytestmark = pytest.mark.e2e

SCORED_WITHIN_S = 30


def project_new(live: LiveStack, name: str) -> str:
    return live.stack.api("POST", "/v1/project", {"name": name})["id"]


def reload_until(page: Page, locator, timeout: float = SCORED_WITHIN_S) -> None:
    """Reload the page until `locator` shows: the pages are server-rendered, and scores arrive
    from the worker in the background."""
    deadline = time.monotonic() + timeout
    while locator.count() == 0:
        assert time.monotonic() < deadline, f"{locator} never appeared on {page.url}"
        time.sleep(0.5)
        page.reload()


def rule_create(live: LiveStack, project_id: str, name: str, *scorers: str, **online) -> dict:
    return live.stack.api("POST", "/v1/project_score", {
        "project_id": project_id, "name": name, "score_type": "online",
        "config": {"online": {"sampling_rate": 1, "apply_to_root_span": True,
                              "scorers": [{"type": "global", "name": s} for s in scorers], **online}},
    })  # fmt: skip


def test_signing_in_opens_the_projects_and_their_logs(page, live_stack):
    project_new(live_stack, "signin-ui")
    page.goto("/")
    expect(page).to_have_url(f"{live_stack.url}/accounts/login/?next=/")
    shot(page, "sign_in")
    sign_in(page, live_stack)
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    expect(page.get_by_role("heading", name="acme")).to_be_visible()
    shot(page, "projects")
    page.get_by_role("link", name="signin-ui", exact=True).first.click()
    expect(page.get_by_role("heading", name="Logs")).to_be_visible()
    expect(page.get_by_text("No logs yet")).to_be_visible()
    page.get_by_role("link", name="Online scoring", exact=True).click()
    expect(page.get_by_text("Configuration › Online scoring")).to_be_visible()


def test_a_member_without_rights_sees_no_project_and_is_refused_its_pages(page, live_stack):
    project_id = project_new(live_stack, "private-ui")
    member = live_stack.user_create("no-grants@example.com")
    sign_in(page, live_stack, member)
    expect(page.get_by_text("No projects you can read yet")).to_be_visible()
    response = page.goto(f"/projects/{project_id}/online-scoring/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="403")).to_be_visible()


def test_a_rule_made_in_the_dialog_previews_then_scores_new_traces(page, live_stack):
    project_id = project_new(live_stack, "rule-dialog-ui")
    live_stack.stack.sdk_log("rule-dialog-ui", [
        {"name": "chat", "input": "2+2", "output": "4", "expected": "4", "metadata": {"env": "prod"}},
        {"name": "chat", "input": "3+3", "output": "7", "expected": "6", "metadata": {"env": "prod"}},
        {"name": "chat", "input": "4+4", "output": "8", "expected": "8", "metadata": {"env": "dev"}},
    ])  # fmt: skip
    sign_in(page, live_stack, next=f"/projects/{project_id}/online-scoring/")
    page.get_by_role("button", name="+ Create rule").click()
    dialog = page.locator("#rule-dialog")
    dialog.get_by_label("Rule name").fill("Exact in prod")
    dialog.get_by_label("Description").fill("Final answers in production")
    dialog.get_by_label("ExactMatch").check()
    dialog.get_by_label("Sampling rate (%)").fill("100")
    dialog.get_by_label("BTQL filter clause").fill('metadata.env = "prod"')
    dialog.get_by_label("Root spans").check()

    dialog.get_by_role("button", name="Test rule").click()
    preview = dialog.locator("[data-test-results]")
    expect(preview.locator("tbody tr")).to_have_count(3)
    expect(preview).to_contain_text("nothing is saved")
    matched = preview.locator("tbody tr", has_text="ExactMatch")
    expect(matched).to_have_count(2)
    expect(preview.locator("tbody tr", has_text="ExactMatch 100%")).to_have_count(1)
    expect(preview.locator("tbody tr", has_text="ExactMatch 0%")).to_have_count(1)
    shot(page, "rule_dialog_test_rule")
    assert live_stack.stack.api("GET", f"/v1/project_score?project_id={project_id}")["objects"] == []

    dialog.get_by_role("button", name="Save rule").click()
    row = page.locator("tr", has_text="Exact in prod")
    expect(row).to_contain_text("Final answers in production")
    expect(row).to_contain_text("ExactMatch")
    expect(row).to_contain_text("100%")
    expect(row.locator("[data-rule-enabled]")).to_be_checked()

    expect(row.locator("[data-stat=scored]")).to_have_text("0")
    live_stack.stack.sdk_log("rule-dialog-ui", [
        {"name": "chat", "input": "5+5", "output": "10", "expected": "10", "metadata": {"env": "prod"}},
    ])  # fmt: skip
    # The counts are live: no reload.
    expect(row.locator("[data-stat=scored]")).to_have_text("1", timeout=SCORED_WITHIN_S * 1000)
    shot(page, "online_scoring_rules")
    page.get_by_role("link", name="Logs", exact=True).click()
    scored = page.locator("tbody tr", has_text="5+5").locator("td[title='1']")
    reload_until(page, scored)
    expect(page.get_by_role("columnheader", name="ExactMatch")).to_be_visible()
    expect(scored).to_have_text("100%")
    # The traces logged before the rule existed are not scored online.
    expect(page.locator("tbody tr", has_text="2+2").locator("td.num").first).to_have_text("—")
    shot(page, "logs_scored")


def test_a_rule_is_disabled_edited_and_deleted_from_the_list(page, live_stack):
    project_id = project_new(live_stack, "rule-edit-ui")
    rule = rule_create(live_stack, project_id, "Lev", "Levenshtein")
    sign_in(page, live_stack, next=f"/projects/{project_id}/online-scoring/")
    row = page.locator(f"tr[data-rule-id='{rule['id']}']")
    with page.expect_response(lambda r: r.request.method == "PATCH" and r.ok):
        row.locator("[data-rule-enabled]").uncheck(force=True)
    online = live_stack.stack.api("GET", f"/v1/project_score/{rule['id']}")["config"]["online"]
    assert online["enabled"] is False

    row.get_by_role("button", name="Edit").click()
    dialog = page.locator("#rule-dialog")
    expect(dialog.get_by_label("Rule name")).to_have_value("Lev")
    expect(dialog.get_by_label("Levenshtein")).to_be_checked()
    dialog.get_by_label("Sampling rate (%)").fill("25")
    dialog.get_by_label("Span names").fill("retrieve, answer")
    dialog.get_by_role("button", name="Save rule").click()
    expect(row).to_contain_text("25%")
    online = live_stack.stack.api("GET", f"/v1/project_score/{rule['id']}")["config"]["online"]
    assert online["sampling_rate"] == 0.25 and online["apply_to_span_names"] == ["retrieve", "answer"]
    assert online["enabled"] is False

    page.once("dialog", lambda confirm: confirm.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert live_stack.stack.api("GET", f"/v1/project_score?project_id={project_id}")["objects"] == []


def test_the_rule_dialog_shows_the_api_errors_at_their_fields(page, live_stack):
    project_id = project_new(live_stack, "rule-errors-ui")
    sign_in(page, live_stack, next=f"/projects/{project_id}/online-scoring/")
    page.get_by_role("button", name="+ Create rule").click()
    dialog = page.locator("#rule-dialog")
    dialog.get_by_label("Rule name").fill("No scorers")
    dialog.get_by_role("button", name="Save rule").click()
    expect(dialog.locator("[data-error-for='config.online.scorers']")).to_contain_text("at least one scorer")
    expect(dialog).to_be_visible()


def test_an_invalid_filter_shows_its_position_in_the_logs_and_in_the_rule_dialog(page, live_stack):
    project_id = project_new(live_stack, "filters-ui")
    sign_in(page, live_stack, next=f"/projects/{project_id}/")
    filter_bar = page.get_by_role("search").get_by_label("BTQL filter")
    filter_bar.fill("input = = 1")
    filter_bar.press("Enter")
    error = page.locator("[data-error-for='filter']").first
    expect(error).to_contain_text("line 1, column 9")
    expect(error.locator("pre")).to_have_text("input = = 1\n        ^")
    shot(page, "logs_filter_error")

    page.goto(f"/projects/{project_id}/online-scoring/")
    page.get_by_role("button", name="+ Create rule").click()
    dialog = page.locator("#rule-dialog")
    # Checked as you type: no button pressed.
    dialog.get_by_label("BTQL filter clause").press_sequentially('metadata.env = = "prod"')
    slot = dialog.locator("[data-error-for='config.online.btql_filter']")
    expect(slot).to_contain_text("column 16")
    expect(slot.locator("pre")).to_have_text('metadata.env = = "prod"\n               ^')
    shot(page, "rule_dialog_filter_error")
    dialog.get_by_label("BTQL filter clause").fill('metadata.env = "prod"')
    dialog.get_by_label("BTQL filter clause").blur()
    expect(slot).to_be_empty()


def test_a_click_that_leaves_a_wrong_filter_is_not_lost(page, live_stack):
    """Leaving the field checks the filter again: the error it showed stays until the answer,
    so the dialog does not move under the click that left the field."""
    project_id = project_new(live_stack, "filter-click-ui")
    sign_in(page, live_stack, next=f"/projects/{project_id}/online-scoring/")
    page.get_by_role("button", name="+ Create rule").click()
    dialog = page.locator("#rule-dialog")
    dialog.get_by_label("BTQL filter clause").press_sequentially('metadata.env = "prod" and')
    expect(dialog.locator("[data-error-for='config.online.btql_filter']")).not_to_be_empty()
    dialog.get_by_label("ExactMatch").click()
    expect(dialog.get_by_label("ExactMatch")).to_be_checked()


def test_test_rule_shows_the_steps_a_span_did_not_reach_as_such(page, live_stack):
    project_id = project_new(live_stack, "test-steps-ui")
    live_stack.stack.sdk_log("test-steps-ui", [
        {"name": "chat", "output": "4", "expected": "4", "metadata": {"env": "dev"}},
    ])  # fmt: skip
    sign_in(page, live_stack, next=f"/projects/{project_id}/online-scoring/")
    page.get_by_role("button", name="+ Create rule").click()
    dialog = page.locator("#rule-dialog")
    dialog.get_by_label("ExactMatch").check()
    dialog.get_by_label("BTQL filter clause").fill('metadata.env = "prod"')
    dialog.get_by_role("button", name="Test rule").click()
    row = dialog.locator("[data-test-results] tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td")).to_have_text(["chat", "✗ no", "—", "—", "—"])
    expect(row.get_by_role("link", name="chat")).to_have_attribute("target", "_blank")

    dialog.get_by_label("BTQL filter clause").fill("")
    dialog.get_by_label("Sampling rate (%)").fill("0")
    dialog.get_by_role("button", name="Test rule").click()
    expect(row.locator("td")).to_have_text(["chat", "✓ yes", "✓ yes", "✗ no", "If drawn: ExactMatch 100%"])


def test_menus_close_on_escape_and_on_a_click_elsewhere(page, live_stack):
    project_id = project_new(live_stack, "menus-ui")
    sign_in(page, live_stack, next=f"/projects/{project_id}/")
    switcher = page.locator("details.switcher")
    switcher.locator("summary").click()
    expect(switcher).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(switcher).not_to_have_attribute("open", "")
    switcher.locator("summary").click()
    page.get_by_role("heading", name="Logs").click()
    expect(switcher).not_to_have_attribute("open", "")


@pytest.mark.parametrize(
    "page_name", ["logs", "online-scoring", "scorers", "monitor", "trace", "rule-errors"]
)
def test_pages_fit_a_phone_screen(browser, live_stack, page_name):
    """At 390 px wide nothing makes the page wider than the screen: the top bar wraps, the
    columns stack, and wide tables scroll inside their boxes."""
    name = f"phone-ui-{page_name}"
    project_id = project_new(live_stack, name)
    rule = rule_create(live_stack, project_id, "Exact answers in production", "ExactMatch", "Levenshtein")
    (root, _, _) = live_stack.stack.sdk_log(name, [
        {"name": "a span with a rather long name", "input": "x" * 500, "output": "y", "expected": "y",
         "metadata": {"env": "prod"}, "children": [{"name": "retrieve", "output": "z" * 300}]},
        {"name": "no expected, so Levenshtein fails", "input": "q", "output": "y" * 200},
    ])  # fmt: skip
    path = {
        "logs": "",
        "trace": f"logs/{root['id']}/",
        "rule-errors": f"online-scoring/{rule['id']}/errors/",
    }.get(page_name, f"{page_name}/")
    if page_name == "rule-errors":  # with a failed run in its table
        live_stack.stack.wait_until(
            lambda: live_stack.stack.api("GET", f"/v1/project_score/{rule['id']}/stats")["errored"],
            timeout=30,
        )
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=live_stack.url)
    try:
        page = context.new_page()
        sign_in(page, live_stack, next=f"/projects/{project_id}/{path}")
        expect(page.locator("main h1").first).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        shot(page, f"phone_{page_name}")
        assert width <= 390, f"the {page_name} page is {width} px wide on a 390 px screen"
    finally:
        context.close()


def test_selected_logs_are_scored_from_the_list(page, live_stack):
    project_id = project_new(live_stack, "score-selected-ui")
    live_stack.stack.sdk_log("score-selected-ui", [
        {"name": "chat", "input": f"q{i}", "output": "paris", "expected": "paris"} for i in range(3)
    ])  # fmt: skip
    sign_in(page, live_stack, next=f"/projects/{project_id}/")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(3)
    score = page.get_by_role("button", name="Score", exact=True)
    expect(score).to_be_disabled()
    rows.filter(has_text="q0").locator("[data-row]").check()
    rows.filter(has_text="q2").locator("[data-row]").check()
    score.click()
    dialog = page.locator("#score-selected")
    expect(dialog).to_contain_text("2 selected logs")
    dialog.get_by_label("Levenshtein").check()
    dialog.get_by_role("button", name="Score").click()
    expect(dialog.locator("[data-progress-text]")).to_contain_text(
        "2 of 2 runs finished.", timeout=SCORED_WITHIN_S * 1000
    )
    shot(page, "score_selected")
    dialog.get_by_role("button", name="Close").click()
    expect(page.get_by_role("columnheader", name="Levenshtein")).to_be_visible()
    for text, shown in (("q0", "100%"), ("q1", "—"), ("q2", "100%")):
        expect(rows.filter(has_text=text).locator("td.num").first).to_have_text(shown)


def test_score_past_logs_scores_the_most_recent_matching_logs(page, live_stack):
    project_id = project_new(live_stack, "score-past-ui")
    live_stack.stack.sdk_log("score-past-ui", [
        {"name": "chat", "input": f"q{i}", "output": "a", "expected": "a" if i else "b",
         "metadata": {"env": "prod" if i < 3 else "dev"}} for i in range(4)
    ])  # fmt: skip
    sign_in(page, live_stack, next=f"/projects/{project_id}/")
    page.locator("details.dropdown summary", has_text="Online scoring").click()
    page.get_by_role("button", name="Score past logs").click()
    dialog = page.locator("#score-past")
    expect(dialog.get_by_label("How many logs")).to_have_value("50")
    dialog.get_by_label("BTQL filter clause").fill('metadata.env = "prod"')
    dialog.get_by_label("ExactMatch").check()
    dialog.get_by_label("How many logs").fill("5000")
    dialog.get_by_role("button", name="Score").click()
    expect(dialog.locator("[data-error-for=limit]")).to_contain_text("1000")  # next to its field
    dialog.get_by_label("How many logs").fill("50")
    dialog.get_by_role("button", name="Score").click()
    progress = dialog.locator("[data-progress-text]")
    expect(progress).to_contain_text("3 of 3 runs finished.", timeout=SCORED_WITHIN_S * 1000)
    shot(page, "score_past_logs")
    dialog.get_by_role("button", name="Close").click()
    rows = page.locator("tbody tr")
    for text, shown in (("q0", "0%"), ("q1", "100%"), ("q2", "100%"), ("q3", "—")):
        expect(rows.filter(has_text=text).locator("td.num").first).to_have_text(shown)


def test_the_trace_view_shows_the_scoring_span_and_scores_a_span_with_its_button(page, live_stack):
    project_id = project_new(live_stack, "trace-ui")
    rule_create(live_stack, project_id, "Exact", "ExactMatch")
    live_stack.stack.sdk_log("trace-ui", [{
        "name": "answer", "input": "capital of France?", "output": "Paris", "expected": "Paris",
        "children": [{"name": "retrieve", "input": "France", "output": {"docs": ["Paris is the capital"]}}],
    }])  # fmt: skip
    sign_in(page, live_stack, next=f"/projects/{project_id}/")
    reload_until(page, page.locator("tbody td[title='1']"))
    page.get_by_role("link", name="answer", exact=True).click()

    tree = page.get_by_role("navigation", name="Spans")
    expect(tree.locator("li")).to_have_count(3)
    scoring_span = tree.locator("li.scorer")
    expect(scoring_span).to_contain_text("ExactMatch")
    expect(scoring_span).to_contain_text("100%")
    expect(tree.locator("li").first).to_contain_text("answer")
    detail = page.get_by_role("region", name="Span detail")
    expect(detail).to_contain_text("capital of France?")
    why = detail.locator("table.why")
    expect(why).to_contain_text("Exact")
    expect(why).to_contain_text("scored")
    shot(page, "trace")

    scoring_span.get_by_role("link").click()
    expect(detail.get_by_role("heading", name="ExactMatch")).to_be_visible()
    expect(detail).to_contain_text('"score": 1')
    expect(detail).to_contain_text("Scoring spans are never scored.")

    tree.get_by_role("link").filter(has_text="retrieve").click()
    expect(detail.locator("table.why")).to_contain_text("Not selected")
    detail.get_by_role("button", name="Score").click()
    dialog = page.locator("#score-span")
    dialog.get_by_label("ValidJSON").check()
    dialog.get_by_role("button", name="Score").click()
    expect(dialog.locator("[data-progress-text]")).to_contain_text(
        "1 of 1 runs finished.", timeout=SCORED_WITHIN_S * 1000
    )
    dialog.get_by_role("button", name="Close").click()
    expect(tree.locator("li.scorer", has_text="ValidJSON")).to_contain_text("100%")
    expect(detail.locator("table.compact").first).to_contain_text("ValidJSON")
    shot(page, "trace_scored_by_hand")


def test_a_code_scorer_is_written_tested_and_offered_to_rules(page, live_stack):
    project_id = project_new(live_stack, "scorers-ui")
    sign_in(page, live_stack, next=f"/projects/{project_id}/scorers/")
    page.get_by_role("button", name="+ Code scorer").click()
    dialog = page.locator("#function-dialog")
    dialog.get_by_label("Name").fill("Short answer")
    dialog.get_by_label("Slug").fill("short-answer")
    dialog.get_by_label("Code").fill(
        "def handler(output):\n    return {'score': 1.0 if len(output) < 10 else 0.0, 'metadata': {'length': len(output)}}\n"
    )
    dialog.locator("textarea[name=test_output]").fill('"Paris"')
    expect(dialog.get_by_role("button", name="Cancel")).to_be_visible()
    dialog.get_by_role("button", name="Test").click()
    result = dialog.locator("[data-function-result]")
    expect(result).to_contain_text('"Short answer": 1')
    expect(result).to_contain_text('"length": 5')
    # Testing saved the scorer: leaving the dialog no longer cancels anything.
    expect(dialog.get_by_role("button", name="Close")).to_be_visible()
    shot(page, "scorer_dialog_test")

    dialog.get_by_label("Code").fill("def handler(output):\n    return (\n")
    dialog.get_by_role("button", name="Save scorer").click()
    expect(dialog.locator("[data-error-for='function_data.data.code']")).to_contain_text("Syntax error")
    expect(result).to_be_hidden()  # the result was the earlier code's
    dialog.get_by_role("button", name="Test").click()
    expect(dialog.locator("[data-error-for='function_data.data.code']")).to_contain_text("Syntax error")
    expect(result).to_be_hidden()

    dialog.get_by_label("Language").select_option("node")
    dialog.get_by_label("Code").fill(
        "export function handler({ output }: { output: string }): number {\n  return output.length < 10 ? 1 : 0;\n}\n"
    )
    dialog.get_by_role("button", name="Save scorer").click()
    row = page.locator("tbody tr", has_text="Short answer")
    expect(row).to_contain_text("TypeScript")
    expect(row.locator("td.num")).to_have_text("2")  # the Python test saved version 1
    shot(page, "scorers")

    page.get_by_role("link", name="Online scoring", exact=True).click()
    page.get_by_role("button", name="+ Create rule").click()
    expect(page.locator("#rule-dialog .picker-group", has_text="Project scorers-ui")).to_contain_text(
        "Short answer"
    )


def test_the_monitor_charts_each_score_per_project_and_per_rule(page, live_stack):
    project_id = project_new(live_stack, "monitor-ui")
    rule_create(live_stack, project_id, "Exact", "ExactMatch")
    live_stack.stack.sdk_log("monitor-ui", [
        {"name": "chat", "input": f"q{i}", "output": "a", "expected": "a" if i % 2 else "b"} for i in range(4)
    ])  # fmt: skip
    live_stack.stack.wait_until(
        lambda: live_stack.stack.api("GET", f"/v1/project_score?project_id={project_id}")
        and all(e["scores"] for e in live_stack.stack.fetch_all(project_id) if e["is_root"]
                and (e["span_attributes"] or {}).get("purpose") != "scorer")
    )  # fmt: skip
    sign_in(page, live_stack, next=f"/projects/{project_id}/monitor/")
    charts = page.locator("section.card")
    expect(charts).to_have_count(2)
    expect(charts.nth(0)).to_contain_text("All scores in this project")
    expect(charts.nth(1)).to_contain_text("Rule: Exact")
    expect(charts.nth(0).locator("svg polyline")).to_have_count(1)
    expect(charts.nth(0).locator("svg")).to_contain_text("ExactMatch 50.0 %")
    page.get_by_label("Period").select_option("day")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(f"{live_stack.url}/projects/{project_id}/monitor/?bucket=day")
    expect(charts.nth(1).locator("svg")).to_contain_text("ExactMatch 50.0 %")
    shot(page, "monitor")


def test_a_rules_error_count_turns_into_a_link_to_its_failed_runs(page, live_stack):
    project_id = project_new(live_stack, "rule-errors-ui")
    rule_create(live_stack, project_id, "Similar answers", "Levenshtein")
    sign_in(page, live_stack, next=f"/projects/{project_id}/online-scoring/")
    count = page.locator('[data-stat="errored"]')
    expect(count).to_have_text("0")
    [span] = live_stack.stack.sdk_log(
        "rule-errors-ui", [{"name": "no expected", "input": "q", "output": "a"}]
    )
    # No reload: the page's live stats make the link once the worker has failed the run.
    link = count.get_by_role("link", name="1")
    expect(link).to_be_visible(timeout=SCORED_WITHIN_S * 1000)
    link.click()
    expect(page.get_by_role("heading", name="Errors of “Similar answers”")).to_be_visible()
    rows = page.locator("[data-rule-errors] tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("Levenshtein")
    expect(rows).to_contain_text("requires an expected value")
    expect(rows.get_by_role("link", name="no expected")).to_have_attribute(
        "href", f"/projects/{project_id}/logs/{span['id']}/"
    )
    shot(page, "rule_errors")


def test_an_llm_judge_is_written_and_edited_on_the_scorers_page(page, live_stack):
    project_id = project_new(live_stack, "judges-ui")
    sign_in(page, live_stack, next=f"/projects/{project_id}/scorers/")
    page.get_by_role("button", name="+ LLM judge").click()
    dialog = page.locator("#function-dialog")
    expect(dialog.get_by_label("Language")).to_be_hidden()
    dialog.get_by_label("Name").fill("Polite")
    dialog.get_by_label("Slug").fill("polite")
    dialog.locator("textarea[name=system]").fill("You grade politeness.")
    dialog.locator("textarea[name=user]").fill("Reply: {{output}}\nIs it polite? Y or N")
    dialog.get_by_label("Model").fill("gpt-4o-mini")
    dialog.locator("textarea[name=choice_scores]").fill("Y: 1\nN: 0\nSomewhat: 0.5")
    shot(page, "judge_dialog")
    dialog.get_by_role("button", name="Save scorer").click()
    row = page.locator("tbody tr", has_text="Polite")
    expect(row).to_contain_text("LLM judge")

    row.get_by_role("button", name="Edit").click()
    expect(dialog.get_by_label("Model")).to_have_value("gpt-4o-mini")
    expect(dialog.locator("textarea[name=choice_scores]")).to_have_value("Y: 1\nN: 0\nSomewhat: 0.5")
    expect(dialog.locator("textarea[name=system]")).to_have_value("You grade politeness.")
    dialog.locator("textarea[name=choice_scores]").fill("Y: 1\nN: 2")
    dialog.get_by_role("button", name="Save scorer").click()
    expect(dialog.locator("[data-error-for='prompt_data.parser.choice_scores']")).to_contain_text(
        "between 0 and 1"
    )
