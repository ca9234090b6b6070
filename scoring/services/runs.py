"""The life of a scoring run.

A run is created pending (by the trigger in engine.py, or by `logs_score`), enqueued after
commit, claimed by one worker under a lease (`runs_execute`), and finished `done` or `error` in
the same transaction that writes its score and scoring span. `runs_sweep` brings back runs whose
job was lost (Redis down) or whose worker died. So every run ends done or error, and a
(span, rule, scorer) is scored exactly once.
"""

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import django_rq
import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from onlinescore.exceptions import ValidationError
from projects.auth import Principal, has_permission, principal_of
from projects.ingest.bulk import bulk_update
from projects.ingest.services import logs_record_results, spans_lock
from projects.models import APIKey, Project, Span
from scoring import scorers
from scoring.btql.q import evaluated, to_q
from scoring.engine import is_scoring_span
from scoring.models import Rule, ScoringRun

logger = logging.getLogger(__name__)


def logs_score(
    *,
    principal: Principal,
    project: Project,
    scorer_refs: list,
    ids: list[str] | None = None,
    filter_text: str | None = None,
    limit: int | None = None,
) -> list[ScoringRun]:
    """Manual scoring: each scorer on the given logs (row ids), or on the `limit` most recent
    root spans matching the filter ("Score past logs"). The runs are pending; they are enqueued
    when the transaction commits. Scoring a span again adds a scoring span and updates its score."""
    refs = scorers.references_clean(
        scorer_refs, field="scorers", organization=project.organization, principal=principal
    )
    if (ids is None) == (filter_text is None):
        raise ValidationError("Give either ids (specific logs) or filter (score past logs).", field="ids")
    if ids is not None and limit is not None:
        raise ValidationError("limit goes with filter (score past logs); ids are each scored.", field="limit")
    live = Span.objects.filter(project=project, deleted=False)
    if ids is not None:
        found = {s.row_id: s for s in live.filter(row_id__in=ids)}
        for i, row_id in enumerate(ids):
            if row_id not in found:
                raise ValidationError(f"No log with id {row_id!r} in this project.", field=f"ids[{i}]")
            if is_scoring_span({"span_attributes": found[row_id].span_attributes}):
                raise ValidationError(
                    f"{row_id!r} is a scoring span: scores are never scored; score the span it scored.",
                    field=f"ids[{i}]",
                )
        spans = [found[row_id] for row_id in dict.fromkeys(ids)]
    else:
        roots = live.filter(is_root=True)
        with evaluated(filter_text, field="filter"):
            if filter_text.strip():
                roots = roots.filter(to_q(filter_text))
            spans = list(roots.order_by("-created", "-pk")[: limit or settings.SCORING_PAST_LOGS_DEFAULT])
    now = timezone.now()
    runs = [
        ScoringRun(project=project, span=span, scorer=ref, scorer_key=scorers.reference_key(ref),
                   requested_by=principal.user, requested_by_key=principal.key, created=now, updated=now)
        for span in spans
        for ref in refs
    ]  # fmt: skip
    with transaction.atomic():
        ScoringRun.objects.bulk_create(runs)
        transaction.on_commit(lambda: runs_enqueue([run.pk for run in runs]))
    return runs


def runs_enqueue(run_ids: list[int], *, delay: timedelta | None = None) -> bool:
    """Queue jobs for these runs, SCORING_JOB_BATCH runs per job. If Redis cannot be reached
    the runs stay pending and the sweeper enqueues them later; the caller carries on."""
    from scoring.jobs import score_runs

    size = settings.SCORING_JOB_BATCH
    chunks = [run_ids[i : i + size] for i in range(0, len(run_ids), size)]
    try:
        queue = _queue()
        # result_ttl=0: a job's outcome is in its runs' rows; Redis need not keep it. The job's
        # time limit allows every scorer its own; leases, not RQ, notice a dead worker.
        limits = [len(chunk) * (settings.SCORING_SCORER_TIMEOUT + 5) + 60 for chunk in chunks]
        if delay:
            # RQ keeps a job's time in whole seconds, rounded down: rounded up here instead, so
            # that a retry's job never comes before its runs are due.
            at = timezone.now() + delay
            at = at.replace(microsecond=0) + timedelta(seconds=1 if at.microsecond else 0)
            for chunk, limit in zip(chunks, limits):
                queue.enqueue_at(at, score_runs, chunk, result_ttl=0, job_timeout=limit)
        else:
            queue.enqueue_many(
                [
                    queue.prepare_data(score_runs, (c,), result_ttl=0, timeout=t)
                    for c, t in zip(chunks, limits)
                ]
            )
    except redis.RedisError as exc:
        logger.warning(
            "Redis unreachable (%s): %d scoring runs stay pending for the sweeper.", exc, len(run_ids)
        )
        return False
    return True


