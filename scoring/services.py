"""Writes of online scoring: rules, manual scoring, and the life of a scoring run.

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
from typing import Any

import django_rq
import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from onlinescore.exceptions import ValidationError
from projects.auth import Principal, has_permission, principal_of
from projects.ingest.bulk import bulk_update
from projects.ingest.services import logs_record_results
from projects.models import Project, Span
from projects.selectors import span_event
from scoring import scorers, selectors
from scoring.btql.errors import BTQLError
from scoring.btql.predicate import predicate
from scoring.btql.q import to_q
from scoring.engine import CompiledRule
from scoring.models import Decision, Function, FunctionVersion, LLMEndpoint, Rule, ScoringRun
from scoring.scorers import llm

logger = logging.getLogger(__name__)

# --- Rules -------------------------------------------------------------------------------

_ONLINE_DEFAULTS = {
    "btql_filter": "",
    "apply_to_root_span": False,
    "apply_to_span_names": [],
    "enabled": True,
    "sample_by": Rule.SampleBy.SPAN,
}


def online_config_clean(
    online: dict, *, current: dict | None = None, organization=None, principal: Principal | None = None
) -> dict:
    """A rule's `config.online` made whole and checked: `online` over `current` (a PATCH) or
    over the defaults. The filter is compiled and each scorer resolved for the organization and
    the principal the rule runs as, so a rule that saves can run. Errors name the field
    (`config.online.<name>`), and BTQL errors their position."""
    config = {**_ONLINE_DEFAULTS, **(current or {})}
    # null is Braintrust's "unset": the default (so a PATCH with "btql_filter": null clears it).
    config.update(
        {k: _ONLINE_DEFAULTS[k] if v is None and k in _ONLINE_DEFAULTS else v for k, v in online.items()}
    )
    field = "config.online.{}".format
    for required in ("sampling_rate", "scorers"):
        if config.get(required) is None:
            raise ValidationError(f"{required} is required.", field=field(required))
    text = config["btql_filter"] or ""
    if text.strip():
        try:
            predicate(text)  # as sent, so that an error's line and column point into it
        except BTQLError as exc:
            exc.details["field"] = field("btql_filter")
            raise
    config["btql_filter"] = text.strip()
    config["scorers"] = scorers.references_clean(
        config["scorers"], field=field("scorers"), organization=organization, principal=principal
    )
    rate = config["sampling_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValidationError("sampling_rate is a number from 0 to 1.", field=field("sampling_rate"))
    names = config["apply_to_span_names"] or []
    if not isinstance(names, list) or any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValidationError("Span names are non-empty strings.", field=field("apply_to_span_names"))
    config["apply_to_span_names"] = list(dict.fromkeys(n.strip() for n in names))
    return config


def rule_create(
    *, project: Project, name: str, description: str, online: dict, run_as_user, run_as_key=None
) -> Rule:
    """A new rule, running as `run_as_user` (and the API key it was made with, if any)."""
    rule = Rule(
        project=project,
        name=_rule_name_clean(name),
        description=description or "",
        run_as_user=run_as_user,
        run_as_key=run_as_key,
        **online_config_clean(
            online,
            organization=project.organization,
            principal=principal_of(run_as_user, run_as_key, project.organization),
        ),
    )
    return _rule_save(rule)


def rule_get_or_create(*, project: Project, name: str, **fields) -> Rule:
    """A new rule, or, as in Braintrust, the project's rule of this name unchanged."""
    existing = Rule.objects.filter(project=project, name=name.strip()).first()
    if existing is not None:
        return existing
    try:
        return rule_create(project=project, name=name, **fields)
    except ValidationError as exc:
        # Created meanwhile by another request.
        found = Rule.objects.filter(project=project, name=name.strip()).first()
        if exc.details.get("field") == "name" and found is not None:
            return found
        raise


