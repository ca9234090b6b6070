"""Manual scoring: POST /v1/project_logs/{id}/score, and following the runs with GET /v1/scoring_runs."""

import pytest
from django.conf import settings
from django.test import TestCase

from projects.models import Membership
from scoring.models import ScoringRun
from scoring.services import runs_execute
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory, ProjectFactory
from tests.scoring.conftest import log

pytestmark = pytest.mark.django_db

EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}


def ended(row_id, **fields):
    """An ended root span row (unless `fields` say otherwise)."""
    return {
        "id": row_id,
        "input": "2+2?",
        "output": "4",
        "expected": "4",
        "metrics": {"start": 1, "end": 2},
        **fields,
    }


def score(api, project, body):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return api.post(f"/v1/project_logs/{project.pk}/score", body)


def events(api, project):
    response = api.get(f"/v1/project_logs/{project.pk}/fetch", limit=1000)
    assert response.status_code == 200
    return {e["id"]: e for e in response.json()["events"]}


def scoring_spans(api, project):
    return [
        e for e in events(api, project).values() if (e["span_attributes"] or {}).get("purpose") == "scorer"
    ]


def runs(api, *ids):
    return api.get("/v1/scoring_runs", ids=",".join(map(str, ids)))


# --- By id --------------------------------------------------------------------------------


def test_scoring_logs_by_id_answers_202_with_pending_runs(owner, project, queued):
    log(owner, project, ended("a"), ended("b"))
    response = score(owner, project, {"scorers": [EXACT, LEVENSHTEIN], "ids": ["a", "b"]})

    assert response.status_code == 202, response.content
    body = response.json()["runs"]
    assert [(r["row_id"], r["scorer"]) for r in body] == [
        ("a", EXACT),
        ("a", LEVENSHTEIN),
        ("b", EXACT),
        ("b", LEVENSHTEIN),
    ]
    assert {r["status"] for r in body} == {"pending"}
    assert all(r["rule_id"] is None and r["project_id"] == str(project.pk) for r in body)
    assert all(r["scores"] is None and r["scoring_span_id"] is None and r["finished"] is None for r in body)
    assert queued == [r["id"] for r in body]


def test_an_unknown_id_is_a_400_naming_it_and_creates_nothing(owner, project, queued):
    log(owner, project, ended("a"), ended("b"))
    response = score(owner, project, {"scorers": [EXACT], "ids": ["a", "b", "missing"]})
    error = response.json()["error"]
    assert response.status_code == 400 and error["field"] == "ids[2]" and "missing" in error["message"]
    assert not ScoringRun.objects.exists() and queued == []


def test_a_blank_id_is_a_400_naming_its_index(owner, project, queued):
    # The same field as for an unknown id (`ids[1]`), not `ids.1`.
    log(owner, project, ended("a"))
    response = score(owner, project, {"scorers": [EXACT], "ids": ["a", ""]})
    assert response.status_code == 400 and response.json()["error"]["field"] == "ids[1]", response.content
    assert not ScoringRun.objects.exists()


def test_a_log_of_another_project_is_an_unknown_id(owner, project, queued):
    other = ProjectFactory(organization=project.organization)
    log(owner, other, ended("elsewhere"))
    response = score(owner, project, {"scorers": [EXACT], "ids": ["elsewhere"]})
    assert response.status_code == 400 and response.json()["error"]["field"] == "ids[0]"
    assert not ScoringRun.objects.exists()


def test_a_deleted_log_is_an_unknown_id(owner, project, queued):
    log(owner, project, ended("a"))
    log(owner, project, {"id": "a", "_object_delete": True})
    response = score(owner, project, {"scorers": [EXACT], "ids": ["a"]})
    assert response.status_code == 400 and response.json()["error"]["field"] == "ids[0]"


def test_a_scoring_span_is_a_400_as_scores_are_never_scored(owner, project, queued):
    log(
        owner,
        project,
        ended("a"),
        ended("score-of-a", span_attributes={"name": "ExactMatch", "purpose": "scorer"}),
    )
    response = score(owner, project, {"scorers": [EXACT], "ids": ["a", "score-of-a"]})
    error = response.json()["error"]
    assert (
        response.status_code == 400 and error["field"] == "ids[1]" and "is a scoring span" in error["message"]
    )
    assert not ScoringRun.objects.exists() and queued == []


