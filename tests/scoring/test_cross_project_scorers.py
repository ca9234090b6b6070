"""Scorers of other projects: a rule, a manual scoring request or a Test rule of project A may
use a function of project B (same organization) only if whoever it runs as can read project B,
checked when it is saved and again when it runs."""

import json

import pytest
from django.test import TestCase

from projects.models import Membership, ProjectGrant, User
from scoring.models import ScoringRun
from scoring.scorers import sandbox
from scoring.services import runs_execute
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory, ProjectFactory
from tests.scoring.conftest import log, rule_body

pytestmark = pytest.mark.django_db

RUNNER = "runner@example.com"
CODE = "def handler(input, output, expected, metadata):\n    return 1 if output == expected else 0.25\n"


@pytest.fixture(autouse=True)
def fresh_sandboxes():
    yield
    sandbox.pool.close()


@pytest.fixture
def library(org):
    """Project B: where the shared scorer lives."""
    return ProjectFactory(organization=org, name="scorer library")


def function_in(api, project, *, name="Shared exact", slug="shared-exact") -> dict:
    response = api.post(
        "/v1/function",
        {
            "project_id": str(project.pk),
            "name": name,
            "slug": slug,
            "function_type": "scorer",
            "function_data": {
                "type": "code",
                "data": {"type": "inline", "runtime_context": {"runtime": "python", "version": "3.11"},
                         "code": CODE},
            },
        },
    )  # fmt: skip
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def shared(owner, library) -> dict:
    return function_in(owner, library)


def ref(function) -> dict:
    return {"type": "function", "id": function["id"]}


def member(org, project, library=None) -> Api:
    """A member who may make rules on `project` and score its logs, and read `library` if given."""
    grants = [(project, "project", p) for p in ("read", "update")]
    grants += [(project, "project_logs", p) for p in ("read", "update")]
    if library is not None:
        grants.append((library, "project", "read"))
    return Api(member_key(org, grants=grants, email=RUNNER))


def revoke_read(library) -> None:
    deleted, _ = ProjectGrant.objects.filter(
        user=User.objects.get(email=RUNNER), project=library, object_type="project", permission="read"
    ).delete()
    assert deleted == 1


def ended(row_id="span-1", output="4") -> dict:
    return {
        "id": row_id,
        "input": "2+2?",
        "output": output,
        "expected": "4",
        "metrics": {"start": 1, "end": 2},
    }


def events(api, project) -> dict:
    response = api.get(f"/v1/project_logs/{project.pk}/fetch", limit=100)
    assert response.status_code == 200, response.content
    return {e["id"]: e for e in response.json()["events"]}


def scoring_spans(api, project) -> list[dict]:
    return [
        e for e in events(api, project).values() if (e["span_attributes"] or {}).get("purpose") == "scorer"
    ]


def assert_unreadable(error, *, field, function) -> None:
    assert error["field"] == field, error
    message = error["message"]
    assert function["name"] in message and "scorer library" in message and RUNNER in message, message
    assert "cannot read" in message


def patch_scorers(api, rule, scorers):
    body = json.dumps({"config": {"online": {"scorers": scorers}}})
    return api.client.generic(
        "PATCH", f"/v1/project_score/{rule['id']}", body, content_type="application/json"
    )


# --- Rules ----------------------------------------------------------------------------------


def test_a_rule_may_use_a_scorer_of_a_project_its_creator_can_read(
    org, owner, project, library, shared, run_inline
):
    runner = member(org, project, library)
    response = runner.post("/v1/project_score", rule_body(project, scorers=[ref(shared)]))
    assert response.status_code == 200, response.content

    log(owner, project, ended(output="5"))

    assert events(owner, project)["span-1"]["scores"] == {"Shared exact": 0.25}
    [child] = scoring_spans(owner, project)
    assert child["error"] is None and child["output"] == {"score": 0.25}


def test_a_rule_using_a_scorer_of_a_project_its_creator_cannot_read_is_a_400_naming_it(
    org, project, library, shared
):
    runner = member(org, project)
    body = rule_body(project, scorers=[{"type": "global", "name": "ExactMatch"}, ref(shared)])

    response = runner.post("/v1/project_score", body)

    assert response.status_code == 400, response.content
    assert_unreadable(response.json()["error"], field="config.online.scorers[1]", function=shared)
    assert runner.get("/v1/project_score", project_id=str(project.pk)).json()["objects"] == []


def test_adding_an_unreadable_scorer_by_patch_is_a_400_too(org, project, library, shared):
    runner = member(org, project)
    rule = runner.post("/v1/project_score", rule_body(project)).json()
    response = patch_scorers(runner, rule, [ref(shared)])
    assert response.status_code == 400, response.content
    assert_unreadable(response.json()["error"], field="config.online.scorers[0]", function=shared)


def test_a_rule_is_checked_against_its_creator_even_when_an_owner_edits_it(
    org, owner, project, library, shared
):
    # The rule runs as its creator, so what its creator can read is what counts.
    runner = member(org, project)
    rule = runner.post("/v1/project_score", rule_body(project)).json()
    response = patch_scorers(owner, rule, [ref(shared)])
    assert response.status_code == 400, response.content
    assert_unreadable(response.json()["error"], field="config.online.scorers[0]", function=shared)