def rule_update(*, rule: Rule, editor: Principal | None = None, name: str | None = None,
                description: str | None = None, online: dict | None = None) -> Rule:  # fmt: skip
    """Change a rule. New scorers must be usable both by the user the rule runs as and by the
    editor: no one can make a rule use a scorer they could not use themselves."""
    if name is not None:
        rule.name = _rule_name_clean(name)
    if description is not None:
        rule.description = description
    if online:
        organization = rule.project.organization
        principal = principal_of(rule.run_as_user, rule.run_as_key, organization)
        if online.get("scorers") is not None and principal is None:
            raise ValidationError(
                "The user this rule runs as is no longer a member of the organization: create a new rule.",
                field="config.online.scorers",
            )
        config = online_config_clean(
            online, current=rule_online_config(rule), organization=organization, principal=principal
        )
        if editor is not None and online.get("scorers") is not None:
            scorers.references_clean(
                config["scorers"], field="config.online.scorers", organization=organization, principal=editor
            )
        for key, value in config.items():
            setattr(rule, key, value)
    return _rule_save(rule)


def rule_delete(*, rule: Rule) -> None:
    rule.delete()


def rule_online_config(rule: Rule) -> dict:
    return {key: getattr(rule, key) for key in ("sampling_rate", "scorers", *_ONLINE_DEFAULTS)}


def _rule_name_clean(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError("A rule needs a name.", field="name")
    return name


def _rule_save(rule: Rule) -> Rule:
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        if Rule.objects.filter(project=rule.project_id, name=rule.name).exclude(pk=rule.pk).exists():
            raise ValidationError(
                f"This project already has a rule named {rule.name!r}.", field="name"
            ) from None
        raise
    return rule


# --- Creating and enqueueing runs ----------------------------------------------------------


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
    live = Span.objects.filter(project=project, deleted=False)
    if ids is not None:
        found = {s.row_id: s for s in live.filter(row_id__in=ids)}
        for i, row_id in enumerate(ids):
            if row_id not in found:
                raise ValidationError(f"No log with id {row_id!r} in this project.", field=f"ids[{i}]")
        spans = [found[row_id] for row_id in dict.fromkeys(ids)]
    else:
        roots = live.filter(is_root=True)
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
            for chunk, limit in zip(chunks, limits):
                queue.enqueue_in(delay, score_runs, chunk, result_ttl=0, job_timeout=limit)
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
        rule = run.rule
        user, key = (rule.run_as_user, rule.run_as_key) if rule else (run.requested_by, run.requested_by_key)
        cache_key = (getattr(user, "pk", None), getattr(key, "pk", None), run.project_id)
        if cache_key not in self._cache:
            self._cache[cache_key] = self._check(run, user, key)
        return self._cache[cache_key]

    @staticmethod
    def _check(run: ScoringRun, user, key) -> tuple[Principal | None, str | None]:
        who = f"rule {run.rule.name!r}" if run.rule else "this manual scoring request"
        project = run.project
        if user is None:
            return None, f"The user {who} ran as was deleted."
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
        held = set(
            ScoringRun.objects.select_for_update()
            .filter(lease_token=token, status=ScoringRun.Status.RUNNING)
            .values_list("pk", flat=True)
        )
        # Read now, not when the runs were claimed: the run of a span deleted meanwhile ends in
        # an error that says so (its score would not be merged anyway).
        deleted = set(
            Span.objects.filter(pk__in={r.run.span_id for r in results}, deleted=True).values_list(
                "pk", flat=True
            )
        )
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
            if run.span_id in deleted:
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
        for project in sorted(rows.keys() | merges.keys(), key=lambda p: p.pk):  # a fixed lock order
            logs_record_results(project=project, rows=rows[project], scores=merges[project])
        # One UPDATE for the batch: the ORM's bulk_update would build a CASE per column and run,
        # with the write lock held (measured: two thirds of a batch's time on SQLite).
        bulk_update(
            ScoringRun,
            [{f: getattr(run, f) for f in _RUN_RESULT} for run in finished + retry],
            _RUN_RESULT[1:],
        )
    # Committed: schedule the retries, one job per retry time.
    retry_at = defaultdict(list)
    for run in retry:
        retry_at[run.not_before].append(run.pk)
    for when, run_ids in retry_at.items():
        runs_enqueue(run_ids, delay=when - now)


_RUN_RESULT = ["id", "status", "scores", "error", "scoring_span_row_id", "lease_token", "lease_expires", "not_before",
               "finished", "updated"]  # fmt: skip


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=settings.SCORING_RETRY_BACKOFF_SECONDS * 2 ** (attempts - 1))


