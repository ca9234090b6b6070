"""The scorer catalogue (GET /v1/scorers) and the organization's LLM endpoint
(GET/PUT /v1/llm_endpoint): LLM scorers need one, at rule save and when they run."""

import json

import pytest
from django.db import connection

from projects.models import Membership
from scoring.models import LLMEndpoint
from scoring.scorers import llm
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory
from tests.scoring.conftest import log, rule_body
from tests.support.fake_openai import Answer, FakeOpenAI

pytestmark = pytest.mark.django_db

LOCAL = ["ExactMatch", "JSONDiff", "Levenshtein", "ListContains", "NumericDiff", "ValidJSON"]
RAG = ["AnswerCorrectness", "AnswerRelevancy", "AnswerSimilarity", "ContextEntityRecall", "ContextPrecision",
       "ContextRecall", "ContextRelevancy", "Faithfulness"]  # fmt: skip
LLM = sorted(["Battle", "ClosedQA", "EmbeddingSimilarity", "Factuality", "Humor", "Moderation", "Possible",
              "Security", "Sql", "Summary", "Translation", *RAG])  # fmt: skip
SECRET = "sk-test-5f1d0c2a9b8e7d6c"


@pytest.fixture(autouse=True)
def no_environment_endpoint(monkeypatch):
    """Only the organization's endpoint counts in these tests, not one in the environment."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def put_endpoint(api, **body):
    return api.client.generic("PUT", "/v1/llm_endpoint", json.dumps(body), content_type="application/json")


def configure(api, base_url="http://127.0.0.1:9/v1", api_key=SECRET, default_model="gpt-4o-mini"):
    body = {"base_url": base_url, "default_model": default_model}
    if api_key is not None:
        body["api_key"] = api_key
    response = put_endpoint(api, **body)
    assert response.status_code == 200, response.content
    return response


def catalogue(api) -> dict:
    response = api.get("/v1/scorers")
    assert response.status_code == 200, response.content
    return response.json()


# --- The catalogue --------------------------------------------------------------------------


def test_the_catalogue_lists_the_local_scorers_then_the_llm_ones(owner):
    objects = catalogue(owner)["objects"]
    assert [s["name"] for s in objects] == LOCAL + LLM
    assert {s["name"] for s in objects if not s["needs_llm"]} == set(LOCAL)


@pytest.mark.parametrize(
    "name, needs_llm, requires",
    [
        ("ExactMatch", False, ["output", "expected"]),
        ("ListContains", False, ["output", "expected"]),
        ("ValidJSON", False, ["output"]),
        ("Factuality", True, ["input", "output", "expected"]),
        ("ClosedQA", True, ["input", "output"]),
        ("Humor", True, ["output"]),
        ("Moderation", True, ["output"]),
        ("EmbeddingSimilarity", True, ["output", "expected"]),
        ("Faithfulness", True, ["input", "output", "expected"]),
    ],
)
def test_each_scorer_says_what_it_requires_and_whether_it_needs_an_llm(owner, name, needs_llm, requires):
    [entry] = [s for s in catalogue(owner)["objects"] if s["name"] == name]
    assert entry["needs_llm"] is needs_llm and entry["requires"] == requires


def test_optional_inputs_of_llm_scorers_are_read_from_metadata(owner):
    entries = {s["name"]: s for s in catalogue(owner)["objects"]}
    assert entries["ClosedQA"]["optional"] == ["metadata.criteria"]
    assert entries["Translation"]["optional"] == ["metadata.language"]
    assert all(entries[name]["optional"] == ["metadata.context"] for name in RAG)


def test_members_can_read_the_catalogue(org):
    assert catalogue(Api(member_key(org)))["objects"]


def test_the_catalogue_needs_an_api_key(anonymous):
    assert anonymous.get("/v1/scorers").status_code == 401


def test_list_contains_scores_locally_with_no_llm_endpoint(owner, project):
    log(owner, project, {"id": "half", "output": ["apple"], "expected": ["apple", "banana"],
                         "metrics": {"start": 1, "end": 2}})  # fmt: skip
    response = owner.post(
        "/v1/project_score/test", rule_body(project, scorers=[{"type": "global", "name": "ListContains"}])
    )
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    assert result["scores"] == {"ListContains": 0.5} and "error" not in result


def test_llm_endpoint_configured_is_false_until_the_organization_sets_one(owner, org):
    assert catalogue(owner)["llm_endpoint_configured"] is False
    configure(owner)
    assert catalogue(owner)["llm_endpoint_configured"] is True
    assert catalogue(Api(member_key(org)))["llm_endpoint_configured"] is True


def test_an_endpoint_of_another_organization_does_not_count(owner):
    configure(owner)
    other = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    assert catalogue(other)["llm_endpoint_configured"] is False


def test_openai_base_url_in_the_environment_counts_as_an_endpoint(owner, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert catalogue(owner)["llm_endpoint_configured"] is True


# --- The LLM endpoint -----------------------------------------------------------------------


def test_an_owner_sets_and_reads_the_endpoint_without_the_key_ever_coming_back(owner):
    assert owner.get("/v1/llm_endpoint").json() == {"configured": False}

    put = configure(owner, default_model="judge-model")
    got = owner.get("/v1/llm_endpoint")

    expected = {"configured": True, "base_url": "http://127.0.0.1:9/v1", "default_model": "judge-model",
                "api_key_set": True}  # fmt: skip
    assert put.json() == expected and got.json() == expected
    assert SECRET not in put.content.decode() and SECRET not in got.content.decode()


def test_the_key_is_stored_encrypted(owner, org):
    configure(owner)
    table = LLMEndpoint._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        rows = cursor.fetchall()
    assert len(rows) == 1
    assert not any(SECRET in str(value) for value in rows[0])
    assert llm.endpoint_for(org).api_key == SECRET


def test_putting_the_endpoint_without_an_api_key_keeps_the_stored_key(owner, org):
    configure(owner)
    base_url = llm.endpoint_for(org).base_url
    configure(owner, base_url=base_url, default_model="other-model", api_key=None)

    endpoint = llm.endpoint_for(org)
    assert (endpoint.base_url, endpoint.default_model, endpoint.api_key) == (base_url, "other-model", SECRET)
    assert owner.get("/v1/llm_endpoint").json()["api_key_set"] is True


def test_an_owner_removes_the_endpoint_and_llm_scorers_are_then_unconfigured(owner, org):
    configure(owner)
    removed = owner.client.delete("/v1/llm_endpoint")
    assert removed.status_code == 200 and removed.json() == {"configured": False}
    assert owner.get("/v1/llm_endpoint").json() == {"configured": False}
    assert catalogue(owner)["llm_endpoint_configured"] is False
    assert not LLMEndpoint.objects.filter(organization=org).exists()


def test_a_member_cannot_remove_the_endpoint(owner, org):
    configure(owner)
    removed = Api(member_key(org)).client.delete("/v1/llm_endpoint")
    assert removed.status_code == 403 and removed.json()["error"]["code"] == "permission_denied"
    assert LLMEndpoint.objects.filter(organization=org).exists()


def test_members_can_neither_read_nor_set_the_endpoint(owner, org):
    configure(owner)
    member = Api(member_key(org))

    read = member.get("/v1/llm_endpoint")
    write = put_endpoint(member, base_url="http://evil.example.com/v1", api_key="sk-evil", default_model="x")

    assert read.status_code == 403 and write.status_code == 403
    assert read.json()["error"]["code"] == "permission_denied"
    assert SECRET not in read.content.decode()
    assert (
        llm.endpoint_for(org).base_url == "http://127.0.0.1:9/v1" and llm.endpoint_for(org).api_key == SECRET
    )


@pytest.mark.parametrize(
    "body, field",
    [
        ({"base_url": "not a url", "default_model": "m"}, "base_url"),
        ({"base_url": "http://127.0.0.1:9/v1"}, "default_model"),
        ({"base_url": "http://127.0.0.1:9/v1", "default_model": "m", "organization": "x"}, "organization"),
    ],
)
def test_an_invalid_endpoint_is_a_400_naming_the_field(owner, body, field):
    response = put_endpoint(owner, **body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field, response.content
    assert not LLMEndpoint.objects.exists()


# --- LLM scorers need an endpoint -----------------------------------------------------------

FACTUALITY = {"type": "global", "name": "Factuality"}


def test_a_rule_with_an_llm_scorer_and_no_endpoint_is_a_400_naming_the_scorer(owner, project):
    response = owner.post("/v1/project_score", rule_body(project, scorers=[FACTUALITY]))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "config.online.scorers[0]"
    assert "no endpoint is configured" in error["message"] and "PUT /v1/llm_endpoint" in error["message"]
    assert "Factuality" in error["message"]


def test_the_same_rule_saves_once_the_endpoint_is_set(owner, project):
    assert owner.post("/v1/project_score", rule_body(project, scorers=[FACTUALITY])).status_code == 400
    configure(owner)
    response = owner.post("/v1/project_score", rule_body(project, scorers=[FACTUALITY]))
    assert response.status_code == 200, response.content
    assert response.json()["config"]["online"]["scorers"] == [FACTUALITY]


@pytest.mark.parametrize("name", LLM)
def test_every_llm_scorer_of_the_catalogue_can_be_used_once_an_endpoint_is_set(owner, project, name):
    configure(owner)
    response = owner.post("/v1/project_score", rule_body(project, scorers=[{"type": "global", "name": name}]))
    assert response.status_code == 200, response.content


def test_an_llm_scorer_scores_through_the_organizations_endpoint_with_its_key(owner, project, run_inline):
    with FakeOpenAI() as stub:
        stub.default = Answer(choice="C")
        configure(owner, base_url=stub.url, default_model="grader")
        assert owner.post("/v1/project_score", rule_body(project, scorers=[FACTUALITY])).status_code == 200
        log(owner, project, {"id": "span-1", "input": "2+2?", "output": "4", "expected": "4",
                             "metrics": {"start": 1, "end": 2}})  # fmt: skip

    events = {e["id"]: e for e in owner.get(f"/v1/project_logs/{project.pk}/fetch").json()["events"]}
    assert events["span-1"]["scores"] == {"Factuality": 1}
    [request] = stub.chat_requests()
    assert request.authorization == f"Bearer {SECRET}" and request.model == "grader"


def test_an_llm_scorer_whose_endpoint_was_removed_errors_on_the_scoring_span(owner, org, project, run_inline):
    configure(owner)
    assert owner.post("/v1/project_score", rule_body(project, scorers=[FACTUALITY])).status_code == 200
    LLMEndpoint.objects.filter(organization=org).delete()

    log(owner, project, {"id": "span-1", "input": "2+2?", "output": "4", "expected": "4",
                         "metrics": {"start": 1, "end": 2}})  # fmt: skip

    events = {e["id"]: e for e in owner.get(f"/v1/project_logs/{project.pk}/fetch").json()["events"]}
    [child] = [e for e in events.values() if (e["span_attributes"] or {}).get("purpose") == "scorer"]
    assert child["span_attributes"]["name"] == "Factuality" and child["span_parents"] == ["span-1"]
    assert "no endpoint is configured" in child["error"]
    assert events["span-1"]["scores"] is None