def test_a_rule_whose_creator_lost_read_on_the_scorers_project_errors_on_the_scoring_span(
    org, owner, project, library, shared, run_inline
):
    runner = member(org, project, library)
    assert runner.post("/v1/project_score", rule_body(project, scorers=[ref(shared)])).status_code == 200
    revoke_read(library)

    log(owner, project, ended())

    assert events(owner, project)["span-1"]["scores"] is None
    [child] = scoring_spans(owner, project)
    assert_unreadable({"field": None, "message": child["error"]}, field=None, function=shared)
    [run] = ScoringRun.objects.all()
    assert run.status == ScoringRun.Status.ERROR and run.error == child["error"]


def test_an_owner_may_use_a_scorer_of_any_project_of_the_organization(
    owner, project, library, shared, run_inline
):
    response = owner.post("/v1/project_score", rule_body(project, scorers=[ref(shared)]))
    assert response.status_code == 200, response.content

    log(owner, project, ended())

    assert events(owner, project)["span-1"]["scores"] == {"Shared exact": 1}


def test_a_scorer_of_another_organization_is_an_unknown_function(owner, project):
    elsewhere = ProjectFactory(organization=OrganizationFactory())
    foreign = function_in(Api(member_key(elsewhere.organization, role=Membership.Role.OWNER)), elsewhere)

    response = owner.post("/v1/project_score", rule_body(project, scorers=[ref(foreign)]))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "config.online.scorers[0]" and error["message"].startswith("Unknown function")
    assert foreign["name"] not in error["message"]  # nothing of the other organization leaks


# --- Manual scoring -------------------------------------------------------------------------


def score(api, project, body):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return api.post(f"/v1/project_logs/{project.pk}/score", body)


def test_manual_scoring_may_use_a_scorer_of_a_project_the_caller_can_read(
    org, owner, project, library, shared, run_inline
):
    log(owner, project, ended())
    runner = member(org, project, library)

    response = score(runner, project, {"scorers": [ref(shared)], "ids": ["span-1"]})

    assert response.status_code == 202, response.content
    assert events(owner, project)["span-1"]["scores"] == {"Shared exact": 1}
    [run] = ScoringRun.objects.all()
    assert run.status == ScoringRun.Status.DONE


def test_manual_scoring_with_a_scorer_of_a_project_the_caller_cannot_read_is_a_400(
    org, owner, project, library, shared, queued
):
    log(owner, project, ended())
    runner = member(org, project)

    response = score(runner, project, {"scorers": [ref(shared)], "ids": ["span-1"]})

    assert response.status_code == 400, response.content
    assert_unreadable(response.json()["error"], field="scorers[0]", function=shared)
    assert not ScoringRun.objects.exists() and queued == []


def test_manual_scoring_whose_caller_lost_read_before_it_ran_errors_on_the_scoring_span(
    org, owner, project, library, shared, queued
):
    log(owner, project, ended())
    runner = member(org, project, library)
    assert score(runner, project, {"scorers": [ref(shared)], "ids": ["span-1"]}).status_code == 202
    revoke_read(library)

    runs_execute(run_ids=queued)

    [run] = ScoringRun.objects.all()
    assert run.status == ScoringRun.Status.ERROR
    [child] = scoring_spans(owner, project)
    assert child["error"] == run.error
    assert_unreadable({"field": None, "message": run.error}, field=None, function=shared)
    assert events(owner, project)["span-1"]["scores"] is None


def test_manual_scoring_with_a_scorer_of_another_organization_is_a_400(owner, project, queued):
    elsewhere = ProjectFactory(organization=OrganizationFactory())
    foreign = function_in(Api(member_key(elsewhere.organization, role=Membership.Role.OWNER)), elsewhere)
    log(owner, project, ended())

    response = score(owner, project, {"scorers": [ref(foreign)], "ids": ["span-1"]})

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "scorers[0]" and error["message"].startswith("Unknown function")


# --- Test rule ------------------------------------------------------------------------------


def preview(api, project, scorer_ref):
    return api.post("/v1/project_score/test", rule_body(project, scorers=[scorer_ref]))


def test_test_rule_may_use_a_scorer_of_a_project_the_caller_can_read(org, owner, project, library, shared):
    log(owner, project, ended(output="5"))
    runner = member(org, project, library)

    response = preview(runner, project, ref(shared))

    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert result["id"] == "span-1" and result["scores"] == {"Shared exact": 0.25} and "error" not in result


def test_test_rule_with_a_scorer_of_a_project_the_caller_cannot_read_is_a_400(
    org, owner, project, library, shared
):
    log(owner, project, ended())
    runner = member(org, project)

    response = preview(runner, project, ref(shared))

    assert response.status_code == 400, response.content
    assert_unreadable(response.json()["error"], field="config.online.scorers[0]", function=shared)


def test_test_rule_with_a_scorer_of_another_organization_is_a_400(owner, project):
    elsewhere = ProjectFactory(organization=OrganizationFactory())
    foreign = function_in(Api(member_key(elsewhere.organization, role=Membership.Role.OWNER)), elsewhere)

    response = preview(owner, project, ref(foreign))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "config.online.scorers[0]" and error["message"].startswith("Unknown function")