def test_an_id_given_twice_is_scored_once(owner, project, queued):
    log(owner, project, ended("a"))
    body = score(owner, project, {"scorers": [EXACT], "ids": ["a", "a"]}).json()
    assert [r["row_id"] for r in body["runs"]] == ["a"]


# --- By filter ("Score past logs") --------------------------------------------------------


def dated(row_id, minute, **fields):
    return ended(row_id, created=f"2026-11-20T10:{minute:02d}:00+00:00", **fields)


@pytest.fixture
def past_logs(owner, project):
    """55 matching root spans, a non-matching root span and a matching child span that are newer."""
    rows = [dated(f"m{i:02d}", i, metadata={"env": "prod"}) for i in range(55)]
    rows.append(dated("newest-other", 58, metadata={"env": "dev"}))
    rows.append(dated("newest-child", 59, metadata={"env": "prod"}, span_parents=["m54"], root_span_id="m54"))
    log(owner, project, *rows)
    return project


def test_a_filter_scores_the_50_most_recent_matching_root_spans(owner, past_logs, queued):
    response = score(owner, past_logs, {"scorers": [EXACT], "filter": "metadata.env = 'prod'"})
    assert response.status_code == 202, response.content
    scored = [r["row_id"] for r in response.json()["runs"]]
    assert settings.SCORING_PAST_LOGS_DEFAULT == 50
    assert scored == [f"m{i:02d}" for i in range(54, 4, -1)]
    assert len(queued) == 50


def test_limit_takes_that_many_most_recent_matching_root_spans(owner, past_logs, queued):
    body = score(
        owner, past_logs, {"scorers": [EXACT, LEVENSHTEIN], "filter": "metadata.env = 'prod'", "limit": 2}
    )
    assert [(r["row_id"], r["scorer"]["name"]) for r in body.json()["runs"]] == [
        ("m54", "ExactMatch"), ("m54", "Levenshtein"), ("m53", "ExactMatch"), ("m53", "Levenshtein"),
    ]  # fmt: skip


def test_an_empty_filter_takes_every_root_span(owner, past_logs, queued):
    body = score(owner, past_logs, {"scorers": [EXACT], "filter": "", "limit": 2}).json()
    assert [r["row_id"] for r in body["runs"]] == ["newest-other", "m54"]


def test_a_limit_above_the_maximum_is_a_400(owner, past_logs, queued):
    limit = settings.SCORING_PAST_LOGS_MAX + 1
    response = score(owner, past_logs, {"scorers": [EXACT], "filter": "", "limit": limit})
    assert response.status_code == 400 and response.json()["error"]["field"] == "limit"
    assert not ScoringRun.objects.exists()


