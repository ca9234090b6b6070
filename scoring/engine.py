"""The trigger: an ended span meets the enabled rules of its project.

Each rule decides once per span, on the row as it was when it ended:
  1. scoring spans are never scored (they are not even recorded);
  2. the BTQL filter;
  3. the selection: root spans OR the listed span names; neither set selects every span;
  4. deterministic sampling on (rule id, span row id), or the trace's root span id.
The decisions go to `SpanDecisions`, and each queued (span, rule, scorer) becomes a pending
`ScoringRun`, enqueued for the workers once the ingest transaction commits.
"""

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.db import transaction
from django.utils import timezone

from projects.ingest.services import EndedSpan
from scoring.btql.predicate import predicate
from scoring.models import Decision, Rule, ScoringRun, SpanDecisions
from scoring.scorers import reference_key

logger = logging.getLogger(__name__)


def is_scoring_span(row: dict) -> bool:
    return (row.get("span_attributes") or {}).get("purpose") == "scorer"


def sampled(rule_id, key: str, rate: float) -> bool:
    """A stable draw in [0, 1) from (rule, key), compared with the rate: the same span (or
    trace) always gets the same answer, in every process, and rules draw independently."""
    if rate >= 1:
        return True
    digest = hashlib.blake2b(f"{rule_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    matches: Callable[[dict], bool] | None  # None: no filter
    names: frozenset[str]
    key: str  # the rule's id as text, as decisions are keyed
    by_trace: bool

    @classmethod
    def of(cls, rule: Rule) -> "CompiledRule":
        text = rule.btql_filter.strip()
        return cls(
            rule,
            predicate(text) if text else None,
            frozenset(rule.apply_to_span_names or ()),
            str(rule.pk),
            rule.sample_by == Rule.SampleBy.TRACE,
        )

    def decide(self, row: dict) -> tuple[Decision, str]:
        """This rule's decision about a span row (and a message for an error)."""
        rule = self.rule
        if self.matches is not None:
            try:
                if not self.matches(row):
                    return Decision.FILTERED_OUT, ""
            except Exception as exc:  # noqa: BLE001 -- a filter that cannot run must not fail ingest
                logger.exception("The filter of rule %s failed on span %s", rule.pk, row.get("id"))
                return Decision.ERROR, f"The BTQL filter failed: {exc}"
        if rule.apply_to_root_span or self.names:
            name = (row.get("span_attributes") or {}).get("name")
            if not ((rule.apply_to_root_span and row.get("is_root")) or name in self.names):
                return Decision.NOT_SELECTED, ""
        if not sampled(self.key, row["root_span_id"] if self.by_trace else row["id"], rule.sampling_rate):
            return Decision.NOT_SAMPLED, ""
        return Decision.QUEUED, ""


def spans_end(*, ended: list[EndedSpan]) -> list[int]:
    """Decide about spans that just ended, inside the ingest transaction. Returns the ids of the
    runs created; they are enqueued after commit."""
    # Scoring spans first, from the document, so that a batch of them (a worker's write) costs
    # no query; the row (a copy in the API's shape) only for spans some rule will look at.
    ended = [e for e in ended if not is_scoring_span(e.document)]
    if not ended:
        return []
    rules = defaultdict(list)
    for rule in Rule.objects.filter(project_id__in={e.span.project_id for e in ended}, enabled=True):
        rules[rule.project_id].append(CompiledRule.of(rule))
    if not rules:
        return []
    spans = [(e, e.row) for e in ended if e.span.project_id in rules]
    now = timezone.now()
    records, runs = [], []
    for e, row in spans:
        compiled = rules.get(e.span.project_id)
        if not compiled:
            continue
        decisions, errors = {}, {}
        for c in compiled:
            decision, message = c.decide(row)
            decisions[c.key] = decision.value
            if message:
                errors[c.key] = message
            if decision == Decision.QUEUED:
                runs.extend(
                    ScoringRun(project_id=e.span.project_id, span=e.span, rule=c.rule, scorer=ref,
                               scorer_key=reference_key(ref), created=now, updated=now)
                    for ref in c.rule.scorers
                )  # fmt: skip
        records.append(
            SpanDecisions(
                span=e.span,
                project_id=e.span.project_id,
                ended_at=e.ended_at,
                decisions=decisions,
                errors=errors,
            )
        )
    # A span deleted and logged again ends again: it is a new span, with new decisions. It may
    # even end twice in one write: the last end decides, and a scorer runs once.
    records = list({record.span_id: record for record in records}.values())
    runs = list({(r.span_id, r.rule_id, r.scorer_key): r for r in runs}.values())
    SpanDecisions.objects.bulk_create(
        records,
        update_conflicts=True,
        unique_fields=["span"],
        update_fields=["ended_at", "decisions", "errors"],
    )
    restarted = []
    if runs:
        # A span deleted and logged again is a new span: the runs of its first life start over,
        # so that it keeps one run (and one score) per rule and scorer.
        existing = {
            (span_id, rule_id, scorer_key): pk
            for pk, span_id, rule_id, scorer_key in ScoringRun.objects.filter(
                span__in={run.span_id for run in runs}, rule__isnull=False
            ).values_list("pk", "span_id", "rule_id", "scorer_key")
        }
        restarted = [pk for r in runs if (pk := existing.get((r.span_id, r.rule_id, r.scorer_key)))]
        if restarted:
            # A worker still holding one of them loses its lease: its result is not recorded.
            ScoringRun.objects.filter(pk__in=restarted).update(
                status=ScoringRun.Status.PENDING, attempts=0, scores=None, error="", scoring_span_row_id="",
                not_before=None, lease_token=None, lease_expires=None, finished=None, created=now, updated=now,
            )  # fmt: skip
        runs = [r for r in runs if (r.span_id, r.rule_id, r.scorer_key) not in existing]
        ScoringRun.objects.bulk_create(runs)
    run_ids = [run.pk for run in runs] + restarted
    if run_ids:
        from scoring.services import runs_enqueue

        transaction.on_commit(partial(runs_enqueue, run_ids))
    return run_ids


def on_spans_ended(sender, ended, **kwargs):
    spans_end(ended=ended)
