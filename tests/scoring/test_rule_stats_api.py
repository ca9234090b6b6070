"""GET /v1/project_score/{id}/stats: what a rule matched, sampled, scored and still owes."""

import uuid
from datetime import timedelta

import pytest
from django.test import TestCase
from django.utils import timezone

from projects.models import Membership
from scoring.engine import sampled
from scoring.models import ScoringRun
from scoring.services import runs_execute
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory
from tests.scoring.conftest import log, rule_body

pytestmark = pytest.mark.django_db

EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}


def ended(row_id, keep=True, **fields):
    return {
        "id": row_id,
        "output": "a",
        "expected": "a",
        "metadata": {"keep": keep},
        "metrics": {"end": 2},
        **fields,
    }


def stats(api, rule_id):
    response = api.get(f"/v1/project_score/{rule_id}/stats")
    assert response.status_code == 200, response.content
    return response.json()


def run_ids(rule_id, row_id, *scorer_names):
    runs = ScoringRun.objects.filter(rule_id=rule_id, span__row_id=row_id)
    return [run.pk for run in runs if run.scorer["name"] in scorer_names]


def ids_drawn(rule_id, rate, *, want, count):
    """Row ids the rule's sampling draws (want=True) or passes over (want=False)."""
    candidates = (f"{'in' if want else 'out'}-{i}" for i in range(1000))
    return [c for c in candidates if sampled(uuid.UUID(rule_id), c, rate) == want][:count]


def test_stats_count_what_the_rule_did(owner, project, queued):
    rule = owner.post(
        "/v1/project_score",
        rule_body(
            project,
            name="half",
            sampling_rate=0.5,
            btql_filter="metadata.keep = true",
            scorers=[EXACT, LEVENSHTEIN],
        ),
    ).json()
    # Another rule on the same spans: its decisions and runs must not count.
    other = owner.post("/v1/project_score", rule_body(project, name="other")).json()
    done, failed, pending, partial = ids_drawn(rule["id"], 0.5, want=True, count=4)
    passed_over = ids_drawn(rule["id"], 0.5, want=False, count=2)
    log(
        owner,
        project,
        ended("filtered", keep=False),
        *(ended(row_id) for row_id in passed_over),
        ended(done),
        ended(failed, expected=None),
        ended(pending),
        ended(partial),
        {"id": "open", "metadata": {"keep": True}},
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        manual = owner.post(
            f"/v1/project_logs/{project.pk}/score", {"scorers": [LEVENSHTEIN], "ids": [pending]}
        )
    assert manual.status_code == 202
    assert len(queued) == 4 * 2 + 7 + 1

    runs_execute(run_ids=run_ids(rule["id"], done, "ExactMatch", "Levenshtein"))
    runs_execute(run_ids=run_ids(rule["id"], failed, "ExactMatch", "Levenshtein"))
    runs_execute(run_ids=run_ids(rule["id"], partial, "ExactMatch"))
    oldest = run_ids(rule["id"], pending, "ExactMatch")
    ScoringRun.objects.filter(pk__in=oldest).update(created=timezone.now() - timedelta(seconds=300))

    got = stats(owner, rule["id"])
    lag = got.pop("queue_lag_seconds")
    assert got == {"matched": 6, "sampled": 4, "scored": 1, "errored": 1, "pending_runs": 3}
    assert 300 <= lag < 360

    # The other rule saw the 7 ended spans (scoring spans and open spans aside) and scored none.
    other_stats = stats(owner, other["id"])
    assert other_stats["matched"] == other_stats["sampled"] == 7 and other_stats["pending_runs"] == 7
    assert other_stats["scored"] == other_stats["errored"] == 0

    ScoringRun.objects.filter(rule_id=rule["id"], status="pending").update(created=timezone.now())
    runs_execute(run_ids=queued)
    got = stats(owner, rule["id"])
    assert got == {
        "matched": 6,
        "sampled": 4,
        "scored": 3,
        "errored": 1,
        "pending_runs": 0,
        "queue_lag_seconds": 0.0,
    }


def test_a_new_rule_has_empty_stats(owner, project):
    rule = owner.post("/v1/project_score", rule_body(project)).json()
    assert stats(owner, rule["id"]) == {
        "matched": 0, "sampled": 0, "scored": 0, "errored": 0, "pending_runs": 0, "queue_lag_seconds": 0.0,
    }  # fmt: skip


def test_spans_the_rule_did_not_sample_are_matched_but_not_sampled(owner, project, queued):
    rule = owner.post(
        "/v1/project_score", rule_body(project, sampling_rate=0, apply_to_root_span=True)
    ).json()
    log(owner, project, ended("root"), ended("child", span_parents=["root"], root_span_id="root"))
    assert stats(owner, rule["id"]) == {
        "matched": 1, "sampled": 0, "scored": 0, "errored": 0, "pending_runs": 0, "queue_lag_seconds": 0.0,
    }  # fmt: skip
    assert queued == []


def test_stats_need_read_on_the_project(org, owner, project, anonymous):
    rule = owner.post("/v1/project_score", rule_body(project)).json()
    path = f"/v1/project_score/{rule['id']}/stats"
    grant = lambda object_type, permission: Api(member_key(org, grants=[(project, object_type, permission)]))
    assert grant("project", "read").get(path).status_code == 200
    assert grant("project_logs", "read").get(path).status_code == 403
    stranger = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    assert stranger.get(path).status_code == 404
    assert anonymous.get(path).status_code == 401
    assert owner.get(f"/v1/project_score/{uuid.uuid4()}/stats").status_code == 404


def test_stats_count_the_spans_decided_under_every_list_of_rules_the_rule_was_in(owner, project, queued):
    rule = owner.post(
        "/v1/project_score", rule_body(project, name="b", btql_filter="metadata.keep = true")
    ).json()
    log(owner, project, ended("1"), ended("2", keep=False))
    # A rule that sorts first: the rule's place in the decisions of later spans moves.
    other = owner.post(
        "/v1/project_score", rule_body(project, name="a", btql_filter="metadata.keep = false")
    ).json()
    log(owner, project, ended("3"), ended("4", keep=False), ended("5"))

    assert (stats(owner, rule["id"])["matched"], stats(owner, rule["id"])["sampled"]) == (3, 3)
    assert (stats(owner, other["id"])["matched"], stats(owner, other["id"])["sampled"]) == (1, 1)