def test_an_invalid_filter_is_a_400_with_its_position(owner, past_logs, queued):
    response = score(owner, past_logs, {"scorers": [EXACT], "filter": "metadata.env = = 'prod'"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "btql_error"
    assert (error["line"], error["column"], error["field"]) == (1, 16, "filter")
    assert not ScoringRun.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scorers": [EXACT]}, "ids"),
        ({"scorers": [EXACT], "ids": ["a"], "filter": ""}, "ids"),
        ({"scorers": [EXACT], "ids": []}, "ids"),
        ({"ids": ["a"]}, "scorers"),
        ({"scorers": [], "ids": ["a"]}, "scorers"),
        ({"scorers": [{"type": "global", "name": "Nope"}], "ids": ["a"]}, "scorers[0]"),
        ({"scorers": [EXACT], "ids": ["a"], "bogus": 1}, "bogus"),
        ({"scorers": [EXACT], "filter": "", "limit": 0}, "limit"),
        ({"scorers": [EXACT], "ids": ["a"], "limit": 5}, "limit"),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field(owner, project, queued, body, field):
    log(owner, project, ended("a"))
    response = score(owner, project, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert not ScoringRun.objects.exists()


# --- Running -----------------------------------------------------------------------------


def test_a_run_merges_its_score_into_the_span_and_adds_a_scoring_span(owner, project, run_inline):
    log(
        owner,
        project,
        ended("root", span_id="s-root", root_span_id="s-root"),
        ended("child", span_id="s-child", root_span_id="s-root", span_parents=["s-root"], output="5",
              metadata={"model": "m"}),
    )  # fmt: skip
    response = score(owner, project, {"scorers": [EXACT], "ids": ["child"]})
    (run,) = response.json()["runs"]

    (done,) = runs(owner, run["id"]).json()["objects"]
    assert done["status"] == "done" and done["scores"] == {"ExactMatch": 0} and done["attempts"] == 1
    logged = events(owner, project)
    assert logged["child"]["scores"] == {"ExactMatch": 0}
    assert logged["root"]["scores"] is None
    (scoring,) = scoring_spans(owner, project)
    assert scoring["id"] == done["scoring_span_id"]
    assert scoring["span_parents"] == ["s-child"] and scoring["root_span_id"] == "s-root"
    assert scoring["span_attributes"] == {"name": "ExactMatch", "type": "score", "purpose": "scorer"}
    assert scoring["input"] == {"input": "2+2?", "output": "5", "expected": "4", "metadata": {"model": "m"}}
    assert scoring["output"] == {"score": 0} and scoring["error"] is None
    assert 0 < scoring["metrics"]["start"] <= scoring["metrics"]["end"]


def test_each_run_gets_its_own_scoring_span(owner, project, run_inline):
    log(owner, project, ended("a"), ended("b", output="four"))
    body = score(owner, project, {"scorers": [EXACT, LEVENSHTEIN], "ids": ["a", "b"]}).json()

    spans = scoring_spans(owner, project)
    assert len(spans) == 4
    assert {s["id"] for s in spans} == {
        r["scoring_span_id"] for r in runs(owner, *run_inline).json()["objects"]
    }
    assert {(s["span_parents"][0], s["span_attributes"]["name"]) for s in spans} == {
        ("a", "ExactMatch"), ("a", "Levenshtein"), ("b", "ExactMatch"), ("b", "Levenshtein"),
    }  # fmt: skip
    logged = events(owner, project)
    assert logged["a"]["scores"] == {"ExactMatch": 1, "Levenshtein": 1}
    assert logged["b"]["scores"]["ExactMatch"] == 0 and 0 <= logged["b"]["scores"]["Levenshtein"] < 1
    assert len(body["runs"]) == 4


def test_scoring_a_span_again_adds_a_scoring_span_and_updates_the_score(owner, project, run_inline):
    log(owner, project, ended("a", output="5"))
    first = score(owner, project, {"scorers": [EXACT], "ids": ["a"]}).json()["runs"][0]
    assert events(owner, project)["a"]["scores"] == {"ExactMatch": 0}

    log(owner, project, {"id": "a", "_is_merge": True, "output": "4"})
    second = score(owner, project, {"scorers": [EXACT], "ids": ["a"]}).json()["runs"][0]

    assert second["id"] != first["id"]
    assert events(owner, project)["a"]["scores"] == {"ExactMatch": 1}
    spans = sorted(scoring_spans(owner, project), key=lambda s: s["output"]["score"])
    assert [s["output"] for s in spans] == [{"score": 0}, {"score": 1}]
    assert [s["id"] for s in spans] == [
        r["scoring_span_id"] for r in runs(owner, first["id"], second["id"]).json()["objects"]
    ]


def test_a_scorer_that_fails_records_the_error_and_leaves_the_score_alone(owner, project, run_inline):
    log(owner, project, ended("a", expected=None, scores={"human": 1}))
    (run,) = score(owner, project, {"scorers": [LEVENSHTEIN], "ids": ["a"]}).json()["runs"]

    (failed,) = runs(owner, run["id"]).json()["objects"]
    assert failed["status"] == "error" and failed["scores"] is None
    assert "requires an expected value" in failed["error"]
    assert events(owner, project)["a"]["scores"] == {"human": 1}
    (scoring,) = scoring_spans(owner, project)
    assert scoring["id"] == failed["scoring_span_id"] and scoring["error"] == failed["error"]
    assert scoring["output"] is None and scoring["scores"] is None


# --- GET /v1/scoring_runs ----------------------------------------------------------------


def test_scoring_runs_show_progress_from_pending_to_done(owner, project, queued):
    log(owner, project, ended("a"), ended("b"))
    created = score(owner, project, {"scorers": [EXACT], "ids": ["a", "b"]}).json()["runs"]
    ids = [r["id"] for r in created]

    before = runs(owner, *reversed(ids))
    assert before.status_code == 200
    assert [(r["id"], r["status"]) for r in before.json()["objects"]] == [
        (ids[1], "pending"),
        (ids[0], "pending"),
    ]

    runs_execute(run_ids=queued)
    after = runs(owner, *ids).json()["objects"]
    assert [(r["row_id"], r["status"], r["scores"]) for r in after] == [
        ("a", "done", {"ExactMatch": 1}), ("b", "done", {"ExactMatch": 1}),
    ]  # fmt: skip
    assert all(r["finished"] and r["scoring_span_id"] and r["error"] is None for r in after)


def test_unknown_and_other_organizations_runs_are_404(owner, project, queued):
    log(owner, project, ended("a"))
    (mine,) = score(owner, project, {"scorers": [EXACT], "ids": ["a"]}).json()["runs"]
    elsewhere = OrganizationFactory()
    stranger = Api(member_key(elsewhere, role=Membership.Role.OWNER))
    theirs = ProjectFactory(organization=elsewhere)
    log(stranger, theirs, ended("x"))
    (other,) = score(stranger, theirs, {"scorers": [EXACT], "ids": ["x"]}).json()["runs"]

    unknown = runs(owner, mine["id"], other["id"] + 1000)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert runs(owner, mine["id"], other["id"]).status_code == 404
    assert runs(stranger, mine["id"]).status_code == 404
    assert runs(stranger, other["id"]).status_code == 200


@pytest.mark.parametrize("ids", ["1,x", "", ",", "-", "1.5", "1_0", "+1", "\u0663"])
def test_bad_run_ids_are_a_400(owner, ids):
    response = owner.get("/v1/scoring_runs", ids=ids)
    assert response.status_code == 400 and response.json()["error"]["field"] == "ids"


def test_scoring_runs_need_ids(owner):
    response = owner.get("/v1/scoring_runs")
    assert response.status_code == 400 and response.json()["error"]["field"] == "ids"


# --- Permissions -------------------------------------------------------------------------


def member(org, project, *grants):
    return Api(
        member_key(org, grants=[(project, object_type, permission) for object_type, permission in grants])
    )


def test_scoring_logs_needs_update_on_the_projects_logs(org, owner, project, anonymous, queued):
    log(owner, project, ended("a"))
    body = {"scorers": [EXACT], "ids": ["a"]}
    assert score(anonymous, project, body).status_code == 401
    assert score(member(org, project), project, body).status_code == 403
    assert score(member(org, project, ("project_logs", "read")), project, body).status_code == 403
    assert score(member(org, project, ("project", "update")), project, body).status_code == 403
    stranger = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    assert score(stranger, project, body).status_code == 404
    assert not ScoringRun.objects.exists()

    writer = member(org, project, ("project_logs", "update"), ("project_logs", "read"))
    assert score(writer, project, body).status_code == 202
    assert ScoringRun.objects.count() == 1


def test_reading_scoring_runs_needs_read_on_the_projects_logs(org, owner, project, queued):
    log(owner, project, ended("a"))
    (run,) = score(owner, project, {"scorers": [EXACT], "ids": ["a"]}).json()["runs"]
    assert runs(member(org, project, ("project_logs", "read")), run["id"]).status_code == 200
    assert runs(member(org, project, ("project", "read")), run["id"]).status_code == 404
    assert runs(member(org, project, ("project_logs", "update")), run["id"]).status_code == 404
    assert runs(Api(None), run["id"]).status_code == 401
