"""LLM-backed scorers through an OpenAI-compatible endpoint: autoevals' own scorers (the real
library, not a mock) and LLM-as-a-judge prompt functions, against a fake server on 127.0.0.1
(tests/support/fake_openai.py) that records what it receives.

Scored in this process: by `scorers.resolve` + `scorers.run`, or live through a rule (`log` ingests
a span, `run_inline` runs the runs it enqueues).
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import autoevals
import pytest
from django.utils import timezone

from projects.models import Membership, Span
from scoring import scorers
from scoring.models import LLMEndpoint, ScoringRun
from scoring.scorers import llm
from tests.conftest import Api, member_key
from tests.scoring.conftest import log, rule_body
from tests.support.fake_openai import (  # noqa: F401
    Answer,
    Fail,
    FakeOpenAI,
    failures,
    fake_openai,
    no_endpoint_in_the_environment,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_endpoint_in_the_environment")]

ORG_KEY = "sk-org-secret"
DEFAULT_MODEL = "fake-judge"
FACTUALITY = {"type": "global", "name": "Factuality"}
CHAT = "/v1/chat/completions"

QUESTION = "What is the capital of France?"
SPAN = {
    "input": QUESTION,
    "output": "Paris is the capital of France",
    "expected": "Paris",
    "metadata": {"topic": "geography"},
}


def endpoint_put(api: Api, **body):
    return api.client.put("/v1/llm_endpoint", json.dumps(body), content_type="application/json")


@pytest.fixture
def endpoint(owner, fake_openai):  # noqa: F811
    """The organization's endpoint is the fake server, set through the API; returns the server."""
    response = endpoint_put(owner, base_url=fake_openai.url, api_key=ORG_KEY, default_model=DEFAULT_MODEL)
    assert response.status_code == 200, response.content
    return fake_openai


def ended(row_id: str, **fields) -> dict:
    return {"id": row_id, **SPAN, "metrics": {"start": 1, "end": 2}, **fields}


def rule_create(api, project, *refs, name="llm rule") -> dict:
    response = api.post("/v1/project_score", rule_body(project, name=name, scorers=list(refs)))
    assert response.status_code == 200, response.content
    return response.json()


def runs_of(row_id: str) -> list[ScoringRun]:
    return list(ScoringRun.objects.filter(span__row_id=row_id).order_by("pk"))


def scoring_span(run: ScoringRun) -> Span:
    return Span.objects.get(project_id=run.project_id, row_id=run.scoring_span_row_id)


def stored(row_id: str) -> Span:
    return Span.objects.get(row_id=row_id)


def score_live(owner, project, *refs, row_id="s1", **fields) -> ScoringRun:
    """A rule with these scorers, and one span logged under it; its (first) run, refreshed."""
    rule_create(owner, project, *refs)
    log(owner, project, ended(row_id, **fields))
    return runs_of(row_id)[0]


# --- autoevals' Factuality through the organization's endpoint -------------------------------


def test_factuality_asks_the_organizations_endpoint_with_its_key_model_and_the_select_choice_tool(
    owner, project, endpoint, run_inline
):
    endpoint.default = Answer("C", reasons="Both say Paris.")
    run = score_live(owner, project, FACTUALITY)

    (request,) = endpoint.requests
    assert request.path == CHAT and request.authorization == f"Bearer {ORG_KEY}"
    assert request.model == DEFAULT_MODEL
    assert request.body["tool_choice"] == {"type": "function", "function": {"name": "select_choice"}}
    assert [t["name"] for t in request.tools] == ["select_choice"]
    assert request.choices == ["A", "B", "C", "D", "E"]
    (message,) = request.messages
    for value in (QUESTION, SPAN["output"], SPAN["expected"]):
        assert value in message["content"]

    assert (run.status, run.scores, run.error) == (ScoringRun.Status.DONE, {"Factuality": 1}, "")
    assert stored("s1").scores == {"Factuality": 1}
    child = scoring_span(run)
    assert child.span_attributes == {"name": "Factuality", "type": "score", "purpose": "scorer"}
    assert child.output == {"score": 1} and child.metadata == {"choice": "C", "rationale": "Both say Paris."}