_redis: redis.Redis | None = None


def _queue():
    """The default queue, on one Redis client per process: django_rq makes a new client per
    call, and its new connection cost more than the enqueue (at ingest, after each batch). The
    client is made here, with the queue's REDIS_CLIENT_KWARGS, because django-rq ignores them
    for a URL: a Redis that does not answer must fail the enqueue fast, never hang ingest."""
    global _redis
    if _redis is None:
        config = settings.RQ_QUEUES["default"]
        _redis = redis.Redis.from_url(config["URL"], **config.get("REDIS_CLIENT_KWARGS", {}))
    return django_rq.get_queue("default", commit_mode="auto", connection=_redis)


# --- Running ----------------------------------------------------------------------------


@dataclass
class _Result:
    run: ScoringRun
    outcome: scorers.Outcome


def runs_execute(*, run_ids: list[int]) -> None:
    """Claim the pending runs among `run_ids`, score them, and record the results. Runs that
    another worker holds, or that are finished, are left alone."""
    token = uuid.uuid4()
    now = timezone.now()
    claimed = (
        ScoringRun.objects.filter(pk__in=run_ids, status=ScoringRun.Status.PENDING)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .update(
            status=ScoringRun.Status.RUNNING,
            lease_token=token,
            lease_expires=now + timedelta(seconds=settings.SCORING_LEASE_SECONDS),
            attempts=F("attempts") + 1,
            updated=now,
        )
    )
    if claimed < len(set(run_ids)):
        # Runs not due yet (a retry whose job came early: by another machine's clock, say) go
        # back to the queue for their time, rather than wait for the sweeper.
        _enqueue_when_due(
            ScoringRun.objects.filter(
                pk__in=run_ids, status=ScoringRun.Status.PENDING, not_before__gt=now
            ).values_list("pk", "not_before"),
            now,
        )
    if not claimed:
        return
    runs = list(
        ScoringRun.objects.filter(lease_token=token)
        .select_related("requested_by", "requested_by_key")
        .order_by("pk")
    )
    # Each span, rule and project once per batch, not once per run (a span has a run per scorer);
    # of the span, what the scorers and the scoring span need.
    spans = Span.objects.only(*_SPAN_READ).in_bulk({run.span_id for run in runs})
    # One dict per span for its scorers: its runs' scoring spans then share it, and writing them
    # serializes it once, not once per scorer.
    fields = {pk: {name: getattr(span, name) for name in scorers.ARGUMENTS} for pk, span in spans.items()}
    rules = Rule.objects.select_related("run_as_user", "run_as_key").in_bulk(
        {run.rule_id for run in runs} - {None}
    )
    projects = Project.objects.select_related("organization").in_bulk({run.project_id for run in runs})
    # A run whose span, project or rule was deleted after it was queued (they are not database
    # constraints: see ScoringRun) has nothing left to score, nor anyone to show it to.
    gone = {
        run.pk
        for run in runs
        if run.span_id not in spans
        or run.project_id not in projects
        or (run.rule_id is not None and run.rule_id not in rules)
    }
    if gone:
        ScoringRun.objects.filter(pk__in=gone, lease_token=token).delete()
        runs = [run for run in runs if run.pk not in gone]
    for run in runs:
        run.span, run.project = spans[run.span_id], projects[run.project_id]
        run.rule = rules.get(run.rule_id)
    lease = _Lease(token)
    access = _Access()
    results = []
    # Results are recorded as they come, at least every quarter lease: a batch of slow scorers
    # (LLM calls) that is stopped midway keeps what it has done.
    record_at = time.monotonic() + settings.SCORING_LEASE_SECONDS / 4
    for run in runs:
        lease.keep()
        results.append(_Result(run, _score(run, access, fields[run.span_id])))
        if time.monotonic() >= record_at:
            _record(token, results)
            results, record_at = [], time.monotonic() + settings.SCORING_LEASE_SECONDS / 4
    if results:
        _record(token, results)


_SPAN_READ = ("project_id", "row_id", "span_id", "root_span_id", *scorers.ARGUMENTS)


def _score(run: ScoringRun, access: "_Access", fields: dict) -> scorers.Outcome:
    name = scorers.reference_name(run.scorer)
    if run.attempts > settings.SCORING_MAX_ATTEMPTS:
        return _failed(name, fields, f"Gave up after {run.attempts - 1} attempts: each time, the worker "
                                     "running it stopped before finishing.")  # fmt: skip
    principal, denied = access.principal(run)
    if denied:
        return _failed(name, fields, denied)
    try:
        scorer = scorers.resolve(
            run.scorer, organization=run.project.organization, principal=principal, project=run.project
        )
    except scorers.ScorerError as exc:
        return _failed(name, fields, str(exc))
    return scorers.run(scorer, fields)