def scoring_span_row(run: ScoringRun, outcome: scorers.Outcome) -> dict:
    """The child span that shows a run's details, as a log row. Its id is derived from the run,
    so writing it again (a retried write) changes nothing."""
    span = run.span
    row_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"onlinescore:scoring-run:{run.pk}"))
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


# --- Test rule ---------------------------------------------------------------------------


def rule_test(*, principal: Principal, project: Project, online: dict, limit: int = 20) -> list[dict]:
    """What a rule would do with the project's most recent ended spans, without saving
    anything: the decision steps for each span, and for each span that passes the filter and
    the selection, its scores from really running the scorers (synchronously, within the
    SCORING_TEST_RULE_SECONDS budget). Sampling is drawn with a fresh rule id, so it shows the
    rate at work rather than the exact spans the saved rule will pick."""
    organization = project.organization
    config = online_config_clean(online, organization=organization, principal=principal)
    compiled = CompiledRule.of(Rule(project=project, **config))
    resolved = [
        scorers.resolve(ref, organization=organization, principal=principal, project=project)
        for ref in config["scorers"]
    ]
    spans = (
        Span.objects.filter(project=project, deleted=False, ended_at__isnull=False)
        .filter(Q(span_attributes__purpose__isnull=True) | ~Q(span_attributes__purpose="scorer"))
        .order_by("-ended_at", "-pk")[:limit]
    )
    deadline = timezone.now() + timedelta(seconds=settings.SCORING_TEST_RULE_SECONDS)
    previews = []
    for span in spans:
        row = span_event(span)
        decision, message = compiled.decide(row)
        preview: dict[str, Any] = {
            "id": span.row_id,
            "span_id": span.span_id,
            "name": span.name,
            "matched_filter": decision not in (Decision.FILTERED_OUT, Decision.ERROR),
            "selected": decision in (Decision.NOT_SAMPLED, Decision.QUEUED),
            "sampled": decision == Decision.QUEUED,
        }
        if message:
            preview["error"] = message
        elif preview["selected"]:
            preview.update(_preview_scores(resolved, row, deadline))
        previews.append(preview)
    return previews


def _preview_scores(resolved: list, row: dict, deadline: datetime) -> dict:
    values, errors = {}, []
    for scorer in resolved:
        remaining = (deadline - timezone.now()).total_seconds()
        if remaining <= 0:
            errors.append(f"{scorer.name}: not run, the preview's time budget ran out.")
            continue
        outcome = scorers.run(scorer, row, timeout=min(remaining, settings.SCORING_SCORER_TIMEOUT))
        if outcome.error:
            errors.append(f"{scorer.name}: {outcome.error}")
        else:
            values.update(outcome.scores)
    return {"scores": values, **({"error": "; ".join(errors)} if errors else {})}


# --- Custom scorers (functions) --------------------------------------------------------------

_RUNTIMES = {"python": "python", "node": "node"}
CODE_MAX_BYTES = 256 * 1024