def test_without_an_organization_endpoint_openai_base_url_and_key_are_used(
    owner,
    project,
    fake_openai,  # noqa: F811
    monkeypatch,
    settings,
    run_inline,
):
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    fake_openai.default = Answer("C")
    run = score_live(owner, project, FACTUALITY)

    (request,) = fake_openai.requests
    assert request.authorization == "Bearer sk-from-env"
    assert request.model == settings.SCORING_LLM_DEFAULT_MODEL
    assert run.status == ScoringRun.Status.DONE and stored("s1").scores == {"Factuality": 1}


def test_the_organizations_endpoint_wins_over_the_environment(
    owner, project, endpoint, monkeypatch, run_inline
):
    with FakeOpenAI() as environment_server:
        monkeypatch.setenv("OPENAI_BASE_URL", environment_server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        run = score_live(owner, project, FACTUALITY)
        assert environment_server.requests == []
    (request,) = endpoint.requests
    assert request.authorization == f"Bearer {ORG_KEY}" and run.status == ScoringRun.Status.DONE


def test_a_gpt_5_default_model_goes_through_the_responses_api(owner, project, fake_openai, org):  # noqa: F811
    response = endpoint_put(owner, base_url=fake_openai.url, api_key=ORG_KEY, default_model="gpt-5-mini")
    assert response.status_code == 200
    fake_openai.default = Answer("B", reasons="A subset.")
    outcome = scorers.run(scorers.resolve(FACTUALITY, organization=org), SPAN)

    (request,) = fake_openai.requests
    assert request.path == "/v1/responses" and request.model == "gpt-5-mini"
    assert request.choices == ["A", "B", "C", "D", "E"]
    assert outcome.scores == {"Factuality": 0.6} and outcome.metadata == {
        "choice": "B",
        "rationale": "A subset.",
    }


@pytest.mark.parametrize(("choice", "score"), [("A", 0.4), ("B", 0.6), ("C", 1), ("D", 0), ("E", 1)])
def test_each_factuality_choice_gives_its_score_with_choice_and_rationale_in_metadata(
    org, endpoint, choice, score
):
    endpoint.default = Answer(choice, reasons=f"Because {choice}.")
    outcome = scorers.run(scorers.resolve(FACTUALITY, organization=org), SPAN)
    assert outcome.error is None
    assert outcome.scores == {"Factuality": score}
    assert outcome.metadata == {"choice": choice, "rationale": f"Because {choice}."}


def test_closed_qa_gets_its_criteria_from_the_spans_metadata(org, endpoint):
    endpoint.default = Answer("Y")
    span = {**SPAN, "metadata": {"criteria": "Does it name a city?"}}
    outcome = scorers.run(scorers.resolve({"type": "global", "name": "ClosedQA"}, organization=org), span)
    assert outcome.scores == {"ClosedQA": 1}
    (request,) = endpoint.requests
    assert "Does it name a city?" in request.messages[0]["content"]


# --- Bad answers are errors -----------------------------------------------------------------


def test_a_choice_outside_the_offered_ones_errors_the_run_and_its_scoring_span(
    owner, project, endpoint, run_inline
):
    endpoint.default = Answer("Z")
    run = score_live(owner, project, FACTUALITY)

    assert run.status == ScoringRun.Status.ERROR and run.attempts == 1 and "'Z'" in run.error
    assert len(endpoint.requests) == 1
    child = scoring_span(run)
    assert child.error == run.error and child.scores is None and child.output is None
    assert stored("s1").scores is None


def test_an_answer_without_a_tool_call_errors_the_run(owner, project, endpoint, run_inline):
    endpoint.default = Answer(tool_call=False)
    run = score_live(owner, project, FACTUALITY)
    assert run.status == ScoringRun.Status.ERROR and "No tool call" in run.error
    assert scoring_span(run).error == run.error


# --- Our retry policy, not the library's -----------------------------------------------------

JUDGE_PROMPT = {
    "prompt": {
        "type": "chat",
        "messages": [
            {"role": "system", "content": "You grade answers to questions."},
            {
                "role": "user",
                "content": "Question: {{input}}\nAnswer: {{output}}\n"
                "Reference: {{expected}}\nContext: {{metadata}}",
            },
        ],
    },
    "options": {"model": "gpt-4o-mini", "params": {"temperature": 0}},
    "parser": {
        "type": "llm_classifier",
        "use_cot": True,
        "choice_scores": {"correct": 1, "partial": 0.5, "wrong": 0},
    },
}


def judge_create(api, project, *, slug="judge", prompt_data=None) -> dict:
    body = {
        "project_id": str(project.pk),
        "name": "Correctness judge",
        "slug": slug,
        "function_type": "scorer",
        "function_data": {"type": "prompt"},
        "prompt_data": prompt_data or JUDGE_PROMPT,
    }
    response = api.post("/v1/function", body)
    assert response.status_code == 200, response.content
    return response.json()


def judge_ref(api, project, **options) -> dict:
    return {"type": "function", "id": judge_create(api, project, **options)["id"]}


@pytest.fixture(params=["Factuality", "judge"])
def llm_ref(request, owner, project, endpoint):
    """An LLM-backed scorer of each kind: autoevals' Factuality, and a judge prompt function."""
    if request.param == "Factuality":
        endpoint.default = Answer("C")
        return FACTUALITY
    endpoint.default = Answer("correct")
    return judge_ref(owner, project)


@pytest.mark.parametrize(("status", "shown"), [(500, "500"), (503, "503"), (429, "429")])
def test_a_5xx_or_a_429_sends_the_run_back_to_pending_after_one_request(
    owner, project, endpoint, llm_ref, run_inline, status, shown
):
    # Five failures in a row: autoevals' own loop would sleep 0.15 s, 0.225 s, ... between them
    # (about 2 s for these five, 1000 s for 20) and end in success.
    endpoint.script(failures(5, status))
    rule_create(owner, project, llm_ref)
    started = time.monotonic()
    log(owner, project, ended("s1"))
    elapsed = time.monotonic() - started
    (run,) = runs_of("s1")

    assert len(endpoint.requests) == 1, [r.path for r in endpoint.requests]
    assert elapsed < 1.5
    assert run.status == ScoringRun.Status.PENDING and run.attempts == 1 and run.lease_token is None
    assert run.not_before > timezone.now()
    assert f"answered {shown}" in run.error
    assert run.scoring_span_row_id == "" and stored("s1").scores is None
    assert run_inline == [run.pk, run.pk]  # enqueued when the span ended, then again for the retry


def test_an_endpoint_slower_than_the_timeout_is_retried_then_errors_after_the_last_attempt(
    owner, project, endpoint, llm_ref, run_inline, settings
):
    settings.SCORING_LLM_TIMEOUT = 0.3
    settings.SCORING_MAX_ATTEMPTS = 2
    endpoint.default = Answer("C", delay=5)
    started = time.monotonic()
    run = score_live(owner, project, llm_ref)
    assert time.monotonic() - started < 2.5
    assert run.status == ScoringRun.Status.PENDING and run.attempts == 1
    assert run.error == "The LLM endpoint did not answer within 0.3 s."

    ScoringRun.objects.filter(pk=run.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    run_inline.clear()
    from scoring import services

    services.runs_execute(run_ids=[run.pk])
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.ERROR and run.attempts == 2
    assert run.error == "The LLM endpoint did not answer within 0.3 s."
    assert scoring_span(run).error == run.error and stored("s1").scores is None
    assert len(endpoint.requests) == 2


def test_failures_then_a_success_within_the_attempts_end_done(
    owner, project, endpoint, llm_ref, run_inline, settings
):
    settings.SCORING_MAX_ATTEMPTS = 3
    settings.SCORING_RETRY_BACKOFF_SECONDS = 0  # run_inline then runs each retry at once
    endpoint.script(Fail(502), Fail(429))
    run = score_live(owner, project, llm_ref)
    run.refresh_from_db()

    assert len(endpoint.requests) == 3
    assert run.status == ScoringRun.Status.DONE and run.attempts == 3 and run.error == ""
    (name,) = run.scores
    assert run.scores[name] == 1 and stored("s1").scores == {name: 1}
    assert scoring_span(run).error is None


# --- LLM-as-a-judge prompt functions ---------------------------------------------------------


def test_a_judge_renders_its_messages_with_the_spans_values_and_sends_its_model_and_params(
    owner, project, endpoint, run_inline
):
    endpoint.default = Answer("partial")
    fields = {
        "input": {"question": QUESTION, "lang": "en"},
        "output": "Paris, I think",
        "expected": "Paris",
        "metadata": {"topic": "geography", "difficulty": 1},
    }
    run = score_live(owner, project, judge_ref(owner, project), **fields)

    span = stored("s1")
    assert (span.input, span.metadata) == (fields["input"], fields["metadata"])
    (request,) = endpoint.requests
    assert request.path == CHAT and request.authorization == f"Bearer {ORG_KEY}"
    assert request.model == "gpt-4o-mini" and request.body["temperature"] == 0
    assert request.body["tool_choice"] == {"type": "function", "function": {"name": "select_choice"}}
    assert sorted(request.choices) == ["correct", "partial", "wrong"]
    assert request.messages == [
        {"role": "system", "content": "You grade answers to questions."},
        {
            "role": "user",
            # Objects as JSON, in the order the database keeps their keys (jsonb sorts them).
            "content": f"Question: {json.dumps(span.input)}\nAnswer: Paris, I think\nReference: Paris\n"
            f"Context: {json.dumps(span.metadata)}",
        },
    ]
    assert run.status == ScoringRun.Status.DONE and run.scores == {"Correctness judge": 0.5}


def test_a_judge_offers_its_choices_in_the_order_they_were_given(owner, project, endpoint, run_inline):
    """The order of choice_scores is the user's (a scale, from best to worst), and reaches the
    LLM as the enum of select_choice: it must survive storage (PostgreSQL's jsonb sorts keys)."""
    choices = {"yes": 1, "somewhat": 0.5, "no": 0}
    prompt_data = {**JUDGE_PROMPT, "parser": {**JUDGE_PROMPT["parser"], "choice_scores": choices}}
    judge = judge_create(owner, project, prompt_data=prompt_data)
    score_live(owner, project, {"type": "function", "id": judge["id"]})
    (request,) = endpoint.requests
    assert request.choices == list(choices)
    shown = owner.get(f"/v1/function/{judge['id']}").json()
    assert list(shown["prompt_data"]["parser"]["choice_scores"]) == list(choices)


@pytest.mark.parametrize(("choice", "score"), [("correct", 1), ("partial", 0.5), ("wrong", 0)])
def test_a_judges_choice_is_scored_by_its_choice_scores_with_choice_and_rationale_in_metadata(
    owner, project, endpoint, run_inline, choice, score
):
    endpoint.default = Answer(choice, reasons="Step by step: it names Paris.")
    run = score_live(owner, project, judge_ref(owner, project))

    assert run.status == ScoringRun.Status.DONE and run.scores == {"Correctness judge": score}
    assert stored("s1").scores == {"Correctness judge": score}
    child = scoring_span(run)
    assert child.span_attributes == {"name": "Correctness judge", "type": "score", "purpose": "scorer"}
    assert child.output == {"score": score}
    assert child.metadata == {"choice": choice, "rationale": "Step by step: it names Paris."}
    assert "reasons" in endpoint.requests[0].parameters["properties"]


def test_a_judge_records_its_tokens_and_estimated_cost_in_the_scoring_span_metrics(
    owner, project, endpoint, run_inline, settings
):
    endpoint.default = Answer("correct", prompt_tokens=1200, completion_tokens=300)
    run = score_live(owner, project, judge_ref(owner, project))

    input_price, output_price = settings.SCORING_LLM_PRICES["gpt-4o-mini"]
    metrics = scoring_span(run).metrics
    assert metrics["prompt_tokens"] == 1200 and metrics["completion_tokens"] == 300
    assert metrics["estimated_cost"] == pytest.approx((1200 * input_price + 300 * output_price) / 1_000_000)
    assert metrics["start"] <= metrics["end"]


def test_token_counts_that_are_not_numbers_count_as_zero_and_keep_the_score(
    owner, project, endpoint, run_inline
):
    """An endpoint's odd usage report (the SDK passes it through as sent) must not cost the
    score, nor the other runs of the worker's batch."""
    endpoint.default = Answer("correct", prompt_tokens=[11], completion_tokens=True)
    run = score_live(owner, project, judge_ref(owner, project))
    assert run.status == ScoringRun.Status.DONE and run.scores == {"Correctness judge": 1}
    metrics = scoring_span(run).metrics
    assert (metrics["prompt_tokens"], metrics["completion_tokens"], metrics["estimated_cost"]) == (0, 0, 0)


def test_a_judge_without_a_model_uses_the_endpoints_default_and_has_no_cost_for_an_unpriced_model(
    owner, project, endpoint, run_inline
):
    endpoint.default = Answer("correct", prompt_tokens=5, completion_tokens=2)
    prompt_data = {**JUDGE_PROMPT, "options": {}}
    run = score_live(owner, project, judge_ref(owner, project, prompt_data=prompt_data))

    (request,) = endpoint.requests
    assert request.model == DEFAULT_MODEL and "temperature" not in request.body
    metrics = scoring_span(run).metrics
    assert (metrics["prompt_tokens"], metrics["completion_tokens"]) == (5, 2)
    assert "estimated_cost" not in metrics


def test_a_judge_without_chain_of_thought_asks_for_the_choice_alone(owner, project, endpoint, run_inline):
    endpoint.default = Answer("wrong", reasons=None)
    prompt_data = {**JUDGE_PROMPT, "parser": {**JUDGE_PROMPT["parser"], "use_cot": False}}
    run = score_live(owner, project, judge_ref(owner, project, prompt_data=prompt_data))

    (request,) = endpoint.requests
    assert list(request.parameters["properties"]) == ["choice"]
    assert request.parameters["required"] == ["choice"]
    assert run.scores == {"Correctness judge": 0}
    assert scoring_span(run).metadata == {"choice": "wrong", "rationale": None}


def test_a_judge_choosing_outside_its_choices_errors_the_run(owner, project, endpoint, run_inline):
    endpoint.default = Answer("maybe")
    run = score_live(owner, project, judge_ref(owner, project))
    assert run.status == ScoringRun.Status.ERROR
    assert run.error == "The judge chose 'maybe', which is not one of ['correct', 'partial', 'wrong']."
    assert scoring_span(run).error == run.error and stored("s1").scores is None


def test_a_judge_answer_without_a_tool_call_errors_the_run(owner, project, endpoint, run_inline):
    endpoint.default = Answer(tool_call=False)
    run = score_live(owner, project, judge_ref(owner, project))
    assert run.status == ScoringRun.Status.ERROR
    assert run.error == "The judge's answer has no select_choice call with a choice."


_FRESH_PROCESS = """
import django, json, sys
django.setup()
from scoring.scorers import llm
prompt_data = json.loads(sys.argv[1])
score = llm.judge(prompt_data, llm.Endpoint(sys.argv[2], "sk-test", "fake-judge"))
print(score(input="Is 2 < 3?", output='{"answer": "yes & <b>sure</b>"}', expected=None, metadata=None).score)
"""


def test_a_judge_sends_quotes_and_markup_unescaped_even_in_a_process_that_never_imported_autoevals(
    fake_openai,  # noqa: F811
):
    """A worker whose first run is a judge has not imported autoevals, which switches chevron's
    HTML escaping off for the whole process: the judge must not depend on it."""
    fake_openai.default = Answer("correct")
    prompt_data = {**JUDGE_PROMPT, "prompt": {"type": "chat", "messages": [
        {"role": "user", "content": "Q: {{input}} A: {{output}}"}]}}  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "onlinescore.settings.test",
        "PYTHONPATH": str(root),
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FRESH_PROCESS), json.dumps(prompt_data), fake_openai.url],
        env=environment, cwd=root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (request,) = fake_openai.requests
    assert request.messages == [
        {"role": "user", "content": 'Q: Is 2 < 3? A: {"answer": "yes & <b>sure</b>"}'}
    ]


