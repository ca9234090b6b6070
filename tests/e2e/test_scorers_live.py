"""Custom and LLM scorers end to end: a Python scorer, a TypeScript scorer and an LLM judge made
through the API, used with Factuality and Levenshtein in one rule, and scored live by a real
`manage.py worker` on traces logged with the braintrust SDK. The LLM endpoint is the fake
OpenAI-compatible server of tests/support/fake_openai.py, which this process runs and the worker
reaches over HTTP. Hostile code in the rule errors on its own scoring spans only, and the worker
keeps scoring.
"""

import re
import time

import autoevals
import pytest
from django.conf import settings

from tests.e2e.stack import Stack
from tests.e2e.test_online_scoring import (
    scoring_spans_by_parent,
    stack_shown_on_failure,
    stats,
    wait_for_runs,
)
from tests.support.fake_openai import Answer, FakeOpenAI

pytestmark = pytest.mark.e2e

ENDPOINT_KEY = "sk-e2e-endpoint"
SANDBOX_TIMEOUT = 1  # seconds: the infinite loop is stopped after this

QUESTION = "What is the capital of France?"
OUTPUT = "Paris is the capital of France"
EXPECTED = "Paris"

PYTHON_SCORER = """
def handler(output, expected):
    return 1.0 if expected.lower() in output.lower() else 0.0
"""
TYPESCRIPT_SCORER = """
export function handler({ output }: { output: string }): number {
  const words: string[] = output.split(" ");
  return words.length <= 8 ? 1 : 0;
}
"""
JUDGE = {
    "prompt": {
        "type": "chat",
        "messages": [
            {"role": "system", "content": "You grade answers."},
            {"role": "user", "content": "Question: {{input}}\nAnswer: {{output}}\nReference: {{expected}}"},
        ],
    },
    "options": {"model": "gpt-4o-mini", "params": {"temperature": 0}},
    "parser": {"type": "llm_classifier", "use_cot": True, "choice_scores": {"correct": 1, "wrong": 0}},
}
READS_PASSWD = """
def handler(output):
    with open("/etc/passwd") as f:
        return 1.0 if f.read() else 0.0
"""
LOOPS_FOREVER = """
export function handler({ output }: { output: string }): number {
  while (true) {}
  return 1;
}
"""


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pytestconfig, fake):
    env = {"SCORING_SANDBOX_TIMEOUT": str(SANDBOX_TIMEOUT)}
    with stack_shown_on_failure(tmp_path_factory.mktemp("stack"), pytestconfig, workers=1, env=env) as s:
        s.api(
            "PUT",
            "/v1/llm_endpoint",
            {"base_url": fake.url, "api_key": ENDPOINT_KEY, "default_model": "fake-judge"},
        )
        yield s


def code_scorer(stack: Stack, project_id: str, name: str, runtime: str, code: str) -> dict:
    data = {"type": "inline", "runtime_context": {"runtime": runtime, "version": ""}, "code": code}
    function_data = {"type": "code", "data": data}
    body = {"project_id": project_id, "name": name, "slug": name.lower().replace(" ", "-"),
            "function_type": "scorer", "function_data": function_data}  # fmt: skip
    return {"type": "function", "id": stack.api("POST", "/v1/function", body)["id"]}


def judge_scorer(stack: Stack, project_id: str, name: str) -> dict:
    body = {"project_id": project_id, "name": name, "slug": "judge", "function_type": "scorer",
            "function_data": {"type": "prompt"}, "prompt_data": JUDGE}  # fmt: skip
    return {"type": "function", "id": stack.api("POST", "/v1/function", body)["id"]}


def rule_create(stack: Stack, project_id: str, scorers: list[dict]) -> dict:
    online = {"sampling_rate": 1, "scorers": scorers, "apply_to_root_span": True}
    body = {
        "project_id": project_id,
        "name": "everything",
        "score_type": "online",
        "config": {"online": online},
    }
    return stack.api("POST", "/v1/project_score", body)


def trace(key: str, output: str = OUTPUT) -> dict:
    child = {"key": f"{key}.llm", "name": "llm", "type": "llm", "output": output}
    return {"key": key, "name": "chat", "input": {"question": QUESTION}, "output": output,
            "expected": EXPECTED, "children": [child]}  # fmt: skip


