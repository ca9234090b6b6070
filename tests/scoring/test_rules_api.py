"""Online scoring rules through Braintrust's project score API, and in the Django admin."""

import json

import pytest

from projects.models import APIKey, Membership
from scoring.models import Rule
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory, ProjectFactory
from tests.scoring.conftest import rule_body
from tests.scoring.test_functions_api import code_body

pytestmark = pytest.mark.django_db

EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}


def key_owner(raw: str):
    """The user and key behind a raw API key."""
    key = APIKey.objects.select_related("user").get(prefix=raw.split("_")[1])
    return key.user, key


def create(api, project, **online):
    response = api.post("/v1/project_score", rule_body(project, **online))
    assert response.status_code == 200, response.content
    return response.json()


def patch(api, rule_id, body):
    return api.client.generic("PATCH", f"/v1/project_score/{rule_id}", json.dumps(body))


def error_of(response, status=400):
    assert response.status_code == status, response.content
    return response.json()["error"]


# --- Create, read, list, delete -------------------------------------------------------------


def test_a_created_rule_has_braintrusts_project_score_shape(org, project):
    raw = member_key(org, role=Membership.Role.OWNER)
    creator, key = key_owner(raw)
    body = rule_body(
        project,
        name="Accuracy",
        description="exact answers",
        scorers=[EXACT, LEVENSHTEIN],
        sampling_rate=0.25,
        btql_filter="metadata.model = 'gpt-4'",
        apply_to_root_span=True,
        apply_to_span_names=["llm-call"],
        enabled=False,
        sample_by="trace",
    )
    rule = Api(raw).post("/v1/project_score", body).json()

    assert set(rule) == {
        "id", "project_id", "user_id", "created", "name", "description", "score_type", "categories", "config",
        "position",
    }  # fmt: skip
    assert rule["project_id"] == str(project.pk) and rule["name"] == "Accuracy"
    assert rule["description"] == "exact answers" and rule["score_type"] == "online"
    assert rule["categories"] is None and rule["position"] is None
    assert rule["config"] == {
        "online": {
            "sampling_rate": 0.25,
            "scorers": [EXACT, LEVENSHTEIN],
            "btql_filter": "metadata.model = 'gpt-4'",
            "apply_to_root_span": True,
            "apply_to_span_names": ["llm-call"],
            "enabled": False,
            "sample_by": "trace",
        }
    }
    # The rule runs as its creator, with the key that created it.
    assert rule["user_id"] == str(creator.pk)
    stored = Rule.objects.get(pk=rule["id"])
    assert stored.run_as_user == creator and stored.run_as_key == key


def test_a_rule_gets_the_defaults_for_what_the_body_leaves_out(owner, project):
    body = {
        "project_id": str(project.pk),
        "name": "minimal",
        "config": {"online": {"sampling_rate": 1, "scorers": [EXACT]}},
    }
    rule = owner.post("/v1/project_score", body).json()
    assert rule["description"] == "" and rule["score_type"] == "online"
    assert rule["config"]["online"] == {
        "sampling_rate": 1.0,
        "scorers": [EXACT],
        "btql_filter": None,
        "apply_to_root_span": False,
        "apply_to_span_names": [],
        "enabled": True,
        "sample_by": "span",
    }


def test_nulls_in_the_online_config_mean_the_defaults(owner, project):
    rule = create(
        owner,
        project,
        btql_filter=None,
        apply_to_root_span=None,
        apply_to_span_names=None,
        enabled=None,
        sample_by=None,
    )
    online = rule["config"]["online"]
    assert (online["btql_filter"], online["apply_to_root_span"], online["apply_to_span_names"]) == (
        None,
        False,
        [],
    )
    assert (online["enabled"], online["sample_by"]) == (True, "span")


def test_scorer_references_and_span_names_are_stored_clean(owner, project):
    rule = create(
        owner,
        project,
        scorers=[{"type": "global", "name": "ExactMatch", "function_type": "scorer"}],
        apply_to_span_names=[" llm ", "llm", "tool"],
        btql_filter="  metadata.x = 1  ",
    )
    online = rule["config"]["online"]
    assert online["scorers"] == [EXACT]
    assert online["apply_to_span_names"] == ["llm", "tool"]
    assert online["btql_filter"] == "metadata.x = 1"


