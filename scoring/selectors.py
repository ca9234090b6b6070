"""Reads of logs through BTQL: the logs fetch with a filter, and POST /btql."""

import contextlib
import uuid
from collections import defaultdict

from django.db.models import Case, Count, Min, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Substr
from django.utils import timezone

from onlinescore.exceptions import NotFound
from projects.auth import Principal, has_permission
from projects.models import Project, Span
from projects.selectors import logs_fetch, project_get, project_list
from scoring.btql.q import evaluated, order_expression, to_q
from scoring.btql.query import parse_query
from scoring.engine import is_scoring_span
from scoring.models import (
    DECISION_CODES,
    Decision,
    Function,
    LLMEndpoint,
    Rule,
    RuleSet,
    ScoringRun,
    SpanDecisions,
)
from scoring.scorers import builtin
from scoring.scorers import reference_name as scorer_reference_name


def logs_search(
    *, project: Project, filter_text: str | None = None, limit: int, cursor: str | None = None
) -> tuple[list[dict], str | None]:
    """The project's spans matching a BTQL filter, newest first, a page at a time."""
    with evaluated(filter_text or "", field="filter"):
        where = to_q(filter_text) if filter_text and filter_text.strip() else None
        return logs_fetch(project=project, limit=limit, cursor=cursor, where=where)


def btql_run(*, principal: Principal, query: str) -> tuple[list[dict], str | None]:
    """Run a BTQL query (see scoring/btql/query.py) with the principal's read rights on logs."""
    with evaluated(query, field="query"):
        parsed = parse_query(query)
        where = to_q(parsed.filter) if parsed.filter else None
    project = project_get(
        principal=principal, project_id=parsed.project_id, object_type="project_logs", permission="read"
    )
    if where is not None and parsed.shape == "traces":
        # Every span of each trace that has at least one matching span.
        matching = Span.objects.filter(project=project, deleted=False).filter(where).values("root_span_id")
        where = Q(root_span_id__in=Subquery(matching))
    # `sort: created desc` is the default order, which has the stable keyset cursor.
    sort = () if parsed.sort == ((("created",), True),) else parsed.sort
    order_by = [order_expression(path, descending=desc) for path, desc in sort]
    with evaluated(query, field="query"):
        return logs_fetch(
            project=project, limit=parsed.limit, cursor=parsed.cursor, where=where, order_by=order_by
        )


# --- Online scoring ------------------------------------------------------------------------


def rule_list(*, principal: Principal, project_id=None, name: str | None = None) -> QuerySet[Rule]:
    """The rules of one project, or of every project the principal may read."""
    rules = _in_readable_projects(Rule, principal=principal, project_id=project_id)
    if name is not None:
        rules = rules.filter(name=name)
    return rules.order_by("project_id", "created", "pk")


def _in_readable_projects(model, *, principal: Principal, project_id=None) -> QuerySet:
    """The model's objects in one project (404/403 as project_get decides), or in every project
    the principal may read."""
    if project_id is not None:
        project = project_get(
            principal=principal, project_id=project_id, object_type="project", permission="read"
        )
        return model.objects.filter(project=project)
    return model.objects.filter(project__in=project_list(principal=principal))


def rule_get(*, principal: Principal, rule_id, permission: str) -> Rule:
    """A rule, if the principal has `permission` on its project (404 across organizations)."""
    return _project_object_get(Rule, rule_id, principal=principal, permission=permission, label="Rule")


def _project_object_get(model, object_id, *, principal: Principal, permission: str, label: str):
    """An object of one of the principal's organization's projects, by its UUID, if the principal
    has `permission` on that project. 404 for a malformed id or another organization's object."""
    try:
        pk = uuid.UUID(str(object_id))
    except ValueError:
        raise NotFound(f"{label} {object_id} not found.") from None
    found = (
        model.objects.select_related("project__organization")
        .filter(pk=pk, project__organization=principal.organization)
        .first()
    )
    if found is None:
        raise NotFound(f"{label} {object_id} not found.")
    project_get(
        principal=principal, project_id=found.project_id, object_type="project", permission=permission
    )
    return found


