"""Scorers: the return contract (`normalize`), running one (`run`), references, and the built-ins."""

import concurrent.futures
import math
import signal
import time
from types import SimpleNamespace

import autoevals
import pytest

from onlinescore.exceptions import ValidationError
from scoring import scorers
from scoring.scorers import Scorer, ScorerError, TransientScorerError, builtin

# --- normalize ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "scores", "metadata"),
    [
        (0.25, {"s": 0.25}, {}),
        (0, {"s": 0}, {}),
        (1, {"s": 1}, {}),
        (True, {"s": 1.0}, {}),
        (False, {"s": 0.0}, {}),
        (None, {"s": None}, {}),
        ({"score": 0.5}, {"s": 0.5}, {}),
        ({"score": 0.5, "name": "mine", "metadata": {"why": "x"}}, {"mine": 0.5}, {"why": "x"}),
        (autoevals.Score(name="Fact", score=0.75, metadata={"k": 1}), {"Fact": 0.75}, {"k": 1}),
        (SimpleNamespace(score=0.5), {"s": 0.5}, {}),
        ([{"score": 0.5}], {"s": 0.5}, {}),
        (
            [{"name": "a", "score": 0.1, "metadata": {"m": 1}}, {"name": "b", "score": None}],
            {"a": 0.1, "b": None},
            {"a": {"m": 1}},
        ),
    ],
)
def test_normalize_accepts_every_shape_of_the_contract(raw, scores, metadata):
    assert scorers.normalize(raw, "s") == (scores, metadata)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("good", "'good'; expected a number between 0 and 1"),
        (1.5, "returned 1.5; a score lies between 0 and 1"),
        (-0.1, "returned -0.1; a score lies between 0 and 1"),
        (math.nan, "returned nan; a score lies between 0 and 1"),
        (math.inf, "returned inf; a score lies between 0 and 1"),
        ({"value": 1}, "a score object has 'score', 'name', 'metadata'"),
        ({"score": 1, "extra": 2}, "a score object has 'score', 'name', 'metadata'"),
        ([], "The scorer returned an empty list."),
        ([{"name": "a", "score": 1}, {"name": "a", "score": 0}], "two scores named 'a'"),
        ([{"score": 1}, {"score": 0}], "Each of several scores needs a 'name'."),
        ({"score": 1, "metadata": "notes"}, "Score metadata must be an object"),
        ([0.5, "x"], "needs a 'name'"),
    ],
)
def test_normalize_rejects_garbage_with_a_message_saying_what_is_wrong(raw, message):
    with pytest.raises(ScorerError) as caught:
        scorers.normalize(raw, "s")
    assert message in str(caught.value)


def test_normalize_cuts_long_garbage_in_its_message():
    with pytest.raises(ScorerError) as caught:
        scorers.normalize("x" * 10_000, "s")
    assert len(str(caught.value)) < 300 and "…" in str(caught.value)


# --- run ---------------------------------------------------------------------------------

SPAN = {"input": "q", "output": "a", "expected": "a", "metadata": {"m": 1}, "scores": {"other": 1}}


def test_run_calls_the_scorer_with_the_four_fields_and_records_them_as_its_input():
    seen = {}

    def fn(**kwargs):
        seen.update(kwargs)
        return 0.5

    outcome = scorers.run(Scorer(name="s", fn=fn), SPAN)
    expected_input = {"input": "q", "output": "a", "expected": "a", "metadata": {"m": 1}}
    assert seen == expected_input and outcome.input == expected_input
    assert outcome.scores == {"s": 0.5} and outcome.output == {"score": 0.5} and outcome.error is None
    assert outcome.start <= outcome.end


def test_the_output_of_several_scores_has_one_entry_per_name():
    outcome = scorers.run(
        Scorer(name="s", fn=lambda **_: [{"name": "a", "score": 0}, {"name": "b", "score": 1}]), {}
    )
    assert outcome.output == {"a": {"score": 0}, "b": {"score": 1}}


def test_one_score_named_otherwise_than_its_scorer_is_output_under_its_name():
    outcome = scorers.run(Scorer(name="s", fn=lambda **_: {"name": "other", "score": 1}), {})
    assert outcome.scores == {"other": 1} and outcome.output == {"other": {"score": 1}}


def test_run_turns_an_exception_into_an_error_and_never_raises():
    def fn(**_):
        raise ValueError("bad input")

    outcome = scorers.run(Scorer(name="s", fn=fn), SPAN)
    assert outcome.error == "ValueError: bad input" and not outcome.transient and outcome.scores == {}


def test_run_reports_garbage_as_an_error():
    outcome = scorers.run(Scorer(name="s", fn=lambda **_: "great"), SPAN)
    assert "expected a number between 0 and 1" in outcome.error and not outcome.transient


