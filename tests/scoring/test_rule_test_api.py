"""Test rule: POST /v1/project_score/test previews a rule on recent ended spans, saving nothing."""

import pytest
from django.test import TestCase

from projects.models import Membership, Span
from scoring.models import Rule, ScoringRun, SpanDecisions
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory
from tests.scoring.conftest import log, rule_body

pytestmark = pytest.mark.django_db

EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}


def span(row_id, *, name, minute, parent=None, **fields):
    """An ended span, logged with a start and an end a minute apart (so they end in order)."""
    row = {
        "id": row_id,
        "span_id": row_id,
        "root_span_id": parent or row_id,
        "span_attributes": {"name": name},
        "input": "q",
        "output": "a",
        "expected": "a",
        "created": f"2026-11-20T10:{minute:02d}:00+00:00",
        "metrics": {"start": minute, "end": minute + 1},
        **fields,
    }
    if parent:
        row["span_parents"] = [parent]
    return row


def preview(api, project, limit=None, **online):
    body = rule_body(project, **online)
    if limit is not None:
        body["limit"] = limit
    with TestCase.captureOnCommitCallbacks(execute=True) as callbacks:
        response = api.post("/v1/project_score/test", body)
    assert not callbacks
    return response


def results(api, project, **kwargs):
    response = preview(api, project, **kwargs)
    assert response.status_code == 200, response.content
    return {r["id"]: r for r in response.json()["results"]}


@pytest.fixture
def trace(owner, project):
    """One trace, each span logged (and so ended) in its own write: a root span "task" on gpt-4,
    an "llm" child on gpt-4 with a wrong answer, and an "llm" child on claude."""
    log(owner, project, span("root", name="task", minute=0, metadata={"model": "gpt-4"}))
    log(
        owner,
        project,
        span("llm-1", name="llm", minute=1, parent="root", metadata={"model": "gpt-4"}, output="b"),
    )
    log(owner, project, span("llm-2", name="llm", minute=2, parent="root", metadata={"model": "claude"}))
    return project


def test_the_preview_runs_the_scorers_on_each_recent_ended_span(owner, trace):
    response = preview(owner, trace, scorers=[EXACT, LEVENSHTEIN])
    assert response.status_code == 200, response.content
    assert response.json()["results"] == [
        {"id": "llm-2", "span_id": "llm-2", "name": "llm", "matched_filter": True, "selected": True, "sampled": True,
         "scores": {"ExactMatch": 1, "Levenshtein": 1}},
        {"id": "llm-1", "span_id": "llm-1", "name": "llm", "matched_filter": True, "selected": True, "sampled": True,
         "scores": {"ExactMatch": 0, "Levenshtein": 0}},
        {"id": "root", "span_id": "root", "name": "task", "matched_filter": True, "selected": True, "sampled": True,
         "scores": {"ExactMatch": 1, "Levenshtein": 1}},
    ]  # fmt: skip


def test_the_preview_shows_the_filter_and_the_selection_at_work(owner, trace):
    got = results(owner, trace, btql_filter="metadata.model = 'gpt-4'", apply_to_span_names=["llm"])
    flags = {row_id: (r["matched_filter"], r["selected"], r["sampled"]) for row_id, r in got.items()}
    assert flags == {
        "root": (True, False, False),
        "llm-1": (True, True, True),
        "llm-2": (False, False, False),
    }
    # Only spans that pass the filter and the selection are scored.
    assert got["llm-1"]["scores"] == {"ExactMatch": 0}
    assert "scores" not in got["root"] and "scores" not in got["llm-2"]
    assert not any("error" in r for r in got.values())


def test_the_root_toggle_or_the_span_names_select(owner, trace):
    roots = results(owner, trace, apply_to_root_span=True)
    assert {k: r["selected"] for k, r in roots.items()} == {"root": True, "llm-1": False, "llm-2": False}
    either = results(owner, trace, apply_to_root_span=True, apply_to_span_names=["llm"])
    assert all(r["selected"] for r in either.values())


def test_a_span_that_is_not_sampled_still_shows_its_scores(owner, trace):
    got = results(owner, trace, sampling_rate=0)
    assert {(r["selected"], r["sampled"]) for r in got.values()} == {(True, False)}
    assert got["root"]["scores"] == {"ExactMatch": 1}


def test_a_scorer_error_appears_on_its_span(owner, project):
    log(owner, project, span("no-expected", name="task", minute=0, expected=None))
    (result,) = preview(owner, project, scorers=[EXACT, LEVENSHTEIN]).json()["results"]
    assert result["scores"] == {"ExactMatch": 0}
    assert result["error"].startswith("Levenshtein: ") and "requires an expected value" in result["error"]


