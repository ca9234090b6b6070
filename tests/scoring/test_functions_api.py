"""Custom scorers: /v1/function (create, versions, list, delete, permissions), invoking them in
the sandbox, and rules that score spans with them."""

import json

import pytest

from projects.models import Membership
from scoring.models import Function, FunctionVersion
from scoring.scorers import sandbox
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory, ProjectFactory
from tests.scoring.conftest import log, rule_body
from tests.support.fake_openai import Answer, FakeOpenAI

pytestmark = pytest.mark.django_db

HALF = "def handler(input, output, expected, metadata):\n    return 0.5\n"
QUARTER = "def handler(input, output, expected, metadata):\n    return 0.25\n"
THREE_QUARTERS = "def handler(input, output, expected, metadata):\n    return 0.75\n"
TYPESCRIPT_EXACT = """interface Args {
  output: string;
  expected: string | null;
}

export function handler({ output, expected }: Args): number {
  return output === expected ? 1 : 0;
}
"""
JUDGE = {
    "prompt": {
        "type": "chat",
        "messages": [
            {"role": "system", "content": "You grade answers."},
            {
                "role": "user",
                "content": "Q: {{input}}\nA: {{output}}\nReference: {{expected}}\nMeta: {{metadata}}",
            },
        ],
    },
    "options": {"model": "judge-model", "params": {"temperature": 0}},
    "parser": {"type": "llm_classifier", "use_cot": True, "choice_scores": {"Y": 1, "N": 0}},
}


@pytest.fixture(autouse=True)
def fresh_sandboxes():
    """Each test has its own organization, so its own sandbox processes: stop them after it."""
    yield
    sandbox.pool.close()


def code_body(project, code=HALF, *, runtime="python", name="Half", slug="half", **extra) -> dict:
    return {
        "project_id": str(project.pk),
        "name": name,
        "slug": slug,
        "description": "a test scorer",
        "function_type": "scorer",
        "function_data": {
            "type": "code",
            "data": {
                "type": "inline",
                "runtime_context": {"runtime": runtime, "version": "3.11" if runtime == "python" else "22"},
                "code": code,
            },
        },
        **extra,
    }


def judge_body(project, *, prompt_data=JUDGE, name="Judge", slug="judge") -> dict:
    return {
        "project_id": str(project.pk),
        "name": name,
        "slug": slug,
        "function_type": "scorer",
        "function_data": {"type": "prompt"},
        "prompt_data": prompt_data,
    }


def code_data(code, runtime="python", version="3.11") -> dict:
    return {
        "type": "code",
        "data": {"type": "inline", "runtime_context": {"runtime": runtime, "version": version}, "code": code},
    }


def create(api, body) -> dict:
    response = api.post("/v1/function", body)
    assert response.status_code == 200, response.content
    return response.json()


def patch(api, function_id, body):
    return api.client.generic(
        "PATCH", f"/v1/function/{function_id}", json.dumps(body), content_type="application/json"
    )


def invoke(api, function_id, **body):
    return api.post(f"/v1/function/{function_id}/invoke", body)


def invoked(api, function_id, **body) -> dict:
    response = invoke(api, function_id, **body)
    assert response.status_code == 200, response.content
    return response.json()


def error_of(response, status=400) -> dict:
    assert response.status_code == status, response.content
    return response.json()["error"]


# --- Create ---------------------------------------------------------------------------------


def test_creating_a_python_scorer_answers_braintrusts_function_shape_at_version_1(owner, project):
    body = create(owner, code_body(project))

    assert body == {
        "id": body["id"],
        "project_id": str(project.pk),
        "name": "Half",
        "slug": "half",
        "description": "a test scorer",
        "function_type": "scorer",
        "function_data": code_data(HALF),
        "prompt_data": None,
        "version": 1,
        "created": body["created"],
    }
    function = Function.objects.get(pk=body["id"])
    assert [(v.version, v.function_data) for v in function.versions.all()] == [(1, code_data(HALF))]


