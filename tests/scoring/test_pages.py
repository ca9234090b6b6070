"""The web UI's pages, in process: who may open what, and what each page shows. The browser
suite (tests/browser/) drives the same pages in Chromium."""

import json
import re

import pytest
from django.db import connection
from django.test import Client, TestCase
from django.test.utils import CaptureQueriesContext

from projects.models import Membership, ProjectGrant
from scoring.models import Rule
from tests.factories import OrganizationFactory, ProjectFactory, UserFactory
from tests.scoring.conftest import log, rule_body

EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}


def member(organization, *, role=Membership.Role.MEMBER, grants=()):
    user = UserFactory()
    Membership.objects.create(organization=organization, user=user, role=role)
    for project, object_type, permission in grants:
        ProjectGrant.objects.create(
            project=project, user=user, object_type=object_type, permission=permission
        )
    return user


def browser(user=None, *, enforce_csrf=False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf, HTTP_ACCEPT="text/html")
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def owner_user(org):
    return member(org, role=Membership.Role.OWNER)


PAGES = ["logs", "online-scoring", "scorers", "monitor"]


def page_url(project, page: str) -> str:
    return f"/projects/{project.pk}/" + ("" if page == "logs" else f"{page}/")


@pytest.mark.parametrize("page", PAGES)
def test_every_project_page_asks_an_anonymous_visitor_to_sign_in(project, page):
    response = browser().get(page_url(project, page))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_signing_in_with_the_form_opens_the_projects_list(org, project):
    user = member(org, role=Membership.Role.OWNER)
    user.set_password("a long password")
    user.save()
    client = browser()
    response = client.post("/accounts/login/", {"username": user.username, "password": "a long password"})
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert b"acme" in home.content and f"/projects/{project.pk}/".encode() in home.content


def test_a_wrong_password_is_refused_with_a_message(org):
    user = member(org)
    response = browser().post("/accounts/login/", {"username": user.username, "password": "wrong"})
    assert response.status_code == 200
    assert b"didn't match" in response.content


@pytest.mark.parametrize("page", PAGES)
def test_an_owner_opens_every_page_of_a_project(project, owner_user, page):
    response = browser(owner_user).get(page_url(project, page))
    assert response.status_code == 200, response.content[:500]
    assert project.name.encode() in response.content


@pytest.mark.parametrize("page", PAGES)
def test_a_project_of_another_organization_is_not_found(project, page):
    stranger = member(OrganizationFactory(name="other"), role=Membership.Role.OWNER)
    response = browser(stranger).get(page_url(project, page))
    assert response.status_code == 404
    assert b"<html" in response.content  # a page for browsers, not the API's JSON


@pytest.mark.parametrize("page", PAGES)
def test_a_member_without_read_on_the_logs_is_refused(org, project, page):
    user = member(org, grants=[(project, "project", "read")])
    assert browser(user).get(page_url(project, page)).status_code == 403


def test_a_member_with_read_on_the_logs_opens_them(org, project):
    user = member(org, grants=[(project, "project", "read"), (project, "project_logs", "read")])
    assert browser(user).get(page_url(project, "logs")).status_code == 200


@pytest.mark.parametrize("page", ["online-scoring", "scorers", "monitor"])
def test_a_member_who_reads_the_logs_but_not_the_project_is_refused_its_configuration(org, project, page):
    user = member(org, grants=[(project, "project_logs", "read")])
    response = browser(user).get(page_url(project, page))
    assert response.status_code == 403 and b"<html" in response.content


def test_the_logs_page_reads_its_project_once(project, owner_user):
    client = browser(owner_user)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(page_url(project, "logs")).status_code == 200
    # By its id: the navigation lists the organization's projects besides.
    reads = [
        q
        for q in queries
        if 'FROM "projects_project"' in q["sql"] and '"projects_project"."id" =' in q["sql"]
    ]
    assert len(reads) == 1, reads


def test_the_projects_list_shows_only_readable_projects(org, project):
    hidden = ProjectFactory(organization=org, name="hidden")
    user = member(org, grants=[(project, "project", "read")])
    content = browser(user).get("/").content.decode()
    assert f"/projects/{project.pk}/" in content and f"/projects/{hidden.pk}/" not in content