# --- EmbeddingSimilarity and Moderation ------------------------------------------------------


def test_embedding_similarity_scores_the_cosine_of_the_endpoints_embeddings(
    owner, project, endpoint, run_inline
):
    # cos = 0.9; autoevals scales it from its expected_min, 0.7, to 1: (0.9 - 0.7) / 0.3.
    endpoint.embeddings = {"Paris": [1.0, 0.0], "Paris, France": [0.9, 0.19**0.5]}
    ref = {"type": "global", "name": "EmbeddingSimilarity"}
    run = score_live(owner, project, ref, output="Paris", expected="Paris, France")

    assert run.status == ScoringRun.Status.DONE, run.error
    assert run.scores["EmbeddingSimilarity"] == pytest.approx((0.9 - 0.7) / 0.3)
    requests = endpoint.requests_to("/v1/embeddings")
    assert sorted(r.body["input"] for r in requests) == ["Paris", "Paris, France"]
    assert all(r.authorization == f"Bearer {ORG_KEY}" for r in requests)


def test_embedding_similarity_asks_for_an_embedding_model_not_the_chat_model(org, endpoint):
    ref = {"type": "global", "name": "EmbeddingSimilarity"}
    outcome = scorers.run(scorers.resolve(ref, organization=org), {**SPAN, "output": "a", "expected": "b"})
    assert outcome.error is None
    assert {r.model for r in endpoint.requests_to("/v1/embeddings")} == {
        autoevals.oai.get_default_embedding_model()
    }