def function_data_clean(function_data: dict, prompt_data: dict | None) -> tuple[dict, dict | None]:
    """Check what a scorer function runs: inline code (python or node) or an LLM judge prompt."""
    kind = function_data.get("type")
    if kind == "code":
        _refuse_unknown(function_data, {"type", "data"}, "function_data")
        data = function_data.get("data")
        if not isinstance(data, dict) or data.get("type") != "inline":
            raise ValidationError('Code scorers are {"type": "inline", "runtime_context": ..., "code": ...}.',
                                  field="function_data.data")  # fmt: skip
        _refuse_unknown(data, {"type", "runtime_context", "code"}, "function_data.data")
        if not isinstance(data.get("runtime_context"), dict):
            raise ValidationError(
                "runtime_context is {runtime, version}.", field="function_data.data.runtime_context"
            )
        _refuse_unknown(data["runtime_context"], {"runtime", "version"}, "function_data.data.runtime_context")
        runtime = data["runtime_context"].get("runtime")
        if runtime not in _RUNTIMES:
            raise ValidationError(
                "runtime is python or node.", field="function_data.data.runtime_context.runtime"
            )
        code = data.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ValidationError("The code is empty.", field="function_data.data.code")
        if len(code.encode()) > CODE_MAX_BYTES:
            raise ValidationError(
                f"The code is over {CODE_MAX_BYTES:,} bytes.", field="function_data.data.code"
            )
        if runtime == "python":
            try:
                compile(code, "<scorer>", "exec")  # compiling runs nothing
            except (MemoryError, RecursionError):
                raise ValidationError(
                    "The code is too deeply nested to compile.", field="function_data.data.code"
                ) from None
            except SyntaxError as exc:
                raise ValidationError(
                    f"Syntax error: {exc.msg} (line {exc.lineno}).", field="function_data.data.code",
                    line=exc.lineno, column=exc.offset,
                ) from None  # fmt: skip
        version = (data.get("runtime_context") or {}).get("version")
        clean = {"type": "inline", "runtime_context": {"runtime": runtime, "version": version}, "code": code}
        if prompt_data is not None:
            raise ValidationError("A code scorer has no prompt_data.", field="prompt_data")
        return {"type": "code", "data": clean}, None
    if kind == "prompt":
        _refuse_unknown(function_data, {"type"}, "function_data")
        return {"type": "prompt"}, _prompt_data_clean(prompt_data)
    raise ValidationError('function_data.type is "code" or "prompt".', field="function_data.type")


def _refuse_unknown(value: dict, allowed: set[str], field: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValidationError(f"Unknown field {unknown[0]!r}.", field=f"{field}.{unknown[0]}")


def _prompt_data_clean(prompt_data: dict | None) -> dict:
    if not isinstance(prompt_data, dict):
        raise ValidationError(
            "An LLM judge needs prompt_data {prompt, options, parser}.", field="prompt_data"
        )
    prompt = prompt_data.get("prompt")
    messages = prompt.get("messages") if isinstance(prompt, dict) else None
    if (
        not isinstance(prompt, dict)
        or prompt.get("type") != "chat"
        or not isinstance(messages, list)
        or not messages
    ):
        raise ValidationError('prompt is {"type": "chat", "messages": [...]}.', field="prompt_data.prompt")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise ValidationError("A message is {role: system|user|assistant, content: text}.",
                                  field=f"prompt_data.prompt.messages[{i}]")  # fmt: skip
    options = prompt_data.get("options") or {}
    if (
        not isinstance(options, dict)
        or not isinstance(options.get("model", ""), str)
        or not isinstance(options.get("params", {}), dict)
    ):
        raise ValidationError("options is {model, params}.", field="prompt_data.options")
    parser = prompt_data.get("parser")
    if not isinstance(parser, dict) or parser.get("type") != "llm_classifier":
        raise ValidationError('parser is {"type": "llm_classifier", ...}.', field="prompt_data.parser")
    choices = parser.get("choice_scores")
    if (
        not isinstance(choices, dict)
        or not choices
        or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1
            for v in choices.values()
        )
    ):
        raise ValidationError("choice_scores maps each choice to a score between 0 and 1.",
                              field="prompt_data.parser.choice_scores")  # fmt: skip
    return {
        "prompt": {
            "type": "chat",
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        },
        "options": options,
        "parser": {
            "type": "llm_classifier",
            "use_cot": bool(parser.get("use_cot", True)),
            "choice_scores": choices,
            "choice_order": list(choices),  # jsonb (PostgreSQL) does not keep key order
        },
    }