def test_the_logs_page_lists_root_spans_with_scores_as_percentages(project, owner, owner_user, run_inline):
    owner.post("/v1/project_score", rule_body(project, name="exact"))
    log(
        owner,
        project,
        {"id": "root", "span_id": "r", "root_span_id": "r", "span_attributes": {"name": "chat"},
         "input": "question", "output": "answer", "expected": "answer", "metrics": {"start": 1, "end": 1.25}},
        {"id": "child", "span_id": "c", "root_span_id": "r", "span_parents": ["r"],
         "span_attributes": {"name": "retrieve"}, "metrics": {"start": 1, "end": 1.1}},
    )  # fmt: skip
    content = browser(owner_user).get(page_url(project, "logs")).content.decode()
    assert "chat" in content and "retrieve" not in content  # traces only
    assert '<th class="num">ExactMatch</th>' in content
    assert 'title="1">100%</td>' in content  # 0–100 %, the raw value on hover
    assert "250 ms" in content


def test_the_logs_page_flags_failed_scorers_and_errored_spans(project, owner, owner_user, run_inline):
    """A failed scorer leaves no score to show: the row says so, with the errors on hover. A
    scorer run again with success is no longer flagged."""
    owner.post("/v1/project_score", rule_body(project, name="both", scorers=[EXACT, LEVENSHTEIN]))
    log(owner, project,
        {"id": "failed", "span_attributes": {"name": "no expected"}, "output": "a", "metrics": {"start": 1, "end": 2}},
        {"id": "fine", "span_attributes": {"name": "all good"}, "output": "a", "expected": "a",
         "metrics": {"start": 1, "end": 2}},
        {"id": "broken", "span_attributes": {"name": "crashed"}, "error": "Timeout calling the model",
         "output": "a", "expected": "a", "metrics": {"start": 1, "end": 2}})  # fmt: skip
    rows = _rows(browser(owner_user).get(page_url(project, "logs")).content.decode())
    assert ">1 scorer error</span>" in rows["no expected"]
    assert (
        'title="Levenshtein: ValueError: LevenshteinScorer requires an expected value"' in rows["no expected"]
    )
    assert "badge error" not in rows["all good"]
    assert 'title="Timeout calling the model">error</span>' in rows["crashed"]

    log(owner, project, {"id": "failed", "_is_merge": True, "expected": "a"})
    response = owner.post(
        f"/v1/project_logs/{project.pk}/score", {"scorers": [LEVENSHTEIN], "ids": ["failed"]}
    )
    assert response.status_code == 202, response.content
    rows = _rows(browser(owner_user).get(page_url(project, "logs")).content.decode())
    assert "badge error" not in rows["no expected"]


def _rows(content: str) -> dict[str, str]:
    """The logs table's rows, by span name."""
    rows = content.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    return {re.search(r'aria-label="Select ([^"]+)"', row).group(1): row for row in rows}


def test_an_invalid_filter_shows_its_position(project, owner_user):
    response = browser(owner_user).get(page_url(project, "logs"), {"filter": "input = = 1"})
    content = response.content.decode()
    assert response.status_code == 200
    assert "line 1, column 9" in content
    assert "input = = 1\n        ^" in content


def test_the_trace_page_shows_the_scoring_span_under_the_scored_span(project, owner, owner_user, run_inline):
    owner.post("/v1/project_score", rule_body(project, name="exact"))
    log(owner, project, {"id": "root", "span_id": "r", "root_span_id": "r", "span_attributes": {"name": "chat"},
                         "output": "a", "expected": "a", "metrics": {"start": 1, "end": 2}})  # fmt: skip
    content = browser(owner_user).get(f"/projects/{project.pk}/logs/root/").content.decode()
    tree = content[content.index('aria-label="Spans"') : content.index('aria-label="Span detail"')]
    assert tree.index("chat") < tree.index("ExactMatch")
    assert "--depth: 1" in tree  # the scoring span is a child
    # Scored: the rules' decisions are headed as such, in words, with the API's code as a hint.
    assert "Scoring rules</h3>" in content and "Why is there no score?" not in content
    assert "exact" in content and 'title="scored">Scored<' in content