def test_embedding_similarity_keeps_no_embeddings_in_the_worker_after_scoring(org, endpoint):
    """autoevals caches every embedding in a class-level dict that is never emptied: in a
    worker scoring spans for weeks, that is every output and expected ever scored."""
    scorer = scorers.resolve({"type": "global", "name": "EmbeddingSimilarity"}, organization=org)
    before = len(autoevals.EmbeddingSimilarity._CACHE)
    for i in range(3):
        assert scorers.run(scorer, {**SPAN, "output": f"out {i}", "expected": f"exp {i}"}).error is None
    assert len(autoevals.EmbeddingSimilarity._CACHE) == before


def test_answer_similarity_asks_for_an_embedding_model_not_the_chat_model(org, endpoint):
    ref = {"type": "global", "name": "AnswerSimilarity"}
    outcome = scorers.run(scorers.resolve(ref, organization=org), {**SPAN, "output": "a", "expected": "b"})
    assert outcome.error is None
    assert {r.model for r in endpoint.requests_to("/v1/embeddings")} == {
        autoevals.oai.get_default_embedding_model()
    }


def test_a_rag_scorer_calls_its_own_tools_through_the_endpoint_with_the_context_from_metadata(org, endpoint):
    # ContextEntityRecall: the entities of expected, then of the context, matched by embeddings.
    endpoint.script(
        Answer(arguments={"entities": ["Paris", "France"]}),
        Answer(arguments={"entities": ["Paris", "Seine"]}),
    )
    endpoint.embeddings = {"Paris": [1, 0, 0], "France": [0, 1, 0], "Seine": [0, 0, 1]}
    span = {**SPAN, "expected": "Paris, France", "metadata": {"context": "Paris lies on the Seine."}}
    outcome = scorers.run(
        scorers.resolve({"type": "global", "name": "ContextEntityRecall"}, organization=org), span
    )

    assert outcome.error is None
    assert outcome.scores == {"ContextEntityRecall": 0.5}  # Paris found, France not
    assert outcome.metadata == {
        "context_entities": ["Paris", "Seine"],
        "expected_entities": ["Paris", "France"],
    }
    extractions = endpoint.requests_to(CHAT)
    assert [r.forced_tool for r in extractions] == ["extract_entities"] * 2
    assert {r.model for r in extractions} == {DEFAULT_MODEL}
    assert extractions[1].messages[0]["content"].rstrip().endswith("text: Paris lies on the Seine.\noutput:")
    assert all(r.authorization == f"Bearer {ORG_KEY}" for r in endpoint.requests)