def test_scoring_spans_are_left_out(owner, project, run_inline):
    log(owner, project, span("a", name="task", minute=0))
    with TestCase.captureOnCommitCallbacks(execute=True):
        owner.post(f"/v1/project_logs/{project.pk}/score", {"scorers": [EXACT], "ids": ["a"]})
    assert Span.objects.filter(span_attributes__purpose="scorer").count() == 1
    assert list(results(owner, project)) == ["a"]


def test_spans_that_have_not_ended_are_left_out(owner, project):
    log(owner, project, span("ended", name="task", minute=0))
    log(owner, project, {"id": "open", "input": "q", "output": "a", "metrics": {"start": 5}})
    assert list(results(owner, project)) == ["ended"]


def test_the_limit_takes_the_most_recently_ended_spans(owner, trace):
    assert [r["id"] for r in preview(owner, trace, limit=2).json()["results"]] == ["llm-2", "llm-1"]


def test_the_default_limit_is_20(owner, project):
    log(owner, project, *[span(f"s{i:02d}", name="task", minute=i) for i in range(21)])
    got = preview(owner, project).json()["results"]
    assert len(got) == 20


def test_the_preview_saves_nothing(owner, project):
    log(owner, project, span("a", name="task", minute=0), span("b", name="task", minute=1, expected=None))
    before = (
        Span.objects.count(),
        ScoringRun.objects.count(),
        SpanDecisions.objects.count(),
        Rule.objects.count(),
    )
    xact_ids = dict(Span.objects.values_list("row_id", "xact_id"))
    scores = dict(Span.objects.values_list("row_id", "scores"))

    got = results(owner, project, scorers=[EXACT, LEVENSHTEIN])
    assert got["a"]["scores"] and got["b"]["error"]

    after = (
        Span.objects.count(),
        ScoringRun.objects.count(),
        SpanDecisions.objects.count(),
        Rule.objects.count(),
    )
    assert after == before == (2, 0, 0, 0)
    assert dict(Span.objects.values_list("row_id", "xact_id")) == xact_ids
    assert dict(Span.objects.values_list("row_id", "scores")) == scores


def test_testing_a_rule_with_the_name_of_an_existing_rule_changes_nothing(owner, project, queued):
    rule = owner.post("/v1/project_score", rule_body(project, sampling_rate=0.5)).json()
    log(owner, project, span("a", name="task", minute=0))
    assert results(owner, project, sampling_rate=1, scorers=[LEVENSHTEIN])["a"]["scores"] == {
        "Levenshtein": 1
    }
    assert owner.get(f"/v1/project_score/{rule['id']}").json() == rule
    assert Rule.objects.count() == 1 and SpanDecisions.objects.count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"config": {"online": {"sampling_rate": 1, "scorers": [{"type": "global", "name": "Nope"}]}}},
         "config.online.scorers[0]"),
        ({"config": {"online": {"sampling_rate": 2, "scorers": [EXACT]}}}, "config.online.sampling_rate"),
        ({"config": {"online": {"sampling_rate": 1, "scorers": []}}}, "config.online.scorers"),
        ({"config": {"online": {"sampling_rate": 1, "scorers": [EXACT], "bogus": 1}}}, "config.online.bogus"),
        ({"config": {"online": {"sampling_rate": 1, "scorers": [EXACT], "btql_filter": "input = = 1"}}},
         "config.online.btql_filter"),
        ({"config": None}, "config"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"project_id": "nope"}, "project_id"),
        ({"bogus": 1}, "bogus"),
    ],
)  # fmt: skip
def test_an_invalid_body_is_a_400(owner, project, change, field):
    log(owner, project, span("a", name="task", minute=0))
    response = owner.post("/v1/project_score/test", {**rule_body(project), **change})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field


def test_an_invalid_filter_is_a_400_with_its_position(owner, project):
    error = preview(owner, project, btql_filter="metadata.x = = 1").json()["error"]
    assert error["code"] == "btql_error" and (error["line"], error["column"]) == (1, 14)


def test_the_preview_needs_read_on_the_projects_logs(org, owner, project, anonymous):
    log(owner, project, span("a", name="task", minute=0))
    logs_reader = Api(member_key(org, grants=[(project, "project_logs", "read")]))
    project_reader = Api(member_key(org, grants=[(project, "project", "read")]))
    stranger = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    assert preview(logs_reader, project).status_code == 200
    assert preview(project_reader, project).status_code == 403
    assert preview(stranger, project).status_code == 404
    assert preview(anonymous, project).status_code == 401