def function_get_or_create(*, principal: Principal, project: Project, name: str, slug: str, description: str,
                           function_data: dict, prompt_data: dict | None) -> Function:  # fmt: skip
    """A new function at version 1, or, as in Braintrust, the project's function with this slug
    unchanged."""
    existing = Function.objects.filter(project=project, slug=slug).first()
    if existing is not None:
        return existing
    function_data, prompt_data = function_data_clean(function_data, prompt_data)
    try:
        return _function_create(principal, project, name, slug, description, function_data, prompt_data)
    except IntegrityError:  # created meanwhile by another request
        return Function.objects.get(project=project, slug=slug)


def _function_create(principal, project, name, slug, description, function_data, prompt_data) -> Function:
    with transaction.atomic():
        function = Function.objects.create(
            project=project,
            name=name.strip(),
            slug=slug,
            description=description or "",
            created_by=principal.user,
        )
        FunctionVersion.objects.create(
            function=function, version=1, function_data=function_data, prompt_data=prompt_data,
            created_by=principal.user,
        )  # fmt: skip
    return function


def function_update(*, principal: Principal, function: Function, name: str | None = None,
                    description: str | None = None, function_data: dict | None = None,
                    prompt_data: dict | None = None) -> Function:  # fmt: skip
    """Rename or describe a function, or give it a new version: versions never change."""
    with transaction.atomic():
        function = Function.objects.select_for_update().get(pk=function.pk)
        if name is not None:
            function.name = name.strip()
        if description is not None:
            function.description = description
        function.save()
        if function_data is not None or prompt_data is not None:
            latest = function.versions.order_by("-version").first()
            data, prompt = function_data_clean(
                function_data if function_data is not None else latest.function_data,
                prompt_data if prompt_data is not None else latest.prompt_data,
            )
            if (data, prompt) != (latest.function_data, latest.prompt_data):
                FunctionVersion.objects.create(
                    function=function, version=latest.version + 1, function_data=data, prompt_data=prompt,
                    created_by=principal.user,
                )  # fmt: skip
    return function


def function_delete(*, function: Function) -> None:
    function.delete()


def function_invoke(
    *, principal: Principal, function: Function, arguments: dict, version: int | None
) -> dict:
    """Run a scorer function on the given input, output, expected and metadata, through the
    same code as live runs: {"scores", "metadata", "metrics", "error"}."""
    ref = {
        "type": "function",
        "id": str(function.pk),
        **({"version": version} if version is not None else {}),
    }
    try:
        scorer = scorers.resolve(ref, organization=function.project.organization, principal=principal)
    except scorers.ScorerError as exc:
        raise ValidationError(str(exc), field="version" if version is not None else None) from None
    outcome = scorers.run(scorer, arguments)
    return {
        "scores": outcome.scores,
        "metadata": outcome.metadata,
        "metrics": outcome.metrics,
        "error": outcome.error,
    }


def llm_endpoint_set(*, organization, base_url: str, default_model: str, api_key: str | None) -> LLMEndpoint:
    """Set the organization's LLM endpoint; `api_key` None keeps the stored one."""
    endpoint = selectors.llm_endpoint_get(organization=organization) or LLMEndpoint(organization=organization)
    endpoint.base_url, endpoint.default_model = base_url, default_model
    if api_key is not None:
        endpoint.api_key_encrypted = llm.encrypt(api_key)
    endpoint.save()
    return endpoint


def llm_endpoint_delete(*, organization) -> None:
    LLMEndpoint.objects.filter(organization=organization).delete()