@pytest.mark.parametrize(
    ("output", "flagged", "score"), [("Have a nice day", False, 1), ("You fool", True, 0)]
)
def test_moderation_scores_0_for_flagged_output_and_1_otherwise(
    owner, project, endpoint, run_inline, output, flagged, score
):
    endpoint.flagged = {"You fool"}
    run = score_live(owner, project, {"type": "global", "name": "Moderation"}, output=output)

    assert run.status == ScoringRun.Status.DONE, run.error
    assert run.scores == {"Moderation": score}
    (request,) = endpoint.requests_to("/v1/moderations")
    assert request.body["input"] == output and request.authorization == f"Bearer {ORG_KEY}"
    assert scoring_span(run).metadata["category_scores"]["harassment"] == (0.97 if flagged else 0.01)


# --- No endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Factuality", "judge"])
def test_a_rule_with_an_llm_scorer_cannot_be_saved_without_an_endpoint(owner, project, kind):
    ref = FACTUALITY if kind == "Factuality" else judge_ref(owner, project)
    response = owner.post("/v1/project_score", rule_body(project, scorers=[ref]))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "config.online.scorers[0]"
    assert "no endpoint is configured" in error["message"] and "PUT /v1/llm_endpoint" in error["message"]


def test_a_rule_whose_endpoint_was_removed_errors_on_the_scoring_span(
    owner, project, org, endpoint, run_inline
):
    rule_create(owner, project, FACTUALITY, judge_ref(owner, project))
    LLMEndpoint.objects.filter(organization=org).delete()
    log(owner, project, ended("s1"))

    runs = runs_of("s1")
    assert [r.status for r in runs] == [ScoringRun.Status.ERROR] * 2
    for run in runs:
        assert "no endpoint is configured" in run.error
        assert scoring_span(run).error == run.error
    assert endpoint.requests == [] and stored("s1").scores is None