def test_run_reports_a_result_its_scoring_span_could_not_store_as_an_error():
    """Checked as the scoring span's row will be, so that it fails this run, not the batch."""
    result = SimpleNamespace(score=1, metadata=None, metrics={"tokens": [3]})
    outcome = scorers.run(Scorer(name="s", fn=lambda **_: result), SPAN)
    assert outcome.error == (
        "The scorer returned a value that cannot be stored: metrics.tokens: A metric must be a number or null."
    )
    assert outcome.scores == {} and outcome.metrics == {} and not outcome.transient


@pytest.mark.parametrize(
    "exc",
    [
        TransientScorerError("rate limited"),
        ConnectionError("reset"),
        TimeoutError("slow"),
        type("APIStatusError", (Exception,), {"status_code": 503})("unavailable"),
        type("APIStatusError", (Exception,), {"status_code": 429})("slow down"),
    ],
)
def test_network_errors_5xx_and_429_are_transient(exc):
    def fn(**_):
        raise exc

    assert scorers.run(Scorer(name="s", fn=fn), SPAN).transient


def test_a_4xx_answer_is_not_transient():
    def fn(**_):
        raise type("APIStatusError", (Exception,), {"status_code": 400})("bad request")

    outcome = scorers.run(Scorer(name="s", fn=fn), SPAN)
    assert not outcome.transient and outcome.error == "APIStatusError: bad request"


def test_a_blocking_scorer_that_overruns_its_timeout_is_a_transient_error():
    def slow(**_):
        time.sleep(0.5)
        return 1

    started = time.monotonic()
    outcome = scorers.run(Scorer(name="slow", fn=slow, blocking=True), SPAN, timeout=0.05)
    assert time.monotonic() - started < 0.4
    assert outcome.transient and outcome.error == "The scorer timed out after 0.05 s."


def test_a_blocking_scorer_within_its_timeout_scores():
    outcome = scorers.run(Scorer(name="quick", fn=lambda **_: 0.5, blocking=True), SPAN, timeout=5)
    assert outcome.scores == {"quick": 0.5} and outcome.error is None


# --- references --------------------------------------------------------------------------


def test_reference_key_is_canonical_per_kind():
    assert scorers.reference_key({"type": "global", "name": "ExactMatch"}) == "global:ExactMatch"
    assert scorers.reference_key({"type": "function", "id": "f1"}) == "function:f1"
    assert scorers.reference_key({"type": "function", "id": "f1", "version": "3"}) == "function:f1@3"
    assert scorers.reference_key({"type": "function", "id": "f1", "version": None}) == "function:f1"


def test_references_clean_keeps_only_the_reference_fields():
    refs = [
        {"type": "global", "name": "ExactMatch", "function_type": "scorer"},
        {"type": "global", "name": "ValidJSON"},
    ]
    assert scorers.references_clean(refs, field="scorers") == [
        {"type": "global", "name": "ExactMatch"},
        {"type": "global", "name": "ValidJSON"},
    ]


@pytest.mark.parametrize(
    ("refs", "field", "message"),
    [
        ([], "scorers", "at least one scorer"),
        ("ExactMatch", "scorers", "at least one scorer"),
        (["ExactMatch"], "scorers[0]", '{"type": "global"'),
        ([{"type": "prompt", "name": "x"}], "scorers[0]", '{"type": "global"'),
        ([{"type": "global", "name": "Nope"}], "scorers[0]", "Unknown scorer 'Nope'"),
        ([{"type": "global", "name": 3}], "scorers[0]", "Unknown scorer 3"),
        ([{"type": "global", "name": "ExactMatch", "id": "x"}], "scorers[0]", "Unknown field 'id'"),
        (
            [{"type": "global", "name": "ExactMatch", "function_type": "llm"}],
            "scorers[0].function_type",
            "Only scorers",
        ),
        ([{"type": "function", "id": "f-1"}], "scorers[0]", "Unknown function 'f-1'"),
        (
            [{"type": "global", "name": "ExactMatch"}, {"type": "global", "name": "ExactMatch"}],
            "scorers[1]",
            "listed twice",
        ),
    ],
)
def test_references_clean_names_the_bad_reference(refs, field, message):
    with pytest.raises(ValidationError) as caught:
        scorers.references_clean(refs, field="scorers")
    assert caught.value.details["field"] == field
    assert message in caught.value.message


# --- the built-ins -----------------------------------------------------------------------

SAMPLES = [
    ("ExactMatch", autoevals.ExactMatch, {"input": "q", "output": "Paris", "expected": "Paris"}),
    ("ExactMatch", autoevals.ExactMatch, {"input": "q", "output": "Paris", "expected": "paris"}),
    ("ExactMatch", autoevals.ExactMatch, {"input": None, "output": {"a": [1, 2]}, "expected": {"a": [1, 2]}}),
    ("Levenshtein", autoevals.Levenshtein, {"input": "q", "output": "kitten", "expected": "sitting"}),
    ("Levenshtein", autoevals.Levenshtein, {"input": "q", "output": "", "expected": "abc"}),
    ("NumericDiff", autoevals.NumericDiff, {"input": None, "output": 10, "expected": 12}),
    ("NumericDiff", autoevals.NumericDiff, {"input": None, "output": 0, "expected": 0}),
    (
        "JSONDiff",
        autoevals.JSONDiff,
        {"input": None, "output": {"a": 1, "b": "x"}, "expected": {"a": 1, "b": "y"}},
    ),
    ("JSONDiff", autoevals.JSONDiff, {"input": None, "output": '{"a": [1, 2]}', "expected": {"a": [1, 3]}}),
    (
        "ListContains",
        autoevals.ListContains,
        {"input": None, "output": ["paris", "rome"], "expected": ["Paris", "Berlin"]},
    ),
]