def test_creating_a_node_scorer_keeps_its_typescript_code(owner, project):
    body = create(owner, code_body(project, TYPESCRIPT_EXACT, runtime="node", name="Exact", slug="exact"))
    assert body["function_data"] == code_data(TYPESCRIPT_EXACT, runtime="node", version="22")
    assert body["version"] == 1


def test_creating_an_llm_judge_keeps_its_prompt_options_and_parser(owner, project):
    body = create(owner, judge_body(project))
    assert body["function_data"] == {"type": "prompt"}
    assert body["prompt_data"] == JUDGE
    assert body["version"] == 1


def test_posting_an_existing_slug_returns_the_function_unchanged(owner, project):
    first = create(owner, code_body(project))
    again = create(owner, code_body(project, QUARTER, name="Renamed"))

    assert again == first
    assert Function.objects.count() == 1 and FunctionVersion.objects.count() == 1


def test_the_same_slug_in_another_project_is_another_function(owner, project):
    other = ProjectFactory(organization=project.organization)
    first = create(owner, code_body(project))
    second = create(owner, code_body(other))
    assert first["id"] != second["id"] and second["project_id"] == str(other.pk)


def _code_case(runtime="python", code=HALF, **data_extra):
    data = {"type": "inline", "runtime_context": {"runtime": runtime}, "code": code, **data_extra}
    return {"function_data": {"type": "code", "data": data}}


def _judge_case(**changes):
    return {"function_data": {"type": "prompt"}, "prompt_data": {**JUDGE, **changes}}


def _choices(choice_scores):
    return _judge_case(parser={"type": "llm_classifier", "choice_scores": choice_scores})


@pytest.mark.parametrize(
    "change, field, words",
    [
        (_code_case(runtime="ruby"), "function_data.data.runtime_context.runtime", "python or node"),
        (_code_case(code=""), "function_data.data.code", "empty"),
        (_code_case(code="   \n"), "function_data.data.code", "empty"),
        ({"function_data": {"type": "code", "data": {"type": "bundle"}}}, "function_data.data", "inline"),
        ({"function_data": {"type": "tool"}}, "function_data.type", "code"),
        ({"function_data": {"type": "prompt"}}, "prompt_data", "prompt_data"),
        (_judge_case(prompt={"type": "chat", "messages": []}), "prompt_data.prompt", "messages"),
        (_judge_case(prompt={"type": "chat"}), "prompt_data.prompt", "messages"),
        (_judge_case(prompt={"type": "chat", "messages": [{"role": "robot", "content": "x"}]}),
         "prompt_data.prompt.messages[0]", "role"),
        (_judge_case(parser={"type": "regex"}), "prompt_data.parser", "llm_classifier"),
        (_choices({"Y": 2}), "prompt_data.parser.choice_scores", "between 0 and 1"),
        (_choices({"Y": "high"}), "prompt_data.parser.choice_scores", "between 0 and 1"),
        (_choices({}), "prompt_data.parser.choice_scores", "between 0 and 1"),
        (_judge_case(parser={**JUDGE["parser"], "use_cot": "false"}), "prompt_data.parser.use_cot", "true or false"),
        (_judge_case(parser={**JUDGE["parser"], "extra": 1}), "prompt_data.parser.extra", "Unknown field"),
        (_judge_case(tool_functions=[]), "prompt_data.tool_functions", "Unknown field"),
        (_judge_case(options={"model": "m", "temperature": 0}), "prompt_data.options.temperature", "Unknown field"),
        (_judge_case(prompt={"type": "chat", "messages": [{"role": "user", "content": "{{#output}}"}]}),
         "prompt_data.prompt.messages[0].content", "never closed"),
        (_judge_case(prompt={"type": "chat", "messages": [{"role": "user", "content": "x", "name": "n"}]}),
         "prompt_data.prompt.messages[0].name", "Unknown field"),
        ({"prompt_data": JUDGE}, "prompt_data", "code scorer"),
        ({"bogus": 1}, "bogus", "Unknown field"),
        ({"slug": "not a slug"}, "slug", "slug"),
        ({"function_type": "tool"}, "function_type", "tool"),
    ],
)  # fmt: skip
def test_an_invalid_function_is_a_400_naming_the_field(owner, project, change, field, words):
    response = owner.post("/v1/function", {**code_body(project), **change})
    error = error_of(response)
    assert error["field"] == field and words in error["message"], error
    assert not Function.objects.exists()