def test_custom_scorers_and_a_judge_made_through_the_api_score_live_traces_beside_factuality_and_levenshtein(
    stack, fake
):
    fake.reset()
    fake.default = Answer(
        ("C", "correct"), reasons="Both name Paris.", prompt_tokens=120, completion_tokens=30
    )
    project_id = stack.project("custom-scorers")
    refs = [
        code_scorer(stack, project_id, "Mentions expected", "python", PYTHON_SCORER),
        code_scorer(stack, project_id, "Short answer", "node", TYPESCRIPT_SCORER),
        judge_scorer(stack, project_id, "Correctness judge"),
        {"type": "global", "name": "Factuality"},
        {"type": "global", "name": "Levenshtein"},
    ]
    rule = rule_create(stack, project_id, refs)

    started = time.monotonic()
    (root, child) = stack.sdk_log("custom-scorers", [trace("t")])
    wait_for_runs(stack, [rule])
    print(f"\nlogged and scored by 5 scorers (2 sandboxed, 2 LLM) in {time.monotonic() - started:.2f} s")

    events = stack.fetch_all(project_id)
    event = next(e for e in events if e["id"] == root["id"])
    levenshtein = autoevals.Levenshtein().eval(output=OUTPUT, expected=EXPECTED).score
    assert event["scores"] == {"Mentions expected": 1, "Short answer": 1, "Correctness judge": 1,
                               "Factuality": 1, "Levenshtein": levenshtein}  # fmt: skip
    assert next(e for e in events if e["id"] == child["id"])["scores"] is None  # not the root: not chosen

    children = {c["span_attributes"]["name"]: c for c in scoring_spans_by_parent(events)[root["span_id"]]}
    assert sorted(children) == sorted(event["scores"])
    for name, scoring in children.items():
        assert scoring["span_attributes"] == {"name": name, "type": "score", "purpose": "scorer"}
        assert scoring["root_span_id"] == root["root_span_id"] and scoring["error"] is None
        assert scoring["output"] == {"score": event["scores"][name]}
    judge = children["Correctness judge"]
    assert judge["metadata"] == {"choice": "correct", "rationale": "Both name Paris."}
    assert (judge["metrics"]["prompt_tokens"], judge["metrics"]["completion_tokens"]) == (120, 30)
    input_price, output_price = settings.SCORING_LLM_PRICES["gpt-4o-mini"]  # the stack's settings too
    assert judge["metrics"]["estimated_cost"] == pytest.approx((120 * input_price + 30 * output_price) / 1e6)
    assert children["Factuality"]["metadata"] == {"choice": "C", "rationale": "Both name Paris."}

    # The worker called the organization's endpoint once per LLM scorer, with its key.
    requests = fake.chat_requests()
    assert sorted(r.model for r in requests) == ["fake-judge", "gpt-4o-mini"]
    assert {r.authorization for r in requests} == {f"Bearer {ENDPOINT_KEY}"}
    (judge_request,) = [r for r in requests if r.model == "gpt-4o-mini"]
    assert judge_request.messages[1]["content"] == (
        f'Question: {{"question": "{QUESTION}"}}\nAnswer: {OUTPUT}\nReference: {EXPECTED}'
    )
    assert stats(stack, rule) | {"queue_lag_seconds": 0} == {
        "matched": 1, "sampled": 1, "scored": 1, "errored": 0, "pending_runs": 0, "queue_lag_seconds": 0
    }  # fmt: skip


def test_hostile_code_errors_on_its_own_scoring_spans_while_the_other_scorers_score_and_the_worker_goes_on(
    stack, fake
):
    fake.reset()
    fake.default = Answer(("C", "correct"))
    project_id = stack.project("hostile-scorers")
    refs = [
        code_scorer(stack, project_id, "Reads passwd", "python", READS_PASSWD),
        code_scorer(stack, project_id, "Loops forever", "node", LOOPS_FOREVER),
        {"type": "global", "name": "Levenshtein"},
        {"type": "global", "name": "Factuality"},
    ]
    rule = rule_create(stack, project_id, refs)
    (worker,) = stack.workers

    for n, output in enumerate([OUTPUT, "Lyon"], start=1):
        started = time.monotonic()
        (root, _) = stack.sdk_log("hostile-scorers", [trace(f"t{n}", output)])
        wait_for_runs(stack, [rule])
        print(f"\ntrace {n}: scored with one scorer stopped at its {SANDBOX_TIMEOUT} s timeout "
              f"in {time.monotonic() - started:.2f} s")  # fmt: skip

        events = stack.fetch_all(project_id)
        event = next(e for e in events if e["id"] == root["id"])
        levenshtein = autoevals.Levenshtein().eval(output=output, expected=EXPECTED).score
        assert event["scores"] == {"Levenshtein": levenshtein, "Factuality": 1}
        children = {c["span_attributes"]["name"]: c for c in scoring_spans_by_parent(events)[root["span_id"]]}
        assert sorted(children) == ["Factuality", "Levenshtein", "Loops forever", "Reads passwd"]
        passwd = children["Reads passwd"]
        assert passwd["scores"] is None and passwd["output"] is None
        assert "/etc/passwd" in passwd["error"] and re.search(r"ermission denied|EACCES", passwd["error"])
        loop = children["Loops forever"]
        assert loop["scores"] is None and loop["error"] == (
            f"The scorer ran longer than {SANDBOX_TIMEOUT} s and was stopped."
        )
        assert worker.alive()
        assert stats(stack, rule) | {"queue_lag_seconds": 0} == {
            "matched": n, "sampled": n, "scored": 0, "errored": n, "pending_runs": 0, "queue_lag_seconds": 0
        }  # fmt: skip
    assert stack.workers == [worker]
