"""The trigger: what each rule decides about a span when it ends, and the runs it creates."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from projects.ingest.services import logs_ingest
from projects.models import APIKey, Span
from projects.signals import spans_ended
from scoring import engine, services
from scoring.engine import sampled
from scoring.models import Decision, Rule, RuleSet, ScoringRun, SpanDecisions
from scoring.services import runs
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}


@pytest.fixture
def enqueue_calls(monkeypatch):
    """Each call of the enqueue, as its list of run ids. Nothing reaches Redis."""
    calls = []

    def record(run_ids, *, delay=None):
        calls.append(list(run_ids))
        return True

    monkeypatch.setattr(runs, "runs_enqueue", record)
    return calls


@pytest.fixture
def make_rule(owner, org, project):
    key = APIKey.objects.select_related("user").get(organization=org)

    def make(name="rule", **online) -> Rule:
        config = {"sampling_rate": 1, "scorers": [EXACT], **online}
        return services.rule_create(
            project=project, name=name, description="", online=config, run_as_user=key.user, run_as_key=key
        )

    return make


def log(project, *rows):
    return logs_ingest(principal=None, rows=list(rows), project=project)


def span(project, row_id) -> Span:
    return Span.objects.get(project=project, row_id=row_id)


def decisions(project, row_id) -> dict:
    return SpanDecisions.objects.get(span=span(project, row_id)).decisions


def runs_of(project, row_id):
    return ScoringRun.objects.filter(span=span(project, row_id))


def ended(row_id, *, end=2.0, **fields):
    return {
        "id": row_id,
        "span_id": row_id,
        "root_span_id": row_id,
        "metrics": {"start": 1.0, "end": end},
        **fields,
    }


TRACE = [
    {"id": "root", "span_id": "s-root", "root_span_id": "s-root", "span_attributes": {"name": "task"},
     "metadata": {"env": "prod"}, "metrics": {"start": 1, "end": 5}},
    {"id": "child", "span_id": "s-child", "root_span_id": "s-root", "span_parents": ["s-root"],
     "span_attributes": {"name": "llm"}, "metadata": {"env": "prod"}, "metrics": {"start": 2, "end": 4}},
]  # fmt: skip

Q, NS, FO = Decision.QUEUED.value, Decision.NOT_SELECTED.value, Decision.FILTERED_OUT.value


@pytest.mark.parametrize(
    ("apply_to_root_span", "apply_to_span_names", "btql_filter", "root", "child"),
    [
        # neither selection: every span
        (False, [], "", Q, Q),
        (False, [], "metadata.env = 'prod'", Q, Q),
        (False, [], "metadata.env = 'dev'", FO, FO),
        # the root span only
        (True, [], "", Q, NS),
        (True, [], "metadata.env = 'prod'", Q, NS),
        (True, [], "metadata.env = 'dev'", FO, FO),
        # the named spans only
        (False, ["llm"], "", NS, Q),
        (False, ["llm"], "metadata.env = 'prod'", NS, Q),
        (False, ["llm"], "metadata.env = 'dev'", FO, FO),
        # the root span OR the named spans
        (True, ["llm"], "", Q, Q),
        (True, ["llm"], "metadata.env = 'prod'", Q, Q),
        (True, ["llm"], "metadata.env = 'dev'", FO, FO),
        # a name list that names the root span selects it as a named span
        (False, ["task"], "", Q, NS),
    ],
)
def test_rule_decides_by_filter_then_root_or_span_names(
    make_rule, project, enqueue_calls, apply_to_root_span, apply_to_span_names, btql_filter, root, child
):
    rule = make_rule(
        apply_to_root_span=apply_to_root_span,
        apply_to_span_names=apply_to_span_names,
        btql_filter=btql_filter,
    )
    log(project, *TRACE)
    assert decisions(project, "root") == {str(rule.pk): root}
    assert decisions(project, "child") == {str(rule.pk): child}
    for row_id, decision in (("root", root), ("child", child)):
        expected = [("global:ExactMatch", ScoringRun.Status.PENDING)] if decision == Q else []
        assert [(r.scorer_key, r.status) for r in runs_of(project, row_id)] == expected
        assert not runs_of(project, row_id).filter(rule__isnull=True).exists()


def test_the_rest_insert_api_triggers_the_rules(make_rule, owner, project, enqueue_calls):
    rule = make_rule(btql_filter="output = 'yes'")
    response = owner.post(
        f"/v1/project_logs/{project.pk}/insert",
        {"events": [ended("a", output="yes"), ended("b", output="no")]},
    )
    assert response.status_code == 200, response.content
    assert decisions(project, "a") == {str(rule.pk): Q}
    assert decisions(project, "b") == {str(rule.pk): FO}
    assert runs_of(project, "a").count() == 1 and runs_of(project, "b").count() == 0


def test_a_span_that_has_not_ended_is_not_decided_yet(make_rule, project, enqueue_calls):
    make_rule()
    log(project, {"id": "a", "metrics": {"start": 1}, "output": "x"})
    assert not SpanDecisions.objects.exists() and not ScoringRun.objects.exists()
    log(project, {"id": "a", "_is_merge": True, "metrics": {"end": 2}})
    assert (
        SpanDecisions.objects.filter(span=span(project, "a")).exists() and runs_of(project, "a").count() == 1
    )


# --- The row as it was at its end --------------------------------------------------------


def test_the_filter_sees_output_logged_before_the_end_in_the_same_batch(make_rule, project, enqueue_calls):
    rule = make_rule(btql_filter="output = 'yes'")
    log(
        project,
        {"id": "a", "input": "q", "metrics": {"start": 1}},
        {"id": "a", "_is_merge": True, "output": "yes"},
        {"id": "a", "_is_merge": True, "metrics": {"end": 2}},
    )
    assert decisions(project, "a") == {str(rule.pk): Q}
    assert runs_of(project, "a").count() == 1


def test_output_logged_after_the_end_in_the_same_batch_is_not_seen(make_rule, project, enqueue_calls):
    rule = make_rule(btql_filter="output = 'yes'")
    log(
        project,
        {"id": "a", "input": "q", "metrics": {"start": 1, "end": 2}},
        {"id": "a", "_is_merge": True, "output": "yes"},
    )
    assert span(project, "a").output == "yes"
    assert decisions(project, "a") == {str(rule.pk): FO}
    assert runs_of(project, "a").count() == 0


def test_span_updated_after_end_is_not_matched_nor_triggered_again(make_rule, project, enqueue_calls):
    rule = make_rule(btql_filter="output = 'yes'")
    log(project, {"id": "a", "input": "q", "metrics": {"start": 1, "end": 2}})
    first = SpanDecisions.objects.get(span=span(project, "a"))
    assert first.decisions == {str(rule.pk): FO}

    log(project, {"id": "a", "_is_merge": True, "output": "yes"})
    log(project, {"id": "a", "_is_merge": True, "metrics": {"end": 3}, "output": "yes"})
    assert span(project, "a").output == "yes" and span(project, "a").metrics["end"] == 3
    again = SpanDecisions.objects.get(span=span(project, "a"))
    assert (again.decisions, again.ended_at) == (first.decisions, first.ended_at)
    assert not ScoringRun.objects.exists() and enqueue_calls == []


def test_a_rule_created_after_the_end_does_not_score_later_updates(make_rule, project, enqueue_calls):
    log(project, ended("a", output="yes"))
    make_rule()
    log(project, {"id": "a", "_is_merge": True, "output": "yes!", "metrics": {"end": 9}})
    assert not SpanDecisions.objects.exists() and not ScoringRun.objects.exists()


# --- What is never evaluated -------------------------------------------------------------


def test_scoring_spans_are_never_evaluated(make_rule, project, enqueue_calls):
    make_rule(name="everything")
    make_rule(name="by name", apply_to_span_names=["ExactMatch"])
    scoring_span = ended(
        "score-1",
        span_parents=["x"],
        span_attributes={"name": "ExactMatch", "type": "score", "purpose": "scorer"},
    )
    log(project, scoring_span)
    assert span(project, "score-1").ended_at is not None
    assert not SpanDecisions.objects.exists() and not ScoringRun.objects.exists() and enqueue_calls == []


def test_disabled_rules_record_nothing(make_rule, project, enqueue_calls):
    disabled = make_rule(name="off", enabled=False)
    log(project, ended("a"))
    assert not SpanDecisions.objects.exists() and not ScoringRun.objects.exists()

    enabled = make_rule(name="on")
    log(project, ended("b"))
    assert decisions(project, "b") == {str(enabled.pk): Q}
    assert not ScoringRun.objects.filter(rule=disabled).exists()


def test_rules_of_another_project_do_not_see_the_span(make_rule, project, enqueue_calls):
    make_rule()
    other = ProjectFactory(organization=project.organization)
    log(other, ended("a"))
    assert not SpanDecisions.objects.exists() and not ScoringRun.objects.exists()


# --- Sampling ----------------------------------------------------------------------------

RULE_ID = uuid.UUID("6f1d9a52-3c1e-4d8e-9d40-1b9e1f0c2a77")
KEYS = [f"row-{i}" for i in range(5000)]


def test_spans_ended_under_the_same_rules_share_one_rule_set_and_hold_a_character_per_rule(
    make_rule, project, enqueue_calls
):
    first, second = make_rule("a", btql_filter="metadata.env = 'prod'"), make_rule("b")
    log(project, ended("x", metadata={"env": "prod"}), ended("y", metadata={"env": "dev"}))
    x, y = (SpanDecisions.objects.get(span=span(project, r)) for r in "xy")
    assert x.rule_set_id == y.rule_set_id and x.rule_set.rules == [str(first.pk), str(second.pk)]
    assert (x.codes, y.codes) == ("qq", "fq")
    assert y.decisions == {str(first.pk): FO, str(second.pk): Q}


def test_editing_a_rule_keeps_the_rule_set_and_adding_or_disabling_one_makes_another(
    make_rule, project, enqueue_calls
):
    first = make_rule("b")
    log(project, ended("1"))
    services.rule_update(rule=first, description="edited", online={"btql_filter": "metadata.env = 'prod'"})
    log(project, ended("2", metadata={"env": "prod"}))
    second = make_rule("a")  # sorts first: the rules' order changes with it
    log(project, ended("3"))
    services.rule_update(rule=second, online={"enabled": False})
    log(project, ended("4"))

    sets = [SpanDecisions.objects.get(span=span(project, r)).rule_set for r in "1234"]
    assert sets[0] == sets[1] == sets[3] and sets[2] != sets[0]
    assert sets[2].rules == [str(second.pk), str(first.pk)]
    assert [decisions(project, r) for r in "1234"] == [
        {str(first.pk): Q}, {str(first.pk): Q}, {str(second.pk): Q, str(first.pk): FO}, {str(first.pk): FO},
    ]  # fmt: skip


def test_a_rule_set_made_by_a_write_that_rolled_back_is_not_used_by_the_next_one(
    make_rule, project, enqueue_calls
):
    rule = make_rule()
    with pytest.raises(RuntimeError), transaction.atomic():
        log(project, ended("a"))
        raise RuntimeError("the write fails after the rules made their rule set")
    assert not RuleSet.objects.exists()
    log(project, ended("b"))
    assert decisions(project, "b") == {str(rule.pk): Q}


def test_sampling_is_deterministic():
    first = [sampled(RULE_ID, key, 0.5) for key in KEYS[:500]]
    assert first == [sampled(RULE_ID, key, 0.5) for key in KEYS[:500]]
    assert first == [sampled(str(RULE_ID), key, 0.5) for key in KEYS[:500]]
    assert 100 < sum(first) < 400  # both answers occur


def test_sampling_is_the_same_in_another_process_whatever_its_hash_seed():
    keys = KEYS[:300]
    here = [sampled(RULE_ID, key, 0.5) for key in keys]
    code = (
        "import json, sys, uuid, django; django.setup()\n"
        "from scoring.engine import sampled\n"
        "keys = json.loads(sys.stdin.read())\n"
        f"print(json.dumps([sampled(uuid.UUID('{RULE_ID}'), k, 0.5) for k in keys]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "DJANGO_SETTINGS_MODULE": "onlinescore.settings.test"}
        out = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(keys), capture_output=True, text=True, cwd=root,
            env=env, check=True, timeout=60,
        )  # fmt: skip
        assert json.loads(out.stdout) == here


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_the_sampled_fraction_is_the_rate(rate):
    fraction = sum(sampled(RULE_ID, key, rate) for key in KEYS) / len(KEYS)
    assert abs(fraction - rate) <= 0.02


def test_rate_zero_never_samples_and_rate_one_always_does():
    assert not any(sampled(RULE_ID, key, 0) for key in KEYS)
    assert all(sampled(RULE_ID, key, 1) for key in KEYS)


def test_rules_draw_independently():
    other = uuid.UUID("00000000-0000-4000-8000-000000000001")
    a = [sampled(RULE_ID, key, 0.5) for key in KEYS[:1000]]
    b = [sampled(other, key, 0.5) for key in KEYS[:1000]]
    agreement = sum(x == y for x, y in zip(a, b)) / 1000
    assert 0.4 < agreement < 0.6


def _traces(n, size=3):
    rows = []
    for t in range(n):
        root = f"t{t}"
        rows.append(ended(root, span_attributes={"name": "task"}))
        for c in range(1, size):
            rows.append({**ended(f"t{t}-{c}"), "root_span_id": root, "span_parents": [root]})
    return rows


def test_sampling_by_trace_gives_every_span_of_a_trace_the_same_decision(make_rule, project, enqueue_calls):
    rule = make_rule(sampling_rate=0.5, sample_by="trace")
    log(project, *_traces(20))
    by_trace = {}
    for record in SpanDecisions.objects.select_related("span"):
        by_trace.setdefault(record.span.root_span_id, set()).add(record.decisions[str(rule.pk)])
    assert len(by_trace) == 20 and all(len(values) == 1 for values in by_trace.values())
    for root, values in by_trace.items():
        expected = Q if sampled(rule.pk, root, 0.5) else Decision.NOT_SAMPLED.value
        assert values == {expected}
    assert {v for values in by_trace.values() for v in values} == {Q, Decision.NOT_SAMPLED.value}
    assert ScoringRun.objects.count() == 3 * sum(sampled(rule.pk, root, 0.5) for root in by_trace)


def test_sampling_by_span_draws_on_the_row_id(make_rule, project, enqueue_calls):
    rule = make_rule(sampling_rate=0.5)
    log(project, *_traces(20))
    records = list(SpanDecisions.objects.select_related("span"))
    assert len(records) == 60
    for record in records:
        expected = Q if sampled(rule.pk, record.span.row_id, 0.5) else Decision.NOT_SAMPLED.value
        assert record.decisions[str(rule.pk)] == expected
    mixed = {
        root
        for root in {r.span.root_span_id for r in records}
        if len({r.decisions[str(rule.pk)] for r in records if r.span.root_span_id == root}) > 1
    }
    assert mixed  # unlike sample_by=trace, spans of one trace are drawn apart


def test_sampling_comes_after_the_filter_and_the_selection(make_rule, project, enqueue_calls):
    rule = make_rule(sampling_rate=0, btql_filter="output = 'yes'", apply_to_root_span=True)
    log(
        project,
        ended("a", output="no"),
        {**ended("b", output="yes"), "span_parents": ["x"]},
        ended("c", output="yes"),
    )
    assert [decisions(project, r)[str(rule.pk)] for r in "abc"] == [FO, NS, Decision.NOT_SAMPLED.value]
    assert not ScoringRun.objects.exists()


# --- Runs --------------------------------------------------------------------------------


def test_one_run_per_span_rule_and_scorer(make_rule, project, enqueue_calls):
    first = make_rule(name="first", scorers=[EXACT, LEVENSHTEIN])
    second = make_rule(name="second", scorers=[EXACT])
    log(project, ended("a"), ended("b"))
    runs = ScoringRun.objects.all()
    assert sorted((r.span.row_id, r.rule.name, r.scorer_key) for r in runs) == [
        ("a", "first", "global:ExactMatch"),
        ("a", "first", "global:Levenshtein"),
        ("a", "second", "global:ExactMatch"),
        ("b", "first", "global:ExactMatch"),
        ("b", "first", "global:Levenshtein"),
        ("b", "second", "global:ExactMatch"),
    ]
    assert all(r.status == ScoringRun.Status.PENDING and r.attempts == 0 for r in runs)
    assert {r.scorer_key: r.scorer for r in runs} == {
        "global:ExactMatch": EXACT,
        "global:Levenshtein": LEVENSHTEIN,
    }
    assert decisions(project, "a") == {str(first.pk): Q, str(second.pk): Q}


def test_the_database_refuses_a_second_online_run_for_the_same_span_rule_and_scorer(
    make_rule, project, enqueue_calls
):
    rule = make_rule()
    log(project, ended("a"))
    run = ScoringRun.objects.get()
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        ScoringRun.objects.create(
            project=project,
            span=run.span,
            rule=rule,
            scorer=EXACT,
            scorer_key=run.scorer_key,
            created=now,
            updated=now,
        )
    # Manual runs (no rule) may score a span again.
    ScoringRun.objects.create(
        project=project, span=run.span, scorer=EXACT, scorer_key=run.scorer_key, created=now, updated=now
    )
    ScoringRun.objects.create(
        project=project, span=run.span, scorer=EXACT, scorer_key=run.scorer_key, created=now, updated=now
    )
    assert ScoringRun.objects.count() == 3


def test_replaying_the_same_batch_creates_no_new_runs(
    make_rule, project, enqueue_calls, django_capture_on_commit_callbacks
):
    make_rule(scorers=[EXACT, LEVENSHTEIN])
    batch = [
        {"id": "a", "input": "q", "metrics": {"start": 1}},
        {"id": "a", "_is_merge": True, "output": "x", "metrics": {"end": 2}},
        ended("b", output="y"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        log(project, *batch)
    run_ids = sorted(ScoringRun.objects.values_list("pk", flat=True))
    assert len(run_ids) == 4 and sorted(sum(enqueue_calls, [])) == run_ids
    decided = {d.span_id: d.ended_at for d in SpanDecisions.objects.all()}

    with django_capture_on_commit_callbacks(execute=True):
        log(project, *batch)
        log(project, *batch[1:])
    assert sorted(ScoringRun.objects.values_list("pk", flat=True)) == run_ids
    assert {d.span_id: d.ended_at for d in SpanDecisions.objects.all()} == decided
    assert len(enqueue_calls) == 1


def test_a_span_deleted_and_logged_again_ends_again_without_duplicating_runs(
    make_rule, project, enqueue_calls
):
    rule = make_rule(scorers=[EXACT, LEVENSHTEIN])
    log(project, ended("a", output="first"))
    first_runs = sorted(runs_of(project, "a").values_list("pk", flat=True))
    first_end = SpanDecisions.objects.get(span=span(project, "a")).ended_at
    assert len(first_runs) == 2

    log(project, {"id": "a", "_object_delete": True})
    assert span(project, "a").deleted
    log(project, ended("a", output="second"))
    again = SpanDecisions.objects.get(span=span(project, "a"))
    assert not span(project, "a").deleted and span(project, "a").output == "second"
    assert again.ended_at > first_end and again.decisions == {str(rule.pk): Q}
    assert sorted(runs_of(project, "a").values_list("pk", flat=True)) == first_runs


def test_a_span_deleted_and_logged_again_in_one_batch_keeps_one_run_per_scorer(
    make_rule, project, enqueue_calls
):
    make_rule()
    log(project, ended("a"), {"id": "a", "_object_delete": True}, ended("a", output="again"))
    assert runs_of(project, "a").count() == 1
    assert span(project, "a").output == "again"


def test_in_one_batch_the_last_end_of_a_span_decides_alone(make_rule, project, enqueue_calls):
    """An end that queues, a delete, and an end the filter leaves out: no run is left queued."""
    rule = make_rule(btql_filter="metadata.env = 'prod'")
    log(project, ended("a", metadata={"env": "prod"}), {"id": "a", "_object_delete": True},
        ended("a", metadata={"env": "dev"}))  # fmt: skip
    assert SpanDecisions.objects.get(span=span(project, "a")).decisions == {str(rule.pk): "filtered_out"}
    assert runs_of(project, "a").count() == 0 and enqueue_calls == []


def test_a_span_that_ends_then_is_deleted_in_one_batch_is_not_scored(make_rule, project, enqueue_calls):
    make_rule()
    log(project, ended("a"), {"id": "a", "_object_delete": True})
    assert span(project, "a").deleted
    assert (
        runs_of(project, "a").count() == 0
        and not SpanDecisions.objects.filter(span=span(project, "a")).exists()
    )
    assert enqueue_calls == []


# --- After commit ------------------------------------------------------------------------


def test_runs_are_enqueued_only_after_the_ingest_commits(
    make_rule, project, enqueue_calls, django_capture_on_commit_callbacks
):
    make_rule(scorers=[EXACT, LEVENSHTEIN])
    with django_capture_on_commit_callbacks() as callbacks:
        log(project, ended("a"), ended("b"))
        assert enqueue_calls == []
    assert enqueue_calls == [] and callbacks
    for callback in callbacks:
        callback()
    assert enqueue_calls == [sorted(ScoringRun.objects.values_list("pk", flat=True))]
    assert len(enqueue_calls[0]) == 4


def test_a_failed_ingest_enqueues_nothing_and_keeps_no_runs(
    make_rule, project, enqueue_calls, django_capture_on_commit_callbacks
):
    make_rule()

    def fail(sender, ended, **kwargs):
        raise RuntimeError("the write fails after the engine ran")

    spans_ended.connect(fail)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with pytest.raises(RuntimeError):
                log(project, ended("a"))
    finally:
        spans_ended.disconnect(fail)
    assert callbacks == [] and enqueue_calls == []
    assert (
        not Span.objects.exists() and not ScoringRun.objects.exists() and not SpanDecisions.objects.exists()
    )


# --- A filter that fails -----------------------------------------------------------------


def test_a_filter_failing_at_runtime_records_an_error_and_does_not_fail_ingest(
    make_rule, project, enqueue_calls, monkeypatch
):
    broken = make_rule(name="broken", btql_filter="output = 'yes' and input = 'q'")
    fine = make_rule(name="fine", btql_filter="output = 'yes'")
    real = engine.predicate

    def failing(row):
        raise TypeError("cannot compare")

    monkeypatch.setattr(
        engine, "predicate", lambda text: failing if text == broken.btql_filter else real(text)
    )
    log(project, ended("a", input="q", output="yes"))
    assert span(project, "a").ended_at is not None
    record = SpanDecisions.objects.get(span=span(project, "a"))
    assert record.decisions == {str(broken.pk): Decision.ERROR.value, str(fine.pk): Q}
    assert record.errors == {str(broken.pk): "The BTQL filter failed: cannot compare"}
    assert [r.rule_id for r in runs_of(project, "a")] == [fine.pk]


def test_a_filter_whose_regular_expression_runs_out_of_time_errors_that_rule_only(
    make_rule, project, enqueue_calls
):
    slow = make_rule(name="slow", btql_filter="input ~ '(a|aa)+$'")
    fine = make_rule(name="fine")
    log(project, ended("a", input="a" * 60 + "b"))
    record = SpanDecisions.objects.get(span=span(project, "a"))
    assert record.decisions == {str(slow.pk): Decision.ERROR.value, str(fine.pk): Q}
    assert record.errors[str(slow.pk)].startswith(
        "The BTQL filter failed: the regular expression '(a|aa)+$' took longer than 0.1 s on a text of 61 characters"
    )