def test_a_python_syntax_error_is_a_400_with_its_line(owner, project):
    code = "def handler(input, output, expected, metadata):\n    x = 1\n    return 0.5 +\n"
    error = error_of(owner.post("/v1/function", code_body(project, code)))
    assert error["field"] == "function_data.data.code"
    assert error["message"] == "Syntax error: invalid syntax (line 3)." and error["line"] == 3


@pytest.mark.parametrize(
    "function_data, field",
    [
        (
            {"type": "code", "data": {"type": "inline", "runtime_context": {"runtime": "python"}, "code": HALF,
                                      "bogus": 1}},
            "function_data.data.bogus",
        ),
        (
            {"type": "code", "data": {"type": "inline", "runtime_context": {"runtime": "python"}, "code": HALF},
             "bogus": 1},
            "function_data.bogus",
        ),
    ],
)  # fmt: skip
def test_an_unknown_field_inside_function_data_is_a_400_not_dropped(owner, project, function_data, field):
    # The API refuses unknown fields at any depth (projects.apis.validated); dropping them
    # silently would store something other than what was sent.
    response = owner.post("/v1/function", {**code_body(project), "function_data": function_data})
    error = error_of(response)
    assert error["field"] == field and "bogus" in error["message"]


# --- Versions -------------------------------------------------------------------------------


def test_patching_the_code_makes_version_2_and_leaves_version_1_as_it_was(owner, project):
    created = create(owner, code_body(project))
    v1 = FunctionVersion.objects.get(function_id=created["id"], version=1)

    response = patch(owner, created["id"], {"function_data": code_data(THREE_QUARTERS)})

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2 and response.json()["function_data"] == code_data(THREE_QUARTERS)
    assert owner.get(f"/v1/function/{created['id']}").json()["version"] == 2
    unchanged = FunctionVersion.objects.get(pk=v1.pk)
    assert (unchanged.version, unchanged.function_data, unchanged.created) == (1, code_data(HALF), v1.created)
    assert list(FunctionVersion.objects.filter(function_id=created["id"]).values_list("version", flat=True)) == [
        1, 2,
    ]  # fmt: skip


def test_patching_identical_code_makes_no_new_version(owner, project):
    created = create(owner, code_body(project))
    response = patch(owner, created["id"], {"function_data": code_data(HALF)})
    assert response.status_code == 200 and response.json()["version"] == 1
    assert FunctionVersion.objects.count() == 1