def _failed(name: str, fields: dict, message: str) -> scorers.Outcome:
    now = timezone.now().timestamp()
    return scorers.Outcome(scorer=name, input=fields, error=message, start=now, end=now)


class _Access:
    """Whom a run runs as, and whether they may still read and write the span's logs: checked
    when the run runs, since rights can be taken away after the rule was made. Cached per batch."""

    def __init__(self):
        self._cache: dict[tuple, tuple[Principal | None, str | None]] = {}

    def principal(self, run: ScoringRun) -> tuple[Principal | None, str | None]:
        """(the principal, None), or (None, why the run may not run)."""
        user, key, key_id = runs_as(run.rule or run)
        cache_key = (getattr(user, "pk", None), key_id, run.project_id)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._check(run, user, key, key_id)
        return self._cache[cache_key]

    @staticmethod
    def _check(run: ScoringRun, user, key, key_id) -> tuple[Principal | None, str | None]:
        who = f"rule {run.rule.name!r}" if run.rule else "this manual scoring request"
        project = run.project
        if user is None:
            return None, f"The user {who} ran as was deleted."
        if key is None and key_id is not None:
            return None, f"The API key {who} runs with was deleted."
        if key is not None and not key.is_active:
            return None, f"The API key {who} runs with ({key.prefix}…) was revoked."
        principal = principal_of(user, key, project.organization)
        name = user.email or user.username
        if principal is None:
            return None, f"{name}, whom {who} runs as, is no longer an active member of the organization."
        for permission in ("read", "update"):
            if not has_permission(principal, project, "project_logs", permission):
                return None, (f"{name}, whom {who} runs as, no longer has {permission!r} "
                              f"on the logs of project {project.name!r}.")  # fmt: skip
        return principal, None


def runs_as(made: Rule | ScoringRun) -> tuple:
    """Whom a rule, or a manual run, runs as: (the user, the API key, the key's id). The key is
    None with its id kept when it was deleted (see Rule.run_as_key); the user None if deleted."""
    by_rule = isinstance(made, Rule)
    user = made.run_as_user if by_rule else made.requested_by
    try:
        key = made.run_as_key if by_rule else made.requested_by_key
    except APIKey.DoesNotExist:  # deleted, its id kept
        key = None
    return user, key, made.run_as_key_id if by_rule else made.requested_by_key_id


class _Lease:
    """Renews the batch's lease once half of it has passed, so that a long batch is not
    mistaken for a dead worker."""

    def __init__(self, token: uuid.UUID):
        self.token = token
        self.renew_at = timezone.now() + timedelta(seconds=settings.SCORING_LEASE_SECONDS / 2)

    def keep(self) -> None:
        now = timezone.now()
        if now < self.renew_at:
            return
        ScoringRun.objects.filter(lease_token=self.token, status=ScoringRun.Status.RUNNING).update(
            lease_expires=now + timedelta(seconds=settings.SCORING_LEASE_SECONDS)
        )
        self.renew_at = now + timedelta(seconds=settings.SCORING_LEASE_SECONDS / 2)


def _record(token: uuid.UUID, results: list[_Result]) -> None:
    """In one transaction: the scores and scoring spans of the runs this batch still holds, and
    their final status (or back to pending, for a transient failure with attempts left)."""
    now = timezone.now()
    retry: list[ScoringRun] = []
    with transaction.atomic():
        # The scored spans and the scoring spans, locked before anything is decided (in the
        # order every write locks rows) and read now, not when the runs were claimed: the run of
        # a span deleted meanwhile ends in an error that says so. Spans before runs, as ingest
        # locks them when it starts a span's runs over (engine.spans_end): else the two deadlock.
        touched: dict[uuid.UUID, set[str]] = defaultdict(set)  # by project id
        for result in results:
            touched[result.run.project_id] |= {result.run.span.row_id, _scoring_span_id(result.run)}
        projects = {result.run.project_id: result.run.project for result in results}
        locked = {p: spans_lock(project=projects[p], row_ids=touched[p]) for p in sorted(touched)}
        held = set(
            ScoringRun.objects.select_for_update()
            .filter(lease_token=token, status=ScoringRun.Status.RUNNING)
            .values_list("pk", flat=True)
        )
        live = {span.pk for spans in locked.values() for span in spans.values() if not span.deleted}
        rows: dict[Project, list[dict]] = defaultdict(list)
        merges: dict[Project, dict[str, dict]] = defaultdict(dict)
        finished = []
        for result in results:
            run, outcome = result.run, result.outcome
            if run.pk not in held:
                continue  # the lease ran out and another worker claimed the run
            if outcome.transient and run.attempts < settings.SCORING_MAX_ATTEMPTS:
                run.status, run.error, run.lease_token, run.lease_expires = (
                    ScoringRun.Status.PENDING,
                    outcome.error,
                    None,
                    None,
                )
                run.not_before = now + _backoff(run.attempts)
                run.updated = now
                retry.append(run)
                continue
            if run.span_id not in live:
                outcome.error, outcome.scores = "The span was deleted before it could be scored.", {}
            row = scoring_span_row(run, outcome)
            rows[run.project].append(row)
            if outcome.error is None:
                merges[run.project].setdefault(run.span.row_id, {}).update(outcome.scores)
            run.status = ScoringRun.Status.ERROR if outcome.error else ScoringRun.Status.DONE
            run.scores, run.error = (None, outcome.error) if outcome.error else (outcome.scores, "")
            run.scoring_span_row_id = row["id"]
            run.lease_token = run.lease_expires = None
            run.finished = run.updated = now
            finished.append(run)
        for project in rows.keys() | merges.keys():
            logs_record_results(
                project=project, rows=rows[project], scores=merges[project], locked=locked[project.pk]
            )
        # One UPDATE for the batch: the ORM's bulk_update would build a CASE per column and run,
        # with the write lock held (measured: two thirds of a batch's time on SQLite).
        bulk_update(
            ScoringRun,
            [{f: getattr(run, f) for f in _RUN_RESULT} for run in finished + retry],
            _RUN_RESULT[1:],
        )
    # Committed: schedule the retries.
    _enqueue_when_due([(run.pk, run.not_before) for run in retry], now)