def scoring_state(*, project: Project, row_id: str) -> dict:
    """Why a span has (or has no) score: each rule's decision about it, with its runs, and the
    manual runs on it. Decisions are those taken when the span ended; rules made or enabled
    since then did not see it."""
    span = Span.objects.filter(project=project, row_id=row_id, deleted=False).first()
    if span is None:
        raise NotFound(f"No log with id {row_id!r} in this project.")
    record = SpanDecisions.objects.filter(span=span).select_related("rule_set").first()
    decisions, errors = (record.decisions, record.errors) if record else ({}, {})
    runs = defaultdict(list)
    for run in ScoringRun.objects.filter(span=span).select_related("span").order_by("pk"):
        runs[run.rule_id].append(run)
    is_scorer = is_scoring_span({"span_attributes": span.span_attributes})
    label = _scorer_labels([run for project_runs in runs.values() for run in project_runs])
    rules = []
    for rule in Rule.objects.filter(project=project).order_by("created", "pk"):
        decision, message = _rule_decision(
            rule, span, decisions, errors, runs.get(rule.pk, []), is_scorer, label
        )
        rules.append(
            {
                "rule_id": str(rule.pk),
                "rule_name": rule.name,
                "enabled": rule.enabled,
                "decision": decision,
                "message": message,
                "runs": [run_summary(run) for run in runs.get(rule.pk, [])],
            }
        )
    return {
        "id": span.row_id,
        "span_id": span.span_id,
        "ended_at": span.ended_at.isoformat() if span.ended_at else None,
        "rules": rules,
        "manual_runs": [run_summary(run) for run in runs.get(None, [])],
    }


_EXPLANATIONS = {
    Decision.FILTERED_OUT: "The span did not match the rule's BTQL filter when it ended.",
    Decision.NOT_SELECTED: "The span is neither a root span nor one of the rule's span names.",
    Decision.NOT_SAMPLED: "The span matched, but was not drawn by the rule's sampling rate.",
    Decision.QUEUED: "The span is queued for scoring.",
    Decision.SCORED: "Every scorer of the rule scored the span.",
}


def _rule_decision(
    rule: Rule, span: Span, decisions: dict, errors: dict, runs: list[ScoringRun], is_scorer: bool, label
) -> tuple[str, str]:
    if is_scorer:
        return "not_evaluated", "Scoring spans are never scored."
    if span.ended_at is None:
        return "not_evaluated", "The span has not ended: rules decide when a span ends (metrics.end)."
    code = decisions.get(str(rule.pk))
    if code is None:
        if rule.created > span.ended_at:
            why = "The rule was created after the span ended."
        else:
            why = "The rule was not enabled when the span ended."
        return "not_evaluated", (
            f"{why} Score it by hand: the Score button of its trace, or POST /v1/project_logs/{span.project_id}/score."
        )
    if code == Decision.ERROR:
        return code, errors.get(str(rule.pk), "")
    if code == Decision.QUEUED and runs:
        failed = [run for run in runs if run.status == ScoringRun.Status.ERROR]
        if failed:
            return Decision.ERROR.value, "; ".join(f"{label(r)}: {r.error}" for r in failed)
        if all(run.status == ScoringRun.Status.DONE for run in runs):
            return Decision.SCORED.value, _EXPLANATIONS[Decision.SCORED]
    return code, _EXPLANATIONS[Decision(code)]


def _scorer_labels(runs: list[ScoringRun]):
    """A run's scorer as people know it: a built-in's name, a custom scorer's name (its id if
    it was deleted). One query for all the runs."""
    ids = {}  # as the reference spells it -> the function's pk
    for run in runs:
        if run.scorer.get("type") == "function":
            with contextlib.suppress(ValueError, TypeError, AttributeError):  # checked when saved
                ids[run.scorer["id"]] = uuid.UUID(run.scorer["id"])
    names = dict(Function.objects.filter(pk__in=set(ids.values())).values_list("pk", "name"))
    return lambda run: names.get(ids.get(run.scorer.get("id"))) or scorer_reference_name(run.scorer)


def run_summary(run: ScoringRun) -> dict:
    return {
        "id": run.pk,
        "project_id": str(run.project_id),
        "row_id": run.span.row_id,
        "rule_id": str(run.rule_id) if run.rule_id else None,
        "scorer": run.scorer,
        "status": run.status,
        "attempts": run.attempts,
        "scores": run.scores,
        "error": run.error or None,
        "scoring_span_id": run.scoring_span_row_id or None,
        "created": run.created.isoformat(),
        "finished": run.finished.isoformat() if run.finished else None,
    }


def runs_get(*, principal: Principal, run_ids: list[int]) -> list[ScoringRun]:
    """Runs by id, each on a project whose logs the principal may read; 404 names the first
    that is not."""
    runs = {
        run.pk: run
        for run in ScoringRun.objects.select_related("span", "project").filter(
            pk__in=run_ids, project__organization=principal.organization
        )
    }
    readable: dict = {}
    for run_id in run_ids:
        run = runs.get(run_id)
        if run is not None and run.project_id not in readable:
            readable[run.project_id] = has_permission(principal, run.project, "project_logs", "read")
        if run is None or not readable[run.project_id]:
            raise NotFound(f"Scoring run {run_id} not found.", field="ids")
    return [runs[run_id] for run_id in run_ids]