@pytest.mark.parametrize(("name", "cls", "fields"), SAMPLES)
def test_each_comparison_builtin_gives_autoevals_own_value(name, cls, fields):
    expected = cls().eval(output=fields["output"], expected=fields["expected"], input=fields["input"])
    outcome = scorers.run(builtin.REGISTRY[name], {**fields, "metadata": {"m": 1}})
    assert outcome.error is None
    assert outcome.scores == {name: expected.score}
    assert outcome.output == {"score": expected.score}


@pytest.mark.parametrize("output", ['{"a": 1}', "[1, 2]", "{a: 1}", "not json", {"a": 1}, None])
def test_valid_json_gives_autoevals_own_value_and_ignores_expected(output):
    expected = autoevals.ValidJSON().eval(output=output)
    # `expected` would be a JSON schema to autoevals: a schema this output fails must not count.
    span = {"input": None, "output": output, "expected": {"type": "number"}, "metadata": None}
    outcome = scorers.run(builtin.REGISTRY["ValidJSON"], span)
    assert outcome.error is None and outcome.scores == {"ValidJSON": expected.score}


def test_the_valid_json_samples_cover_both_answers():
    values = {autoevals.ValidJSON().eval(output=o).score for o in ('{"a": 1}', "not json")}
    assert values == {0, 1}


def test_a_builtin_that_cannot_compare_reports_an_error():
    outcome = scorers.run(builtin.REGISTRY["Levenshtein"], {"output": "a", "expected": None})
    assert outcome.error == "ValueError: LevenshteinScorer requires an expected value"


def test_a_local_scorer_that_computes_too_long_is_stopped_with_an_error():
    def forever(**_):
        while True:
            pass

    started = time.monotonic()
    outcome = scorers.run(Scorer(name="forever", fn=forever), SPAN, timeout=0.2)
    assert time.monotonic() - started < 5
    assert outcome.error == "The scorer computed for more than 0.2 s of CPU time and was stopped."
    assert not outcome.transient and outcome.scores == {}


def test_a_local_scorer_that_catches_every_exception_is_stopped_all_the_same():
    def stubborn(**_):
        while True:
            try:
                while True:
                    pass
            except Exception:  # noqa: BLE001 -- what careless scorer code does
                continue

    outcome = scorers.run(Scorer(name="stubborn", fn=stubborn), SPAN, timeout=0.2)
    assert outcome.error == "The scorer computed for more than 0.2 s of CPU time and was stopped."


def test_the_cpu_timer_is_disarmed_after_each_local_scorer_even_one_that_fails():
    for fn in (lambda **_: 1, lambda **_: 1 / 0):
        scorers.run(Scorer(name="s", fn=fn), SPAN, timeout=0.2)
        assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)


def test_a_local_scorer_runs_outside_the_main_thread_without_the_cpu_limit():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(
            scorers.run, builtin.REGISTRY["ExactMatch"], {"output": 1, "expected": 1}
        ).result()
    assert outcome.error is None and outcome.scores == {"ExactMatch": 1}


@pytest.mark.parametrize(
    ("name", "output", "expected", "message"),
    [
        ("Levenshtein", "a" * 50_000, "b" * 50_000, "Levenshtein compares every character"),
        ("JSONDiff", {"text": "a" * 50_000}, {"text": "b" * 50_000}, "Levenshtein compares every character"),
        ("ListContains", ["x"] * 501, ["y"] * 501, "ListContains compares every item"),
    ],
)
def test_builtins_refuse_inputs_whose_c_code_could_not_be_stopped(name, output, expected, message):
    started = time.monotonic()
    outcome = scorers.run(builtin.REGISTRY[name], {"output": output, "expected": expected})
    assert time.monotonic() - started < 1
    assert message in outcome.error and "more than the" in outcome.error
    assert not outcome.transient


def test_builtins_compare_long_inputs_within_the_bound():
    outcome = scorers.run(builtin.REGISTRY["Levenshtein"], {"output": "a" * 20_000, "expected": "a" * 19_000})
    assert outcome.error is None and outcome.scores == {"Levenshtein": 0.95}


def test_every_builtin_resolves_by_its_name():
    assert set(builtin.REGISTRY) == {
        "ExactMatch",
        "Levenshtein",
        "NumericDiff",
        "JSONDiff",
        "ListContains",
        "ValidJSON",
    }
    for name, scorer in builtin.REGISTRY.items():
        assert scorers.resolve({"type": "global", "name": name}) is scorer and scorer.name == name