# --- The endpoint setting ---------------------------------------------------------------------


def test_the_endpoints_key_is_stored_encrypted_and_never_returned(owner, org, fake_openai):  # noqa: F811
    response = endpoint_put(owner, base_url=fake_openai.url, api_key=ORG_KEY, default_model=DEFAULT_MODEL)
    assert response.json() == {
        "configured": True, "base_url": fake_openai.url, "default_model": DEFAULT_MODEL, "api_key_set": True
    }  # fmt: skip
    stored_key = LLMEndpoint.objects.get(organization=org).api_key_encrypted
    assert ORG_KEY not in stored_key and stored_key
    assert ORG_KEY not in owner.get("/v1/llm_endpoint").content.decode()


def test_a_new_base_url_needs_the_key_again_else_the_stored_one_would_go_there(owner, org, fake_openai):  # noqa: F811
    """Whoever points the endpoint elsewhere gives the key: the stored one is never sent to an
    address it was not set for. Other changes keep it."""
    assert (
        endpoint_put(
            owner, base_url=fake_openai.url, api_key=ORG_KEY, default_model=DEFAULT_MODEL
        ).status_code
        == 200
    )
    elsewhere = fake_openai.url.replace("/v1", "/other/v1")
    response = endpoint_put(owner, base_url=elsewhere, default_model=DEFAULT_MODEL)
    assert response.status_code == 400 and response.json()["error"]["field"] == "api_key"
    assert LLMEndpoint.objects.get(organization=org).base_url == fake_openai.url
    assert endpoint_put(owner, base_url=fake_openai.url, default_model="gpt-5").status_code == 200
    assert (
        endpoint_put(owner, base_url=elsewhere, api_key="sk-new", default_model=DEFAULT_MODEL).status_code
        == 200
    )
    endpoint = LLMEndpoint.objects.get(organization=org)
    assert endpoint.base_url == elsewhere and llm.decrypt(endpoint.api_key_encrypted) == "sk-new"


def test_only_owners_can_see_or_set_the_endpoint(org, fake_openai):  # noqa: F811
    member = Api(member_key(org, role=Membership.Role.MEMBER))
    response = endpoint_put(member, base_url=fake_openai.url, api_key="sk-x", default_model=DEFAULT_MODEL)
    assert response.status_code == 403
    assert member.get("/v1/llm_endpoint").status_code == 403
    assert not LLMEndpoint.objects.filter(organization=org).exists()