def _enqueue_when_due(runs, now: datetime) -> None:
    """Enqueue runs, given as (id, when due), each for its time: one job per time."""
    due = defaultdict(list)
    for pk, not_before in runs:
        due[not_before].append(pk)
    for when, run_ids in due.items():
        runs_enqueue(run_ids, delay=when - now)


_RUN_RESULT = ["id", "status", "scores", "error", "scoring_span_row_id", "lease_token", "lease_expires", "not_before",
               "finished", "updated"]  # fmt: skip


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=settings.SCORING_RETRY_BACKOFF_SECONDS * 2 ** (attempts - 1))


def scoring_span_row(run: ScoringRun, outcome: scorers.Outcome) -> dict:
    """The child span that shows a run's details, as a log row. Its id is derived from the run,
    so writing it again (a run started over) replaces it rather than adding another."""
    span = run.span
    row_id = _scoring_span_id(run)
    row = {
        "id": row_id,
        "span_id": row_id,
        "root_span_id": span.root_span_id,
        "span_parents": [span.span_id],
        "span_attributes": {"name": outcome.scorer, "type": "score", "purpose": "scorer"},
        "input": outcome.input,
        "metadata": outcome.metadata or None,
        "metrics": {**outcome.metrics, "start": outcome.start, "end": outcome.end},
    }
    if outcome.error is None:
        row.update(output=outcome.output, scores=outcome.scores)
    else:
        row["error"] = outcome.error
    return row


def _scoring_span_id(run: ScoringRun) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"onlinescore:scoring-run:{run.pk}"))


# --- The sweeper -------------------------------------------------------------------------


def runs_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Bring back runs no job will finish: those whose worker's lease expired (it died), and
    pending ones no job holds (it was never enqueued, or Redis lost it): those older than the
    grace period while the queue is empty, or older than ten grace periods whatever the queue
    holds, so that a steady load cannot starve them. At most _SWEEP_CHUNK of each per sweep.
    Safe to run from every worker at once: a run enqueued twice is claimed once."""
    now = now or timezone.now()
    expired = list(
        ScoringRun.objects.filter(status=ScoringRun.Status.RUNNING, lease_expires__lt=now)
        .order_by("pk")
        .values_list("pk", flat=True)[:_SWEEP_CHUNK]
    )
    reclaimed = ScoringRun.objects.filter(
        pk__in=expired, status=ScoringRun.Status.RUNNING, lease_expires__lt=now
    ).update(
        status=ScoringRun.Status.PENDING, lease_token=None, lease_expires=None, not_before=None, updated=now
    )
    grace = timedelta(seconds=settings.SCORING_PENDING_GRACE_SECONDS)
    cutoff = now - (grace if _queue_is_empty() else 10 * grace)
    stale = list(
        ScoringRun.objects.filter(status=ScoringRun.Status.PENDING, updated__lt=cutoff)
        .filter(Q(not_before__isnull=True) | Q(not_before__lt=cutoff))
        .order_by("pk")
        .values_list("pk", flat=True)[:_SWEEP_CHUNK]
    )
    ScoringRun.objects.filter(pk__in=stale).update(updated=now)
    if expired or stale:
        runs_enqueue(sorted({*expired, *stale}))
    return {"reclaimed": reclaimed, "requeued": len(stale)}


_SWEEP_CHUNK = 5000


def _queue_is_empty() -> bool:
    try:
        return _queue().count == 0
    except redis.RedisError:
        return False