def rule_stats(*, rule: Rule) -> dict:
    """Counts over the spans the rule saw: matched (passed the filter and the selection),
    sampled, scored (every run done) and errored (a run failed); pending runs, and the queue
    lag, the age in seconds of the oldest unfinished run."""
    # The rule's decision is the character at its place in the codes of each rule set it is in.
    places = {
        pk: rules.index(str(rule.pk))
        for pk, rules in RuleSet.objects.filter(project=rule.project_id).values_list("pk", "rules")
        if str(rule.pk) in rules
    }
    code = Case(
        *(When(rule_set=pk, then=Substr("codes", i + 1, 1)) for pk, i in places.items()), default=Value("")
    )
    seen = SpanDecisions.objects.filter(project=rule.project_id, rule_set__in=places).annotate(code=code)
    sampled = DECISION_CODES[Decision.QUEUED]
    matched = seen.filter(code__in=[DECISION_CODES[Decision.NOT_SAMPLED], sampled]).count()
    runs = ScoringRun.objects.filter(rule=rule)
    per_span = runs.values("span").annotate(
        failed=Count("pk", filter=Q(status=ScoringRun.Status.ERROR)),
        open=Count("pk", filter=Q(status__in=[ScoringRun.Status.PENDING, ScoringRun.Status.RUNNING])),
    )
    unfinished = runs.filter(status__in=[ScoringRun.Status.PENDING, ScoringRun.Status.RUNNING])
    oldest = unfinished.aggregate(oldest=Min("created"))["oldest"]
    return {
        "matched": matched,
        "sampled": seen.filter(code=sampled).count(),
        "scored": per_span.filter(failed=0, open=0).count(),
        "errored": per_span.filter(failed__gt=0).count(),
        "pending_runs": unfinished.count(),
        "queue_lag_seconds": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
    }


# --- Custom scorers (functions) --------------------------------------------------------------


def function_list(*, principal: Principal, project_id=None, slug: str | None = None, name: str | None = None):
    functions = _in_readable_projects(Function, principal=principal, project_id=project_id)
    if slug is not None:
        functions = functions.filter(slug=slug)
    if name is not None:
        functions = functions.filter(name=name)
    return functions.select_related("project").order_by("project_id", "name", "pk")


def function_get(*, principal: Principal, function_id, permission: str) -> Function:
    """A function, if the principal has `permission` on its project (404 across organizations)."""
    return _project_object_get(
        Function, function_id, principal=principal, permission=permission, label="Function"
    )


def function_event(function: Function) -> dict:
    """A function in Braintrust's shape, with its latest version."""
    latest = function.versions.order_by("-version").first()
    return {
        "id": str(function.pk),
        "project_id": str(function.project_id),
        "name": function.name,
        "slug": function.slug,
        "description": function.description,
        "function_type": function.function_type,
        "function_data": latest.function_data,
        "prompt_data": _prompt_data_shown(latest.prompt_data),
        "version": latest.version,
        "created": function.created.isoformat(),
    }


def _prompt_data_shown(prompt_data: dict | None) -> dict | None:
    """As it was given: choice_scores in their order (kept apart: see
    services.functions._prompt_data_clean)."""
    if not prompt_data:
        return prompt_data
    parser = dict(prompt_data["parser"])
    order = parser.pop("choice_order", None) or list(parser["choice_scores"])
    parser["choice_scores"] = {choice: parser["choice_scores"][choice] for choice in order}
    return {**prompt_data, "parser": parser}


# --- The web UI's pages ------------------------------------------------------------------------

TRACE_MAX_SPANS = 2000


def traces_page(
    *, project: Project, filter_text: str | None, limit: int, cursor: str | None = None
) -> tuple[list[dict], str | None]:
    """The logs list: root spans (one per trace) matching the filter, newest first."""
    where = Q(is_root=True)
    with evaluated(filter_text or "", field="filter"):
        if filter_text and filter_text.strip():
            where &= to_q(filter_text)
        return logs_fetch(project=project, limit=limit, cursor=cursor, where=where)


def scorer_errors(*, project: Project, row_ids: list[str]) -> dict[str, list[str]]:
    """By row id, the scorers whose latest run on that span failed, each as "name: error": what
    the logs list flags (a score that failed leaves no value to show)."""
    latest = {}
    runs = ScoringRun.objects.filter(project=project, span__row_id__in=row_ids).select_related("span")
    for run in runs.only("scorer", "scorer_key", "status", "error", "span__row_id").order_by("pk"):
        latest[(run.span.row_id, run.scorer_key)] = run
    failed = [run for run in latest.values() if run.status == ScoringRun.Status.ERROR]
    label = _scorer_labels(failed)
    errors = defaultdict(list)
    for run in failed:
        errors[run.span.row_id].append(f"{label(run)}: {run.error}")
    return errors