def test_an_unscored_span_asks_why_and_names_each_decision_in_words(project, owner, owner_user, queued):
    owner.post("/v1/project_score", rule_body(project, name="prod only", btql_filter="metadata.env = 'prod'"))
    log(owner, project, {"id": "root", "metadata": {"env": "dev"}, "metrics": {"start": 1, "end": 2}})
    content = browser(owner_user).get(f"/projects/{project.pk}/logs/root/").content.decode()
    assert "Why is there no score?</h3>" in content
    assert 'title="filtered_out">Filtered out<' in content


def test_a_bad_filter_on_the_logs_page_does_not_claim_that_no_logs_match(project, owner, owner_user):
    log(owner, project, {"id": "a", "metrics": {"start": 1, "end": 2}})
    content = browser(owner_user).get(page_url(project, "logs"), {"filter": "input = = 1"}).content.decode()
    assert "Fix the filter to see logs." in content and "No logs match" not in content


def test_the_trace_page_of_an_unknown_log_is_not_found(project, owner_user):
    assert browser(owner_user).get(f"/projects/{project.pk}/logs/nope/").status_code == 404


def test_the_rules_page_lists_rules_with_their_stats_and_an_editable_body(project, owner, owner_user):
    owner.post(
        "/v1/project_score", rule_body(project, name="exact", description="checks", btql_filter="input = 'x'")
    )
    content = browser(owner_user).get(page_url(project, "online-scoring")).content.decode()
    assert "Configuration › Online scoring" in content and "+ Create rule" in content
    assert "exact" in content and "checks" in content and "input = &#x27;x&#x27;" in content
    rule = Rule.objects.get(name="exact")
    assert f'data-rule-id="{rule.pk}"' in content
    for label in ["Rule name", "Description", "Scorers", "Sampling rate (%)", "BTQL filter clause",
                  "Apply to spans", "Root spans", "Span names", "Test rule"]:  # fmt: skip
        assert label in content


def test_the_scorer_picker_offers_builtins_and_readable_custom_scorers(org, project, owner, owner_user):
    other = ProjectFactory(organization=org, name="shared")
    for target, name in ((project, "Mine"), (other, "Theirs")):
        response = owner.post("/v1/function", {
            "project_id": str(target.pk), "name": name, "slug": name.lower(), "function_data": {
                "type": "code", "data": {"type": "inline", "runtime_context": {"runtime": "python", "version": "3.11"},
                                         "code": "def handler(output):\n    return 1\n"}}})  # fmt: skip
        assert response.status_code == 200, response.content
    content = browser(owner_user).get(page_url(project, "online-scoring")).content.decode()
    for text in ["Autoevals", "Autoevals (LLM)", "Levenshtein", "Factuality", "Project demo", "Mine",
                 "Project shared", "Theirs"]:  # fmt: skip
        assert text in content


def test_the_api_accepts_a_signed_in_browser_with_its_csrf_token(project, owner_user):
    client = browser(owner_user, enforce_csrf=True)
    page = client.get(page_url(project, "online-scoring")).content.decode()
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    body = json.dumps(rule_body(project, name="from the page"))
    headers = {"HTTP_X_ORGANIZATION": str(project.organization_id), "HTTP_ACCEPT": "application/json"}
    refused = client.post("/v1/project_score", body, content_type="application/json", **headers)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    created = client.post(
        "/v1/project_score", body, content_type="application/json", HTTP_X_CSRFTOKEN=token, **headers
    )
    assert created.status_code == 200, created.content
    assert Rule.objects.get(name="from the page").run_as_user == owner_user


def test_a_browser_in_several_organizations_must_name_one(project, owner_user):
    Membership.objects.create(organization=OrganizationFactory(name="second"), user=owner_user)
    client = browser(owner_user)
    ambiguous = client.get(
        "/v1/project_score", {"project_id": str(project.pk)}, HTTP_ACCEPT="application/json"
    )
    assert ambiguous.status_code == 401 and "X-Organization" in ambiguous.json()["error"]["message"]
    named = client.get(
        "/v1/project_score",
        {"project_id": str(project.pk)},
        HTTP_X_ORGANIZATION=str(project.organization_id),
        HTTP_ACCEPT="application/json",
    )
    assert named.status_code == 200


