"""GET /v1/project_logs/{id}/scoring_state: why a span has, or has no, score."""

import json

import pytest
from django.test import TestCase

from projects.models import Membership
from scoring.scorers import sandbox
from scoring.services import runs_execute
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory
from tests.scoring.conftest import log, rule_body

pytestmark = pytest.mark.django_db

EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}


def hint(project):
    return f"Score it by hand: the Score button of its trace, or POST /v1/project_logs/{project.pk}/score."


def ended(row_id, **fields):
    return {
        "id": row_id,
        "input": "q",
        "output": "a",
        "expected": "a",
        "span_attributes": {"name": "task"},
        "metadata": {"model": "claude"},
        "metrics": {"start": 1, "end": 2},
        **fields,
    }


def make_rule(api, project, name, **online):
    response = api.post("/v1/project_score", rule_body(project, name=name, **online))
    assert response.status_code == 200, response.content
    return response.json()


def state(api, project, row_id):
    response = api.get(f"/v1/project_logs/{project.pk}/scoring_state", id=row_id)
    assert response.status_code == 200, response.content
    return response.json()


def by_rule(body):
    return {r["rule_name"]: r for r in body["rules"]}


def decisions(body):
    return {r["rule_name"]: r["decision"] for r in body["rules"]}


def test_each_rule_explains_its_decision_about_a_span(owner, project, queued):
    make_rule(owner, project, "filtered", btql_filter="metadata.model = 'gpt-4'")
    make_rule(owner, project, "llm only", apply_to_span_names=["llm"])
    make_rule(owner, project, "never sampled", sampling_rate=0)
    scoring = make_rule(owner, project, "scoring", scorers=[EXACT, LEVENSHTEIN])
    log(owner, project, ended("a"))

    body = state(owner, project, "a")
    assert body["id"] == "a" and body["span_id"] == "a" and body["ended_at"] and body["manual_runs"] == []
    rules = by_rule(body)
    assert [r["rule_name"] for r in body["rules"]] == ["filtered", "llm only", "never sampled", "scoring"]
    assert decisions(body) == {
        "filtered": "filtered_out",
        "llm only": "not_selected",
        "never sampled": "not_sampled",
        "scoring": "queued",
    }
    assert "filter" in rules["filtered"]["message"]
    assert "span names" in rules["llm only"]["message"]
    assert "sampling" in rules["never sampled"]["message"]
    assert rules["scoring"]["message"] == "The span is queued for scoring."
    assert all(r["runs"] == [] for name, r in rules.items() if name != "scoring")
    runs = rules["scoring"]["runs"]
    assert [(r["scorer"], r["status"], r["rule_id"]) for r in runs] == [
        (EXACT, "pending", scoring["id"]), (LEVENSHTEIN, "pending", scoring["id"]),
    ]  # fmt: skip
    assert [r["id"] for r in runs] == queued
    assert rules["scoring"]["rule_id"] == scoring["id"] and rules["scoring"]["enabled"] is True


def test_a_queued_span_is_scored_once_its_runs_are_done(owner, project, queued):
    make_rule(owner, project, "scoring", scorers=[EXACT, LEVENSHTEIN])
    log(owner, project, ended("a"))
    runs_execute(run_ids=queued[:1])
    assert decisions(state(owner, project, "a")) == {"scoring": "queued"}

    runs_execute(run_ids=queued)
    rule = state(owner, project, "a")["rules"][0]
    assert rule["decision"] == "scored" and rule["message"] == "Every scorer of the rule scored the span."
    assert [(r["status"], r["scores"]) for r in rule["runs"]] == [
        ("done", {"ExactMatch": 1}), ("done", {"Levenshtein": 1}),
    ]  # fmt: skip
    assert all(r["scoring_span_id"] and r["finished"] for r in rule["runs"])


def test_a_failed_scorer_is_an_error_with_its_message(owner, project, run_inline):
    make_rule(owner, project, "scoring", scorers=[EXACT, LEVENSHTEIN])
    log(owner, project, ended("a", expected=None))
    rule = state(owner, project, "a")["rules"][0]
    assert rule["decision"] == "error"
    assert rule["message"] == "Levenshtein: ValueError: LevenshteinScorer requires an expected value"
    assert [(r["scorer"]["name"], r["status"]) for r in rule["runs"]] == [
        ("ExactMatch", "done"),
        ("Levenshtein", "error"),
    ]
    assert rule["runs"][1]["error"] == "ValueError: LevenshteinScorer requires an expected value"


def test_a_failed_custom_scorer_is_named_by_its_name_not_its_id(owner, project, run_inline):
    code = "def handler(input, output, expected, metadata):\n    return expected['missing']\n"
    response = owner.post(
        "/v1/function",
        {
            "project_id": str(project.pk), "name": "Has sources", "slug": "has-sources", "function_type": "scorer",
            "function_data": {"type": "code", "data": {
                "type": "inline", "runtime_context": {"runtime": "python", "version": "3.11"}, "code": code}},
        },
    )  # fmt: skip
    assert response.status_code == 200, response.content
    make_rule(owner, project, "sources", scorers=[{"type": "function", "id": response.json()["id"]}])
    log(owner, project, ended("a"))
    try:
        rule = state(owner, project, "a")["rules"][0]
    finally:
        sandbox.pool.close()
    assert rule["decision"] == "error"
    assert rule["message"].startswith("Has sources: TypeError: string indices must be integers"), rule[
        "message"
    ]