RULE_ERRORS_SHOWN = 50


def rule_errors(*, rule: Rule, limit: int = RULE_ERRORS_SHOWN) -> list[dict]:
    """The rule's most recent failed runs, newest first: where each failed (the span's row id
    and name), which scorer, when, and why. What the rules page's error count opens."""
    runs = list(
        ScoringRun.objects.filter(rule=rule, status=ScoringRun.Status.ERROR)
        .select_related("span")
        .only("scorer", "error", "finished", "span__row_id", "span__name")
        .order_by("-finished", "-pk")[:limit]
    )
    label = _scorer_labels(runs)
    return [
        {"row_id": run.span.row_id, "span_name": run.span.name, "scorer": label(run),
         "finished": run.finished, "error": run.error}
        for run in runs
    ]  # fmt: skip


def trace_get(*, project: Project, row_id: str) -> list[dict]:
    """Every span of the trace that `row_id` belongs to, depth first from the root, children
    in start order; scoring spans sit under the span they scored. Each is the span's event
    with `depth`, and `offset`/`width` placing its timing within the trace in percent."""
    span = Span.objects.filter(project=project, row_id=row_id, deleted=False).first()
    if span is None:
        raise NotFound(f"No log with id {row_id!r} in this project.")
    events, _ = logs_fetch(project=project, limit=TRACE_MAX_SPANS, where=Q(root_span_id=span.root_span_id))
    by_span_id = {event["span_id"]: event for event in events}
    children = defaultdict(list)
    roots = []
    for event in events:
        parent = next((p for p in event["span_parents"] or [] if p in by_span_id), None)
        if parent is None:
            roots.append(event)
        else:
            children[parent].append(event)
    starts = [_metric(e, "start") for e in events if _metric(e, "start") is not None]
    ends = [_metric(e, "end") for e in events if _metric(e, "end") is not None]
    t0, t1 = (min(starts), max(ends + starts)) if starts else (0.0, 0.0)
    total = (t1 - t0) or 1.0

    ordered = []

    def visit(event: dict, depth: int) -> None:
        start = _metric(event, "start")
        event["depth"] = depth
        event["duration"] = span_duration(event)
        event["offset"] = round(100 * (start - t0) / total, 2) if start is not None else 0
        event["width"] = max(round(100 * (event["duration"] or 0) / total, 2), 0.5)
        event["is_scorer"] = is_scoring_span(event)
        ordered.append(event)
        for child in sorted(children[event["span_id"]], key=_start_key):
            visit(child, depth + 1)

    for root in sorted(roots, key=_start_key):
        visit(root, 0)
    return ordered


def span_duration(event: dict) -> float | None:
    """Seconds from the span's `metrics.start` to its `metrics.end`, when it has both."""
    start, end = _metric(event, "start"), _metric(event, "end")
    return end - start if start is not None and end is not None else None


def _metric(event: dict, name: str) -> float | None:
    value = (event.get("metrics") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _start_key(event: dict):
    start = _metric(event, "start")
    return (start is None, start or 0.0, event["created"])


def scorer_choices(*, principal: Principal) -> list[dict]:
    """What a rule or a manual run may use, grouped as the pickers show it: the autoevals
    built-ins (local, then LLM-backed), and the custom scorers of each project the principal
    can read. Each option is {"label", "ref", "description"}."""
    groups = []
    for needs_llm, title in ((False, "Autoevals"), (True, "Autoevals (LLM)")):
        options = [
            {
                "label": entry["name"],
                "ref": {"type": "global", "name": entry["name"]},
                "description": "uses " + ", ".join(entry["requires"] + entry["optional"]),
            }
            for entry in builtin.catalogue()
            if entry["needs_llm"] is needs_llm
        ]
        groups.append({"group": title, "options": options})
    by_project = defaultdict(list)
    for function in function_list(principal=principal):
        by_project[function.project.name].append(
            {
                "label": function.name,
                "ref": {"type": "function", "id": str(function.pk)},
                "description": function.description,
            }
        )
    groups += [
        {"group": f"Project {name}", "options": options} for name, options in sorted(by_project.items())
    ]
    return groups


def llm_endpoint_get(*, organization) -> LLMEndpoint | None:
    """The organization's endpoint for LLM-backed scorers, if it set one."""
    return LLMEndpoint.objects.filter(organization=organization).first()