def test_a_browser_cannot_act_in_an_organization_it_is_not_in(project):
    stranger = member(OrganizationFactory(name="other"), role=Membership.Role.OWNER)
    response = browser(stranger).get(
        "/v1/project_score", HTTP_X_ORGANIZATION=str(project.organization_id), HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 401


def test_staff_see_the_admin_and_the_queues_dashboard_links(project, owner_user):
    assert b"/admin/django_rq/" not in browser(owner_user).get("/").content
    owner_user.is_staff = True
    owner_user.save()
    content = browser(owner_user).get("/").content
    assert b'href="/admin/"' in content and b"/admin/django_rq/" in content


def test_the_trace_page_lists_the_manual_runs_of_a_span_by_scorer(project, owner, owner_user, run_inline):
    log(owner, project, {"id": "root", "span_id": "r", "root_span_id": "r", "span_attributes": {"name": "chat"},
                         "output": "a", "expected": "a", "metrics": {"start": 1, "end": 2}})  # fmt: skip
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = owner.post(
            f"/v1/project_logs/{project.pk}/score",
            {"scorers": [{"type": "global", "name": "Levenshtein"}], "ids": ["root"]},
        )
    assert response.status_code == 202, response.content
    content = browser(owner_user).get(f"/projects/{project.pk}/logs/root/").content.decode()
    manual = content[content.index("Manual runs") :]
    assert "<td>Levenshtein</td><td>done</td>" in manual and "Levenshtein 100%" in manual


def test_the_logs_page_pages_through_traces_newest_first(project, owner, owner_user):
    log(owner, project, *({"id": f"t{i:02}", "input": f"question {i:02}"} for i in range(51)))
    client = browser(owner_user)
    first = client.get(page_url(project, "logs")).content.decode()
    assert first.count("data-row ") == 50
    next_link = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = client.get(page_url(project, "logs") + next_link).content.decode()
    assert second.count("data-row ") == 1 and "question 00" in second  # the oldest, last
    assert "First page" in second and 'rel="next"' not in second


def test_a_user_in_two_organizations_moves_between_their_projects(project, owner_user):
    second = OrganizationFactory(name="beta")
    elsewhere = ProjectFactory(organization=second, name="elsewhere")
    Membership.objects.create(organization=second, user=owner_user, role=Membership.Role.OWNER)
    client = browser(owner_user)
    page = client.get(page_url(project, "logs")).content.decode()
    switcher = page[page.index('class="switcher"') : page.index("</details>")]
    assert "acme" in switcher and "beta" in switcher
    assert f"/projects/{elsewhere.pk}/" in switcher and f"/projects/{project.pk}/" in switcher
    other = client.get(page_url(elsewhere, "logs")).content.decode()
    assert f'data-organization="{second.pk}"' in other  # the page's API calls act in beta


def test_the_monitor_page_of_a_project_without_rules_or_runs_says_how_to_start(project, owner_user):
    html = browser(owner_user).get(page_url(project, "monitor")).content.decode()
    assert "Nothing to chart yet" in html and "<svg " not in html


def test_the_monitor_page_counts_each_rules_failed_runs(project, owner, owner_user, run_inline):
    owner.post("/v1/project_score", rule_body(project, name="needs expected", scorers=[LEVENSHTEIN]))
    log(owner, project, {"id": "a", "output": "x", "metrics": {"start": 1, "end": 2}})
    html = browser(owner_user).get(page_url(project, "monitor")).content.decode()
    assert (
        html.count('1 run finished in this period, <span class="error">1 with errors</span>') == 2
    )  # all, rule
    rule = Rule.objects.get(name="needs expected")
    assert f'<a href="/projects/{project.pk}/online-scoring/{rule.pk}/errors/">see them</a>' in html


def test_a_rules_error_count_opens_its_failed_runs(project, owner, owner_user, run_inline):
    """The count on the rules page links to the rule's failed runs: the span (a link to its
    trace), the scorer and the message, newest first; successful runs and other rules' are not
    listed."""
    owner.post("/v1/project_score", rule_body(project, name="needs expected", scorers=[EXACT, LEVENSHTEIN]))
    owner.post("/v1/project_score", rule_body(project, name="other", scorers=[LEVENSHTEIN]))
    rule = Rule.objects.get(name="needs expected")
    log(owner, project,
        {"id": "first", "span_attributes": {"name": "no expected"}, "output": "a", "metrics": {"start": 1, "end": 2}},
        {"id": "fine", "span_attributes": {"name": "all good"}, "output": "a", "expected": "a",
         "metrics": {"start": 1, "end": 2}})  # fmt: skip
    log(owner, project,
        {"id": "second", "span_attributes": {"name": "later"}, "output": "b", "metrics": {"start": 1, "end": 2}})  # fmt: skip
    errors_url = f"/projects/{project.pk}/online-scoring/{rule.pk}/errors/"
    rules_page = browser(owner_user).get(page_url(project, "online-scoring")).content.decode()
    assert f'<a href="{errors_url}" title="See the errors">2</a>' in rules_page

    html = browser(owner_user).get(errors_url).content.decode()
    rows = html.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    assert len(rows) == 2  # Levenshtein failed on both spans; ExactMatch scored them
    assert f'href="/projects/{project.pk}/logs/second/"' in rows[0] and ">later</a>" in rows[0]
    assert f'href="/projects/{project.pk}/logs/first/"' in rows[1] and ">no expected</a>" in rows[1]
    for row in rows:
        assert ">Levenshtein</span>" in row and "requires an expected value" in row
    assert "2 spans with a failed run" in html


def test_the_errors_page_of_a_rule_without_failures_says_so(project, owner, owner_user):
    owner.post("/v1/project_score", rule_body(project, name="fine"))
    rule = Rule.objects.get(name="fine")
    html = (
        browser(owner_user).get(f"/projects/{project.pk}/online-scoring/{rule.pk}/errors/").content.decode()
    )
    assert "No run of this rule has failed." in html and "0 spans with a failed run" in html


def test_the_errors_page_of_another_projects_rule_is_not_found(org, project, owner, owner_user):
    other = ProjectFactory(organization=org, name="other")
    owner.post("/v1/project_score", rule_body(other, name="elsewhere"))
    rule = Rule.objects.get(name="elsewhere")
    assert (
        browser(owner_user).get(f"/projects/{project.pk}/online-scoring/{rule.pk}/errors/").status_code == 404
    )
    assert (
        browser(owner_user).get(f"/projects/{other.pk}/online-scoring/{rule.pk}/errors/").status_code == 200
    )


def test_the_errors_page_needs_read_on_the_logs(org, project, owner):
    owner.post("/v1/project_score", rule_body(project, name="r"))
    rule = Rule.objects.get(name="r")
    user = member(org, grants=[(project, "project", "read")])
    assert browser(user).get(f"/projects/{project.pk}/online-scoring/{rule.pk}/errors/").status_code == 403


def test_the_sdks_permalink_of_a_span_opens_it_in_its_trace(project, owner, owner_user):
    """span.permalink() in the SDK: /app/<organization>/object?object_type=project_logs&..."""
    log(owner, project, {"id": "a", "span_attributes": {"name": "answer"}, "metrics": {"start": 1, "end": 2}})
    link = f"/app/acme/object?object_type=project_logs&object_id={project.pk}&id=a"
    assert browser().get(link)["Location"].startswith("/accounts/login/?next=")
    response = browser(owner_user).get(link, follow=True)
    assert response.redirect_chain == [(f"/projects/{project.pk}/logs/a/", 302)]
    assert response.status_code == 200 and b"answer" in response.content
    for wrong in ("object_type=experiment", "object_id=nope&id=a&object_type=project_logs"):
        assert browser(owner_user).get(f"/app/acme/object?{wrong}").status_code == 404
    stranger = member(OrganizationFactory(name="other"), role=Membership.Role.OWNER)
    assert browser(stranger).get(link, follow=True).status_code == 404