def test_get_list_and_delete(owner, project):
    first = create(owner, project)
    second = owner.post("/v1/project_score", rule_body(project, name="second")).json()
    other_project = ProjectFactory(organization=project.organization)
    elsewhere = owner.post("/v1/project_score", rule_body(other_project, name="elsewhere")).json()

    assert owner.get(f"/v1/project_score/{first['id']}").json() == first
    listed = owner.get("/v1/project_score", project_id=str(project.pk)).json()["objects"]
    assert [r["id"] for r in listed] == [first["id"], second["id"]]
    every = owner.get("/v1/project_score").json()["objects"]
    assert {r["id"] for r in every} == {first["id"], second["id"], elsewhere["id"]}
    by_name = owner.get("/v1/project_score", project_id=str(project.pk), project_score_name="second").json()
    assert [r["id"] for r in by_name["objects"]] == [second["id"]]

    deleted = owner.delete(f"/v1/project_score/{first['id']}")
    assert deleted.status_code == 200 and deleted.json() == first
    assert owner.get(f"/v1/project_score/{first['id']}").status_code == 404
    assert list(Rule.objects.values_list("name", flat=True).order_by("name")) == ["elsewhere", "second"]


def test_a_malformed_rule_id_is_a_404(owner):
    assert error_of(owner.get("/v1/project_score/not-a-uuid"), 404)["code"] == "not_found"