def test_a_rule_created_after_the_span_ended_did_not_evaluate_it(owner, project, queued):
    log(owner, project, ended("before any rule"))
    make_rule(owner, project, "first")
    log(owner, project, ended("b"))
    make_rule(owner, project, "second")

    for row_id, expected in [("before any rule", {"first", "second"}), ("b", {"second"})]:
        rules = by_rule(state(owner, project, row_id))
        late = {name for name, r in rules.items() if r["decision"] == "not_evaluated"}
        assert late == expected
        for name in late:
            assert rules[name]["message"] == "The rule was created after the span ended. " + hint(project)
    assert by_rule(state(owner, project, "b"))["first"]["decision"] == "queued"


def test_a_rule_disabled_when_the_span_ended_did_not_evaluate_it(owner, project, queued):
    rule = make_rule(owner, project, "paused", enabled=False)
    log(owner, project, ended("a"))
    owner.client.generic(
        "PATCH", f"/v1/project_score/{rule['id']}", json.dumps({"config": {"online": {"enabled": True}}})
    )
    (explained,) = state(owner, project, "a")["rules"]
    assert explained["enabled"] is True and explained["decision"] == "not_evaluated"
    assert explained["message"] == "The rule was not enabled when the span ended. " + hint(project)
    assert explained["runs"] == [] and queued == []


def test_a_rule_disabled_after_the_span_ended_keeps_its_decision(owner, project, queued):
    rule = make_rule(owner, project, "scoring")
    log(owner, project, ended("a"))
    owner.client.generic(
        "PATCH", f"/v1/project_score/{rule['id']}", json.dumps({"config": {"online": {"enabled": False}}})
    )
    (explained,) = state(owner, project, "a")["rules"]
    assert (explained["enabled"], explained["decision"]) == (False, "queued")


def test_a_span_that_has_not_ended_is_not_evaluated(owner, project, queued):
    make_rule(owner, project, "scoring")
    log(owner, project, {"id": "open", "input": "q", "metrics": {"start": 1}})
    body = state(owner, project, "open")
    assert body["ended_at"] is None
    (rule,) = body["rules"]
    assert rule["decision"] == "not_evaluated" and "has not ended" in rule["message"]
    assert queued == []


def test_a_scoring_span_is_never_evaluated(owner, project, run_inline):
    make_rule(owner, project, "scoring")
    log(owner, project, ended("a"))
    scoring_span_id = state(owner, project, "a")["rules"][0]["runs"][0]["scoring_span_id"]

    body = state(owner, project, scoring_span_id)
    (rule,) = body["rules"]
    assert (rule["decision"], rule["message"]) == ("not_evaluated", "Scoring spans are never scored.")
    assert rule["runs"] == [] and body["manual_runs"] == []


def test_manual_runs_are_listed(owner, project, queued):
    log(owner, project, ended("a"))
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = owner.post(f"/v1/project_logs/{project.pk}/score", {"scorers": [EXACT], "ids": ["a"]})
    (run,) = response.json()["runs"]

    body = state(owner, project, "a")
    assert body["rules"] == []
    assert [(r["id"], r["status"], r["rule_id"]) for r in body["manual_runs"]] == [
        (run["id"], "pending", None)
    ]
    runs_execute(run_ids=queued)
    (done,) = state(owner, project, "a")["manual_runs"]
    assert (done["status"], done["scores"]) == ("done", {"ExactMatch": 1})


def test_an_unknown_or_deleted_span_is_a_404(owner, project):
    log(owner, project, ended("a"))
    log(owner, project, {"id": "a", "_object_delete": True})
    for row_id in ("a", "missing"):
        response = owner.get(f"/v1/project_logs/{project.pk}/scoring_state", id=row_id)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_span_id_is_required(owner, project):
    response = owner.get(f"/v1/project_logs/{project.pk}/scoring_state")
    assert response.status_code == 400 and response.json()["error"]["field"] == "id"


def test_scoring_state_needs_read_on_the_projects_logs(org, owner, project, anonymous):
    log(owner, project, ended("a"))
    path = f"/v1/project_logs/{project.pk}/scoring_state"
    grant = lambda object_type, permission: Api(member_key(org, grants=[(project, object_type, permission)]))
    assert grant("project_logs", "read").get(path, id="a").status_code == 200
    assert grant("project", "read").get(path, id="a").status_code == 403
    assert grant("project_logs", "update").get(path, id="a").status_code == 403
    stranger = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    assert stranger.get(path, id="a").status_code == 404
    assert anonymous.get(path, id="a").status_code == 401