def test_patching_the_name_or_description_makes_no_new_version(owner, project):
    created = create(owner, code_body(project))
    response = patch(owner, created["id"], {"name": "Half, renamed", "description": "new words"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["description"], body["version"]) == ("Half, renamed", "new words", 1)
    assert FunctionVersion.objects.count() == 1


def test_patching_a_judges_prompt_makes_a_new_version(owner, project):
    created = create(owner, judge_body(project))
    stricter = {**JUDGE, "parser": {**JUDGE["parser"], "choice_scores": {"Y": 1, "N": 0, "Partly": 0.5}}}
    body = patch(owner, created["id"], {"prompt_data": stricter}).json()
    assert body["version"] == 2 and body["prompt_data"]["parser"]["choice_scores"] == {
        "Y": 1,
        "N": 0,
        "Partly": 0.5,
    }
    version_1 = FunctionVersion.objects.get(function_id=created["id"], version=1).prompt_data
    assert version_1["parser"]["choice_scores"] == JUDGE["parser"]["choice_scores"]


def test_patching_invalid_code_is_a_400_and_makes_no_version(owner, project):
    created = create(owner, code_body(project))
    response = patch(owner, created["id"], {"function_data": code_data("def handler(:\n")})
    assert error_of(response)["field"] == "function_data.data.code"
    assert FunctionVersion.objects.count() == 1


# --- Reading and deleting -------------------------------------------------------------------


def test_functions_are_listed_by_project_slug_and_name(owner, project):
    other = ProjectFactory(organization=project.organization)
    half = create(owner, code_body(project))
    quarter = create(owner, code_body(project, QUARTER, name="Quarter", slug="quarter"))
    elsewhere = create(owner, code_body(other))

    def ids(**params):
        response = owner.get("/v1/function", **params)
        assert response.status_code == 200, response.content
        return [f["id"] for f in response.json()["objects"]]

    assert ids(project_id=str(project.pk)) == [half["id"], quarter["id"]]
    assert ids(project_id=str(project.pk), slug="quarter") == [quarter["id"]]
    assert ids(project_id=str(project.pk), function_name="Half") == [half["id"]]
    assert sorted(ids(slug="half")) == sorted([half["id"], elsewhere["id"]])
    assert ids(project_id=str(project.pk), slug="missing") == []


def test_deleting_a_function_returns_it_and_it_is_gone(owner, project):
    created = create(owner, code_body(project))
    patch(owner, created["id"], {"function_data": code_data(QUARTER)})

    response = owner.delete(f"/v1/function/{created['id']}")

    assert response.status_code == 200 and response.json()["id"] == created["id"]
    assert owner.get(f"/v1/function/{created['id']}").status_code == 404
    assert owner.get("/v1/function", project_id=str(project.pk)).json()["objects"] == []
    assert not FunctionVersion.objects.exists()


# --- Permissions ----------------------------------------------------------------------------


@pytest.fixture
def function(owner, project) -> dict:
    return create(owner, code_body(project))


def test_a_member_with_read_on_the_project_can_get_list_and_invoke_but_not_write(org, project, function):
    reader = Api(member_key(org, grants=[(project, "project", "read")]))

    assert reader.get(f"/v1/function/{function['id']}").status_code == 200
    assert [f["id"] for f in reader.get("/v1/function", project_id=str(project.pk)).json()["objects"]] == [
        function["id"]
    ]
    assert invoked(reader, function["id"])["scores"] == {"Half": 0.5}
    assert error_of(patch(reader, function["id"], {"name": "x"}), 403)["code"] == "permission_denied"
    assert reader.delete(f"/v1/function/{function['id']}").status_code == 403
    assert reader.post("/v1/function", code_body(project, slug="new")).status_code == 403
    assert Function.objects.get().name == "Half" and Function.objects.count() == 1


def test_a_member_with_update_on_the_project_can_write(org, project, function):
    writer = Api(member_key(org, grants=[(project, "project", "read"), (project, "project", "update")]))
    assert patch(writer, function["id"], {"function_data": code_data(QUARTER)}).json()["version"] == 2
    assert create(writer, code_body(project, slug="new"))["version"] == 1
    assert writer.delete(f"/v1/function/{function['id']}").status_code == 200


def test_a_member_without_read_gets_403_and_does_not_see_the_function_listed(org, project, function):
    stranger = Api(member_key(org))
    assert stranger.get(f"/v1/function/{function['id']}").status_code == 403
    assert invoke(stranger, function["id"]).status_code == 403
    assert stranger.get("/v1/function", project_id=str(project.pk)).status_code == 403
    assert stranger.get("/v1/function").json()["objects"] == []


def test_a_function_of_another_organization_is_404(project, function):
    outsider = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    for response in (
        outsider.get(f"/v1/function/{function['id']}"),
        patch(outsider, function["id"], {"name": "taken"}),
        outsider.delete(f"/v1/function/{function['id']}"),
        invoke(outsider, function["id"]),
        outsider.get("/v1/function", project_id=str(project.pk)),
        outsider.post("/v1/function", code_body(project, slug="intruder")),
    ):
        assert response.status_code == 404, response.content
    assert outsider.get("/v1/function").json()["objects"] == []
    assert Function.objects.get().name == "Half" and Function.objects.count() == 1


def test_a_malformed_function_id_is_404(owner):
    assert owner.get("/v1/function/not-a-uuid").status_code == 404


# --- Invoke ---------------------------------------------------------------------------------


def _handler(body: str) -> str:
    return f"def handler(input, output, expected, metadata):\n    {body}\n"


@pytest.mark.parametrize(
    "body, scores, metadata",
    [
        ("return 0.5", {"Scorer": 0.5}, {}),
        ("return output == expected", {"Scorer": 1}, {}),
        ("return None", {"Scorer": None}, {}),
        ('return {"score": 0.25, "metadata": {"why": metadata["why"]}}', {"Scorer": 0.25}, {"why": "short"}),
        (
            'return [{"name": "exact", "score": 1}, {"name": "close", "score": 0.5, "metadata": {"d": 1}}]',
            {"exact": 1, "close": 0.5},
            {"close": {"d": 1}},
        ),
    ],
)
def test_invoking_a_python_scorer_returns_its_scores(owner, project, body, scores, metadata):
    function = create(owner, code_body(project, _handler(body), name="Scorer", slug="scorer"))
    result = invoked(owner, function["id"], input="2+2?", output="4", expected="4", metadata={"why": "short"})
    assert result["error"] is None, result
    assert result["scores"] == scores and result["metadata"] == metadata


def test_invoking_a_typescript_scorer_returns_its_score(owner, project):
    function = create(owner, code_body(project, TYPESCRIPT_EXACT, runtime="node", name="Exact", slug="exact"))
    assert invoked(owner, function["id"], output="4", expected="4") == {
        "scores": {"Exact": 1}, "metadata": {}, "metrics": {}, "error": None,
    }  # fmt: skip
    assert invoked(owner, function["id"], output="5", expected="4")["scores"] == {"Exact": 0}


def test_a_typescript_scorer_may_return_several_named_scores_and_bools(owner, project):
    code = """export function handler({ output, expected }: { output: string; expected: string }) {
  return [
    { name: "exact", score: output === expected },
    { name: "short", score: output.length < 3, metadata: { length: output.length } },
  ];
}
"""
    function = create(owner, code_body(project, code, runtime="node", name="Several", slug="several"))
    result = invoked(owner, function["id"], output="four", expected="four")
    assert result["error"] is None, result
    assert result["scores"] == {"exact": 1, "short": 0} and result["metadata"] == {"short": {"length": 4}}


@pytest.mark.parametrize(
    "body, message",
    [
        ('return "great"', "The scorer returned 'great'; expected a number between 0 and 1."),
        ("return 1.5", "The scorer returned 1.5; a score lies between 0 and 1."),
        ('return {"value": 1}', "The scorer returned {'value': 1}: a score object has 'score', 'name', 'metadata'."),
    ],
)  # fmt: skip
def test_invoking_a_scorer_that_returns_garbage_gives_a_clear_error(owner, project, body, message):
    function = create(owner, code_body(project, _handler(body)))
    result = invoked(owner, function["id"], output="4")
    assert result["error"] == message and result["scores"] == {}


def test_a_python_scorer_that_raises_reports_the_exception_and_its_line(owner, project):
    code = (
        "def handler(input, output, expected, metadata):\n"
        "    ratio = len(output) / len(expected)\n"
        "    return min(ratio, 1)\n"
    )
    function = create(owner, code_body(project, code))
    assert invoked(owner, function["id"], output="4", expected="")["error"] == (
        "ZeroDivisionError: division by zero (line 2)"
    )


def test_a_typescript_scorer_that_throws_reports_the_error_and_its_line(owner, project):
    code = """interface Args {
  expected: string | null;
}

export function handler({ expected }: Args): number {
  if (expected === null) {
    throw new Error("no expected answer");
  }
  return 1;
}
"""
    function = create(owner, code_body(project, code, runtime="node"))
    assert invoked(owner, function["id"], output="4", expected=None)["error"] == (
        "Error: no expected answer (line 7)"
    )


def test_code_that_defines_no_handler_says_so_on_every_invocation(owner, project):
    # The second call goes to the same warm sandbox process, which must not have forgotten
    # the code (it reported "KeyError: 'code'" instead).
    function = create(owner, code_body(project, "def handle(output):\n    return 1\n"))
    first = invoked(owner, function["id"], output="4")["error"]
    second = invoked(owner, function["id"], output="4")["error"]
    assert first == second == "LookupError: The code defines no function named handler."


def test_invoke_runs_the_latest_version_unless_one_is_pinned(owner, project):
    function = create(owner, code_body(project, QUARTER))
    patch(owner, function["id"], {"function_data": code_data(THREE_QUARTERS)})

    assert invoked(owner, function["id"], output="4")["scores"] == {"Half": 0.75}
    assert invoked(owner, function["id"], output="4", version=1)["scores"] == {"Half": 0.25}
    error = error_of(invoke(owner, function["id"], output="4", version=3))
    assert error["field"] == "version" and "no version 3" in error["message"]


def test_invoking_a_judge_renders_the_prompt_and_maps_the_choice_through_the_endpoint(owner, project):
    function = create(owner, judge_body(project))
    with FakeOpenAI() as stub:
        stub.default = Answer(choice="Y", reasons="It matches.", prompt_tokens=100, completion_tokens=10)
        response = owner.client.generic(
            "PUT",
            "/v1/llm_endpoint",
            json.dumps({"base_url": stub.url, "api_key": "sk-judge", "default_model": "default-model"}),
            content_type="application/json",
        )
        assert response.status_code == 200, response.content
        result = invoked(owner, function["id"], input="2+2?", output="4", expected="4", metadata={"k": 1})

    assert result["error"] is None, result
    assert result["scores"] == {"Judge": 1}
    assert result["metadata"] == {"choice": "Y", "rationale": "It matches."}
    assert result["metrics"]["prompt_tokens"] == 100 and result["metrics"]["completion_tokens"] == 10
    [request] = stub.chat_requests()
    assert request.authorization == "Bearer sk-judge"
    assert request.model == "judge-model" and request.body["temperature"] == 0
    assert request.messages[1]["content"] == 'Q: 2+2?\nA: 4\nReference: 4\nMeta: {"k": 1}'
    assert request.forced_tool == "select_choice"


def test_invoking_a_judge_with_no_llm_endpoint_is_a_400_that_says_so(owner, project, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    function = create(owner, judge_body(project))
    error = error_of(invoke(owner, function["id"], output="4"))
    assert "no endpoint is configured" in error["message"]


# --- Rules that use functions ----------------------------------------------------------------


def ended(row_id="span-1", **fields) -> dict:
    return {"id": row_id, "input": "2+2?", "output": "4", "expected": "4", "metrics": {"start": 1, "end": 2},
            **fields}  # fmt: skip


def events(api, project) -> dict:
    response = api.get(f"/v1/project_logs/{project.pk}/fetch", limit=100)
    assert response.status_code == 200, response.content
    return {e["id"]: e for e in response.json()["events"]}


def scoring_span(api, project) -> dict:
    [child] = [
        e for e in events(api, project).values() if (e["span_attributes"] or {}).get("purpose") == "scorer"
    ]
    return child


def save_rule(api, project, scorer_ref) -> dict:
    response = api.post("/v1/project_score", rule_body(project, scorers=[scorer_ref]))
    assert response.status_code == 200, response.content
    return response.json()


def test_a_rule_scores_spans_with_the_functions_latest_version(owner, project, run_inline):
    function = create(owner, code_body(project, QUARTER, name="Custom", slug="custom"))
    save_rule(owner, project, {"type": "function", "id": function["id"]})
    patch(owner, function["id"], {"function_data": code_data(THREE_QUARTERS)})

    log(owner, project, ended())

    assert events(owner, project)["span-1"]["scores"] == {"Custom": 0.75}
    child = scoring_span(owner, project)
    assert child["span_parents"] == ["span-1"] and child["span_attributes"]["name"] == "Custom"
    assert child["output"] == {"score": 0.75} and child["error"] is None
    assert child["input"] == {"input": "2+2?", "output": "4", "expected": "4", "metadata": None}


def test_a_rule_pinned_to_a_version_keeps_scoring_with_it(owner, project, run_inline):
    function = create(owner, code_body(project, QUARTER, name="Custom", slug="custom"))
    rule = save_rule(owner, project, {"type": "function", "id": function["id"], "version": 1})
    patch(owner, function["id"], {"function_data": code_data(THREE_QUARTERS)})

    log(owner, project, ended())

    assert rule["config"]["online"]["scorers"] == [{"type": "function", "id": function["id"], "version": 1}]
    assert events(owner, project)["span-1"]["scores"] == {"Custom": 0.25}


def test_a_rule_pinned_to_a_missing_version_is_a_400(owner, project):
    function = create(owner, code_body(project))
    response = owner.post(
        "/v1/project_score",
        rule_body(project, scorers=[{"type": "function", "id": function["id"], "version": 2}]),
    )
    error = error_of(response)
    assert error["field"] == "config.online.scorers[0]" and "no version 2" in error["message"]


def test_a_rule_pinned_to_a_version_that_is_not_a_number_is_a_400(owner, project):
    function = create(owner, code_body(project))
    response = owner.post(
        "/v1/project_score",
        rule_body(project, scorers=[{"type": "function", "id": function["id"], "version": "latest"}]),
    )
    assert error_of(response)["field"] == "config.online.scorers[0].version"


def test_a_rule_whose_function_was_deleted_errors_on_the_scoring_span(owner, project, run_inline):
    function = create(owner, code_body(project, name="Custom", slug="custom"))
    save_rule(owner, project, {"type": "function", "id": function["id"]})
    assert owner.delete(f"/v1/function/{function['id']}").status_code == 200

    log(owner, project, ended())

    assert events(owner, project)["span-1"]["scores"] is None
    child = scoring_span(owner, project)
    assert "Unknown function" in child["error"] and function["id"] in child["error"]
    assert child["output"] is None and child["scores"] is None


def test_a_judge_read_back_and_written_again_keeps_its_choice_order(owner, project):
    """PostgreSQL's jsonb reorders choice_scores' keys; the API gives them back in their order,
    so writing a judge back as it was read keeps it."""
    parser = {"type": "llm_classifier", "choice_scores": {"Yes": 1, "No": 0, "Maybe": 0.5}}
    created = create(owner, judge_body(project, prompt_data={**JUDGE, "parser": parser}))
    read = owner.get(f"/v1/function/{created['id']}").json()
    assert list(read["prompt_data"]["parser"]["choice_scores"]) == ["Yes", "No", "Maybe"]
    patched = patch(owner, created["id"], {"prompt_data": {**read["prompt_data"], "prompt": {
        "type": "chat", "messages": [{"role": "user", "content": "Grade {{output}}"}]}}})  # fmt: skip
    assert patched.status_code == 200, patched.content
    assert list(patched.json()["prompt_data"]["parser"]["choice_scores"]) == ["Yes", "No", "Maybe"]