# --- Validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("online", "field"),
    [
        ({"sampling_rate": 1.5}, "config.online.sampling_rate"),
        ({"sampling_rate": -0.1}, "config.online.sampling_rate"),
        ({"sampling_rate": None}, "config.online.sampling_rate"),
        ({"scorers": [{"type": "global", "name": "NoSuchScorer"}]}, "config.online.scorers[0]"),
        ({"scorers": [EXACT, {"type": "global", "name": "Nope"}]}, "config.online.scorers[1]"),
        ({"scorers": [{"type": "function", "id": "f-404"}]}, "config.online.scorers[0]"),
        ({"scorers": [{"type": "global", "name": "ExactMatch", "extra": 1}]}, "config.online.scorers[0]"),
        ({"scorers": [{"name": "ExactMatch"}]}, "config.online.scorers[0]"),
        ({"scorers": []}, "config.online.scorers"),
        ({"scorers": [EXACT, LEVENSHTEIN, EXACT]}, "config.online.scorers[2]"),
        ({"bogus": 1}, "config.online.bogus"),
        ({"sample_by": "row"}, "config.online.sample_by"),
    ],
)
def test_a_bad_online_config_is_a_400_naming_the_field(owner, project, online, field):
    error = error_of(owner.post("/v1/project_score", rule_body(project, **online)))
    assert error["field"] == field, error
    assert error["code"] == "invalid" and error["message"]
    assert not Rule.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"config": {"online": {"sampling_rate": 1, "scorers": [EXACT]}, "offline": {}}}, "config.offline"),
        ({"config": {}}, "config.online"),
        ({"name": "  "}, "name"),
        ({"project_id": "not-a-uuid"}, "project_id"),
        ({"score_type": "slider"}, "score_type"),
        ({"categories": [{"name": "good", "value": 1}]}, "categories"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(owner, project, body, field):
    error = error_of(owner.post("/v1/project_score", {**rule_body(project), **body}))
    assert error["field"] == field, error
    assert not Rule.objects.exists()


def test_a_blank_span_name_is_a_400_naming_its_index(owner, project):
    # As scorers do (`config.online.scorers[1]`), not `...apply_to_span_names.1`.
    error = error_of(owner.post("/v1/project_score", rule_body(project, apply_to_span_names=["llm", " "])))
    assert error["field"] == "config.online.apply_to_span_names[1]", error
    assert not Rule.objects.exists()


def test_a_missing_scorer_list_is_a_400(owner, project):
    body = rule_body(project)
    del body["config"]["online"]["scorers"]
    assert error_of(owner.post("/v1/project_score", body))["field"] == "config.online.scorers"


def test_an_invalid_filter_is_a_400_with_its_position(owner, project):
    error = error_of(
        owner.post("/v1/project_score", rule_body(project, btql_filter="metadata.model = = 'x'"))
    )
    assert error["code"] == "btql_error" and error["field"] == "config.online.btql_filter"
    assert (error["line"], error["column"], error["start"], error["end"]) == (1, 18, 17, 18)
    assert not Rule.objects.exists()


def test_an_unknown_field_in_the_filter_is_a_400_with_its_position(owner, project):
    error = error_of(owner.post("/v1/project_score", rule_body(project, btql_filter="metdata.model = 'x'")))
    assert error["code"] == "btql_error" and error["field"] == "config.online.btql_filter"
    assert (error["line"], error["column"], error["start"]) == (1, 1, 0)


def test_the_filter_error_position_counts_leading_whitespace(owner, project):
    # The position must point into the text the client sent, not into a stripped copy.
    text = "\n  metadata.model = = 'x'"
    error = error_of(owner.post("/v1/project_score", rule_body(project, btql_filter=text)))
    assert (error["line"], error["column"]) == (2, 20), error
    assert text[error["start"] : error["end"]] == "="


# --- Names -------------------------------------------------------------------------------


def test_posting_an_existing_name_returns_the_existing_rule_unchanged(owner, project):
    first = create(owner, project, sampling_rate=0.5)
    again = owner.post(
        "/v1/project_score", rule_body(project, sampling_rate=1, scorers=[LEVENSHTEIN], description="other")
    )
    assert again.status_code == 200 and again.json() == first
    assert Rule.objects.get().sampling_rate == 0.5


def test_the_same_name_in_another_project_is_another_rule(owner, project):
    first = create(owner, project)
    other = ProjectFactory(organization=project.organization)
    second = owner.post("/v1/project_score", rule_body(other)).json()
    assert second["id"] != first["id"] and Rule.objects.count() == 2


# --- PATCH -------------------------------------------------------------------------------


def test_patching_only_enabled_keeps_the_rest_of_the_config(owner, project):
    rule = create(
        owner,
        project,
        sampling_rate=0.3,
        btql_filter="metadata.x = 1",
        apply_to_span_names=["llm"],
        sample_by="trace",
    )
    response = patch(owner, rule["id"], {"config": {"online": {"enabled": False}}})
    assert response.status_code == 200, response.content
    assert response.json()["config"]["online"] == {**rule["config"]["online"], "enabled": False}
    assert Rule.objects.get().enabled is False and Rule.objects.get().sampling_rate == 0.3


def test_a_rule_whose_custom_scorer_was_deleted_can_still_be_disabled(owner, project):
    """A PATCH checks the scorers it sets, not those the rule has: a rule whose scorer is gone
    can be disabled or renamed, but not given another scorer that does not exist."""
    function = owner.post("/v1/function", code_body(project)).json()
    ref = {"type": "function", "id": function["id"]}
    rule = create(owner, project, scorers=[ref])
    assert owner.delete(f"/v1/function/{function['id']}").status_code == 200
    response = patch(owner, rule["id"], {"name": "retired", "config": {"online": {"enabled": False}}})
    assert response.status_code == 200, response.content
    assert response.json()["config"]["online"]["scorers"] == [ref]
    assert Rule.objects.get().enabled is False and Rule.objects.get().name == "retired"
    error = error_of(patch(owner, rule["id"], {"config": {"online": {"scorers": [ref]}}}))
    assert error["field"] == "config.online.scorers[0]" and "no custom scorer has this id" in error["message"]


def test_patching_name_description_and_config(owner, project):
    rule = create(owner, project)
    response = patch(
        owner,
        rule["id"],
        {
            "name": "renamed",
            "description": "d",
            "config": {"online": {"scorers": [LEVENSHTEIN], "btql_filter": ""}},
        },
    )
    body = response.json()
    assert (body["name"], body["description"]) == ("renamed", "d")
    assert body["config"]["online"]["scorers"] == [LEVENSHTEIN]
    assert body["id"] == rule["id"] and body["user_id"] == rule["user_id"]


def test_patching_an_empty_filter_clears_it(owner, project):
    rule = create(owner, project, btql_filter="metadata.x = 1")
    body = patch(owner, rule["id"], {"config": {"online": {"btql_filter": ""}}}).json()
    assert body["config"]["online"]["btql_filter"] is None and Rule.objects.get().btql_filter == ""


def test_renaming_onto_an_existing_name_is_a_400_on_name(owner, project):
    owner.post("/v1/project_score", rule_body(project, name="taken"))
    rule = create(owner, project)
    error = error_of(patch(owner, rule["id"], {"name": "taken"}))
    assert error["field"] == "name" and "taken" in error["message"]
    assert Rule.objects.get(pk=rule["id"]).name == "rule"


@pytest.mark.parametrize(
    ("online", "field"),
    [
        ({"btql_filter": "metadata.x = = 1"}, "config.online.btql_filter"),
        ({"sampling_rate": 7}, "config.online.sampling_rate"),
        ({"scorers": []}, "config.online.scorers"),
        ({"scorers": [{"type": "global", "name": "Nope"}]}, "config.online.scorers[0]"),
        ({"bogus": True}, "config.online.bogus"),
    ],
)
def test_a_bad_patch_is_a_400_and_changes_nothing(owner, project, online, field):
    rule = create(owner, project)
    error = error_of(patch(owner, rule["id"], {"name": "new name", "config": {"online": online}}))
    assert error["field"] == field
    assert owner.get(f"/v1/project_score/{rule['id']}").json() == rule


def test_patching_does_not_change_whom_the_rule_runs_as(org, owner, project):
    rule = create(owner, project)
    editor_raw = member_key(org, grants=[(project, "project", "update")])
    assert patch(Api(editor_raw), rule["id"], {"description": "edited"}).status_code == 200
    assert owner.get(f"/v1/project_score/{rule['id']}").json()["user_id"] == rule["user_id"]


# --- Permissions -------------------------------------------------------------------------


def member(org, project, *grants):
    return Api(
        member_key(org, grants=[(project, object_type, permission) for object_type, permission in grants])
    )


def test_reading_rules_needs_read_on_the_project(org, owner, project):
    rule = create(owner, project)
    reader = member(org, project, ("project", "read"))
    nobody = member(org, project)
    logs_reader = member(org, project, ("project_logs", "read"))

    assert reader.get(f"/v1/project_score/{rule['id']}").json() == rule
    assert [
        r["id"] for r in reader.get("/v1/project_score", project_id=str(project.pk)).json()["objects"]
    ] == [rule["id"]]
    assert [r["id"] for r in reader.get("/v1/project_score").json()["objects"]] == [rule["id"]]
    for api in (nobody, logs_reader):
        assert error_of(api.get(f"/v1/project_score/{rule['id']}"), 403)["code"] == "permission_denied"
        assert api.get("/v1/project_score", project_id=str(project.pk)).status_code == 403
        assert api.get("/v1/project_score").json()["objects"] == []


def test_writing_rules_needs_update_on_the_project(org, owner, project):
    rule = create(owner, project)
    reader = member(org, project, ("project", "read"))
    logs_writer = member(org, project, ("project_logs", "update"), ("project_logs", "read"))
    for api in (reader, logs_writer):
        assert api.post("/v1/project_score", rule_body(project, name="new")).status_code == 403
        assert patch(api, rule["id"], {"description": "x"}).status_code == 403
        assert api.delete(f"/v1/project_score/{rule['id']}").status_code == 403
    assert Rule.objects.get().description == "" and Rule.objects.count() == 1

    writer = member(org, project, ("project", "update"))
    assert writer.post("/v1/project_score", rule_body(project, name="new")).status_code == 200
    assert patch(writer, rule["id"], {"description": "x"}).status_code == 200
    assert writer.delete(f"/v1/project_score/{rule['id']}").status_code == 200
    assert list(Rule.objects.values_list("name", flat=True)) == ["new"]


def test_a_rule_created_by_a_member_runs_as_that_member(org, project):
    raw = member_key(org, grants=[(project, "project", "update")])
    user, key = key_owner(raw)
    rule = Api(raw).post("/v1/project_score", rule_body(project)).json()
    assert rule["user_id"] == str(user.pk)
    assert Rule.objects.filter(pk=rule["id"], run_as_user=user, run_as_key=key).exists()


def test_rules_need_an_api_key(owner, project, anonymous):
    rule = create(owner, project)
    assert error_of(anonymous.get("/v1/project_score"), 401)
    assert anonymous.get(f"/v1/project_score/{rule['id']}").status_code == 401
    assert anonymous.post("/v1/project_score", rule_body(project, name="new")).status_code == 401
    assert patch(anonymous, rule["id"], {"description": "x"}).status_code == 401
    assert anonymous.delete(f"/v1/project_score/{rule['id']}").status_code == 401
    assert Rule.objects.count() == 1


def test_another_organizations_rules_and_projects_are_404(owner, project):
    rule = create(owner, project)
    stranger = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    assert error_of(stranger.get(f"/v1/project_score/{rule['id']}"), 404)["code"] == "not_found"
    assert patch(stranger, rule["id"], {"description": "x"}).status_code == 404
    assert stranger.delete(f"/v1/project_score/{rule['id']}").status_code == 404
    assert stranger.get("/v1/project_score", project_id=str(project.pk)).status_code == 404
    assert stranger.get("/v1/project_score").json()["objects"] == []
    assert stranger.post("/v1/project_score", rule_body(project, name="new")).status_code == 404
    # Not even an existing name leaks the rule.
    assert stranger.post("/v1/project_score", rule_body(project)).status_code == 404
    assert Rule.objects.count() == 1 and Rule.objects.get().description == ""


# --- The admin ---------------------------------------------------------------------------


@pytest.fixture
def admin_owner(admin_user, org):
    Membership.objects.create(organization=org, user=admin_user, role=Membership.Role.OWNER)
    return admin_user


def admin_form(project, **fields):
    return {
        "project": project.pk,
        "name": "from the admin",
        "description": "",
        "scorers": '[{"type": "global", "name": "ExactMatch"}]',
        "sampling_rate": "0.5",
        "btql_filter": "",
        "apply_to_span_names": "[]",
        "enabled": "on",
        "sample_by": "span",
        **fields,
    }


def test_the_admin_refuses_a_rule_with_an_invalid_filter(admin_client, admin_owner, project):
    response = admin_client.post(
        "/admin/scoring/rule/add/", admin_form(project, btql_filter="metadata.x = = 1")
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["btql_filter"] and "line 1, column 14" in errors["btql_filter"][0]
    assert "line 1, column 14" in response.content.decode()
    assert not Rule.objects.exists()


def test_the_admin_refuses_an_unknown_scorer(admin_client, admin_owner, project):
    response = admin_client.post(
        "/admin/scoring/rule/add/", admin_form(project, scorers='[{"type": "global", "name": "Nope"}]')
    )
    assert list(response.context["adminform"].form.errors) == ["scorers"]
    assert not Rule.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("apply_to_span_names", "7"), ("apply_to_span_names", '{"a": 1}'), ("sampling_rate", "1.5")],
)
def test_the_admin_refuses_span_names_that_are_not_a_list_and_rates_above_one(
    admin_client, admin_owner, project, field, value
):
    response = admin_client.post("/admin/scoring/rule/add/", admin_form(project, **{field: value}))
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert not Rule.objects.exists()


