"""The scoring models in the Django admin: every one has a page; scorers and their versions are
readable there, and the LLM endpoint is set through the same service as the API."""

import json

import pytest

from scoring.models import Function, LLMEndpoint, Rule, SpanDecisions
from scoring.scorers import llm
from tests.scoring.conftest import log, rule_body
from tests.scoring.test_functions_api import code_body

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["rule", "scoringrun", "spandecisions", "function", "llmendpoint"])
def test_every_scoring_model_has_an_admin_page(admin_client, model):
    assert admin_client.get(f"/admin/scoring/{model}/").status_code == 200


def test_the_admin_spells_btql_and_llm_as_the_app_does(admin_client):
    index = admin_client.get("/admin/").content.decode()
    assert "LLM endpoints" in index and "Llm endpoints" not in index
    rule_form = admin_client.get("/admin/scoring/rule/add/").content.decode()
    assert "BTQL filter" in rule_form and "Btql filter" not in rule_form


def test_a_decision_record_shows_each_rules_decision_in_the_admin(admin_client, owner, project, queued):
    rule = owner.post("/v1/project_score", rule_body(project, btql_filter="metadata.env = 'prod'")).json()
    log(owner, project, {"id": "a", "metadata": {"env": "dev"}, "metrics": {"start": 1, "end": 2}})
    record = SpanDecisions.objects.get(span__row_id="a")
    page = admin_client.get(f"/admin/scoring/spandecisions/{record.pk}/change/").content.decode()
    assert rule["id"] in page and "filtered_out" in page


def test_a_scorer_shows_its_versions_and_cannot_be_edited_in_the_admin(admin_client, owner, project):
    code = {"type": "inline", "runtime_context": {"runtime": "python", "version": "3.11"}}
    created = owner.post("/v1/function", {
        "project_id": str(project.pk), "name": "Short", "slug": "short",
        "function_data": {"type": "code", "data": {**code, "code": "def handler(output):\n    return 1\n"}},
    }).json()  # fmt: skip
    owner.client.patch(
        f"/v1/function/{created['id']}",
        {"function_data": {"type": "code", "data": {**code, "code": "def handler(output):\n    return 0\n"}}},
        format="json",
    )
    page = admin_client.get(f"/admin/scoring/function/{created['id']}/change/").content.decode()
    assert "return 1" in page and "return 0" in page  # both versions
    admin_client.post(f"/admin/scoring/function/{created['id']}/change/", {"name": "Renamed"})
    assert Function.objects.get().name == "Short"


def test_the_admin_sets_an_endpoint_with_an_encrypted_key_and_keeps_it_when_left_empty(admin_client, org):
    form = {
        "organization": org.pk,
        "base_url": "http://127.0.0.1:9/v1",
        "default_model": "gpt-4o",
        "api_key": "sk-secret",
    }
    response = admin_client.post("/admin/scoring/llmendpoint/add/", form)
    assert response.status_code == 302, response.content
    endpoint = LLMEndpoint.objects.get()
    assert (
        "sk-secret" not in endpoint.api_key_encrypted
        and llm.decrypt(endpoint.api_key_encrypted) == "sk-secret"
    )
    assert b"sk-secret" not in admin_client.get(f"/admin/scoring/llmendpoint/{org.pk}/change/").content

    admin_client.post(
        f"/admin/scoring/llmendpoint/{org.pk}/change/", {**form, "default_model": "gpt-5", "api_key": ""}
    )
    endpoint.refresh_from_db()
    assert endpoint.default_model == "gpt-5" and llm.decrypt(endpoint.api_key_encrypted) == "sk-secret"

    # A new address needs the key again: the stored one is not sent where it was not set for.
    moved = {**form, "base_url": "http://127.0.0.1:10/v1", "api_key": ""}
    response = admin_client.post(f"/admin/scoring/llmendpoint/{org.pk}/change/", moved)
    assert (
        response.status_code == 200
        and "Give the API key again with a new base URL" in response.content.decode()
    )
    endpoint.refresh_from_db()
    assert endpoint.base_url == "http://127.0.0.1:9/v1"


def test_the_admin_links_the_web_app_and_the_queues_dashboard(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert 'href="/"' in page and 'href="/admin/django_rq/' in page
    assert admin_client.get("/admin/django_rq/").status_code == 200


def test_the_admin_disables_a_rule_whose_custom_scorer_was_deleted(admin_client, owner, project):
    function = owner.post("/v1/function", code_body(project)).json()
    ref = {"type": "function", "id": function["id"]}
    rule = owner.post("/v1/project_score", rule_body(project, scorers=[ref])).json()
    assert owner.delete(f"/v1/function/{function['id']}").status_code == 200
    form = {"project": str(project.pk), "name": "rule", "description": "", "scorers": json.dumps([ref]),
            "sampling_rate": "1", "btql_filter": "", "apply_to_span_names": "[]", "sample_by": "span",
            # What the page sends back of a field with a computed default, to tell what changed.
            "initial-scorers": json.dumps([ref]), "initial-apply_to_span_names": "[]"}  # fmt: skip
    response = admin_client.post(f"/admin/scoring/rule/{rule['id']}/change/", form)  # "enabled" unticked
    assert response.status_code == 302
    assert Rule.objects.get().enabled is False
    # Setting the scorers checks them.
    response = admin_client.post(
        f"/admin/scoring/rule/{rule['id']}/change/",
        {**form, "scorers": json.dumps([ref, ref]), "enabled": "on"},
    )
    assert response.status_code == 200 and "no custom scorer has this id" in response.content.decode()
    assert Rule.objects.get().enabled is False