def test_a_rule_made_in_the_admin_runs_as_the_admin(admin_client, admin_owner, owner, project):
    response = admin_client.post(
        "/admin/scoring/rule/add/",
        admin_form(project, btql_filter="  metadata.model = 'gpt-4' ", apply_to_span_names='[" llm "]'),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = Rule.objects.get()
    assert rule.run_as_user == admin_owner and rule.run_as_key is None
    assert (rule.name, rule.sampling_rate, rule.btql_filter) == (
        "from the admin",
        0.5,
        "metadata.model = 'gpt-4'",
    )
    assert rule.scorers == [EXACT] and rule.apply_to_span_names == ["llm"] and rule.enabled
    api_view = owner.get(f"/v1/project_score/{rule.pk}").json()
    assert api_view["user_id"] == str(admin_owner.pk)


def test_editing_a_rule_in_the_admin_keeps_whom_it_runs_as(admin_client, admin_owner, org, project):
    raw = member_key(org, role=Membership.Role.OWNER)
    creator, _ = key_owner(raw)
    rule_id = Api(raw).post("/v1/project_score", rule_body(project)).json()["id"]
    response = admin_client.post(
        f"/admin/scoring/rule/{rule_id}/change/", admin_form(project, name="edited", sampling_rate="1")
    )
    assert response.status_code == 302
    rule = Rule.objects.get()
    assert rule.name == "edited" and rule.run_as_user == creator


def test_a_custom_scorer_is_one_scorer_however_its_id_is_spelled(owner, project):
    code = {"type": "inline", "runtime_context": {"runtime": "python", "version": "3.11"},
            "code": "def handler(output):\n    return 1\n"}  # fmt: skip
    function = owner.post("/v1/function", {"project_id": str(project.pk), "name": "One", "slug": "one",
                                           "function_data": {"type": "code", "data": code}}).json()  # fmt: skip
    spellings = [
        {"type": "function", "id": function["id"]},
        {"type": "function", "id": "{%s}" % function["id"].upper()},
    ]
    response = owner.post("/v1/project_score", rule_body(project, scorers=spellings))
    assert response.status_code == 400 and response.json()["error"]["field"] == "config.online.scorers[1]"
    assert "listed twice" in response.json()["error"]["message"]
    response = owner.post("/v1/project_score", rule_body(project, scorers=spellings[1:]))
    assert response.json()["config"]["online"]["scorers"] == [{"type": "function", "id": function["id"]}]


@pytest.mark.parametrize(
    ("online", "field", "words"),
    [
        ({"sampling_rate": True}, "config.online.sampling_rate", "a number"),
        ({"sampling_rate": "0.5"}, "config.online.sampling_rate", "a number"),
        ({"enabled": ""}, "config.online.enabled", "true or false"),
        ({"enabled": 1}, "config.online.enabled", "true or false"),
        ({"apply_to_span_names": [1]}, "config.online.apply_to_span_names[0]", "a string"),
        ({"apply_to_span_names": "llm"}, "config.online.apply_to_span_names", "a list"),
        ({"btql_filter": 1}, "config.online.btql_filter", "a string"),
        ({"sample_by": 2}, "config.online.sample_by", "a string"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_a_400_not_converted(owner, project, online, field, words):
    response = owner.post("/v1/project_score", rule_body(project, **online))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == field and words in error["message"], error
    assert not Rule.objects.exists()


@pytest.mark.parametrize(("change", "field"), [({"name": 123}, "name"), ({"project_id": 1}, "project_id")])
def test_top_level_fields_of_the_wrong_json_type_are_400s(owner, project, change, field):
    response = owner.post("/v1/project_score", {**rule_body(project), **change})
    assert response.status_code == 400 and response.json()["error"]["field"] == field
    assert not Rule.objects.exists()


def test_a_query_parameter_given_twice_is_a_400(owner, project):
    response = owner.client.get(f"/v1/project_score?project_id={project.pk}&project_id={project.pk}")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Give 'project_id' once.", "code": "invalid", "field": "project_id"
    }  # fmt: skip


@pytest.mark.parametrize("path", ["/v1/project_score", "/v1/project_score/test"])
def test_a_project_of_another_organization_is_a_404_on_project_id(owner, path):
    elsewhere = ProjectFactory(organization=OrganizationFactory())
    response = owner.post(path, rule_body(elsewhere))
    assert response.status_code == 404 and response.json()["error"]["field"] == "project_id"
    assert not Rule.objects.exists()
