"""The trigger: an ended span meets the enabled rules of its project.

Each rule decides once per span, on the row as it was when it ended:
  1. scoring spans are never scored (they are not even recorded);
  2. the BTQL filter;
  3. the selection: root spans OR the listed span names; neither set selects every span;
  4. deterministic sampling on (rule id, span row id), or the trace's root span id.
The decisions go to `SpanDecisions`, and each queued (span, rule, scorer) becomes a pending
`ScoringRun`, enqueued for the workers once the ingest transaction commits. The deciding is
done before the write takes its lock when the project's rules are known from an earlier write
(`spans_prepare`), so that under the lock only the inserts are left.
"""

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.db import transaction
from django.utils import timezone

from projects.ingest.bulk import bulk_insert
from projects.ingest.services import EndedSpan
from scoring.btql.predicate import predicate
from scoring.models import DECISION_CODES, Decision, Rule, RuleSet, ScoringRun, SpanDecisions
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
    scorers: tuple[tuple[dict, str], ...]  # (reference, its key) of each scorer

    @classmethod
    def of(cls, rule: Rule) -> "CompiledRule":
        text = rule.btql_filter.strip()
        return cls(
            rule,
            predicate(text) if text else None,
            frozenset(rule.apply_to_span_names or ()),
            str(rule.pk),
            rule.sample_by == Rule.SampleBy.TRACE,
            tuple((ref, reference_key(ref)) for ref in rule.scorers),
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


@dataclass(frozen=True)
class Compiled:
    """A project's enabled rules, compiled, and the rule set their decisions are recorded in."""

    rules: tuple[CompiledRule, ...]
    rule_set_id: int


# By project: (what its rules' stamp was, Compiled). See `rules_enabled`.
_compiled: dict = {}
_COMPILED_PROJECTS = 10_000  # beyond this, start over rather than grow without bound


def rules_enabled(project_ids: set) -> dict:
    """The enabled rules of these projects, compiled, by project (projects without any are
    left out). Reading each rule's id and `updated` is enough to tell whether the rules compiled
    for an earlier write are still the project's: a rule saved, enabled, disabled, created or
    deleted changes that list. Only then are the rules read and compiled again."""
    stamps = defaultdict(set)
    enabled = Rule.objects.filter(project_id__in=project_ids, enabled=True)
    for project_id, pk, updated in enabled.values_list("project_id", "pk", "updated"):
        stamps[project_id].add((pk, updated))
    compiled = {
        p: cached[1] for p, stamp in stamps.items() if (cached := _compiled.get(p)) and cached[0] == stamp
    }
    if stale := stamps.keys() - compiled.keys():
        if len(_compiled) > _COMPILED_PROJECTS:
            _compiled.clear()
        fresh = defaultdict(list)
        for rule in enabled.filter(project_id__in=stale):
            fresh[rule.project_id].append(rule)
        for project_id in stale:
            found = fresh[project_id]
            rule_set_id, made = _rule_set(project_id, [str(r.pk) for r in found])
            compiled[project_id] = Compiled(tuple(CompiledRule.of(r) for r in found), rule_set_id)
            entry = ({(r.pk, r.updated) for r in found}, compiled[project_id])
            if made:
                # Kept once committed: if this write rolls back, its rule set is gone too.
                transaction.on_commit(partial(_compiled.__setitem__, project_id, entry))
            else:
                _compiled[project_id] = entry
    for project_id in project_ids - stamps.keys():
        _compiled.pop(project_id, None)  # no rule left: `spans_prepare` has nothing to do
    return compiled


def _rule_set(project_id, rules: list[str]) -> tuple[int, bool]:
    """The id of the rule set of these rules, and whether this call made it (the first time
    they are the project's enabled rules)."""
    digest = hashlib.sha256(json.dumps(rules).encode()).hexdigest()
    # ON CONFLICT DO NOTHING, then read: another process may make the same set meanwhile, and a
    # unique violation would abort the ingest transaction this runs in.
    made = bulk_insert(RuleSet, [{"project_id": project_id, "rules": rules, "digest": digest,
                                  "created": timezone.now()}], ignore_conflicts=True, returning=True)  # fmt: skip
    if made:
        return made[0], True
    return RuleSet.objects.values_list("pk", flat=True).get(project_id=project_id, digest=digest), False


_NO_ERRORS: dict = {}  # shared, so that it is serialized once per insert


def spans_prepare(*, ending: list[EndedSpan]) -> None:
    """Decide about spans about to end, before the ingest write takes its lock, so that
    `spans_end` has only the inserts left to do under it. With no query: by the rules compiled
    for the project's last write, which `spans_end` checks are still its rules. The decisions
    are kept with those rules, in `EndedSpan.prepared`."""
    for e in ending:
        _, compiled = _compiled.get(e.span.project_id, (None, None))
        if compiled and not is_scoring_span(e.document):
            e.prepared[__name__] = (compiled, _decide(e, compiled))


def _decide(e: EndedSpan, compiled: Compiled) -> tuple[str, dict, list[CompiledRule]]:
    """Every rule's decision about a span (its codes), any errors, and the rules that queue it."""
    row = e.row_readonly
    codes, errors, queued = [], {}, []
    for c in compiled.rules:
        decision, message = c.decide(row)
        codes.append(DECISION_CODES[decision])
        if message:
            errors[c.key] = message
        if decision is Decision.QUEUED:
            queued.append(c)
    return "".join(codes), errors or _NO_ERRORS, queued


def spans_end(*, ended: list[EndedSpan]) -> list[int]:
    """Decide about spans that just ended (or take the decisions of `spans_prepare`), inside the
    ingest transaction. Returns the ids of the runs created; they are enqueued after commit."""
    # Scoring spans first, from the document: a batch holding only such rows (logged again by a
    # client, say; the workers' own results do not come here) costs no query.
    ended = [e for e in ended if not is_scoring_span(e.document)]
    if not ended:
        return []
    rules = rules_enabled({e.span.project_id for e in ended})
    if not rules:
        return []
    now = timezone.now()
    # A span deleted and logged again ends again: it is a new span, with new decisions. It may
    # even end twice in one write: the last end decides, and a scorer runs once. One deleted by
    # a later row of the write has nothing left to score.
    records, runs_by_span = {}, {}
    for e in ended:
        compiled = rules.get(e.span.project_id)
        if not compiled or e.span.deleted:
            continue
        # Decided before the lock on the same row, by these very rules (any change to them
        # makes `rules_enabled` compile them again): what deciding now would give.
        prepared = e.prepared.get(__name__)
        codes, errors, queued = prepared[1] if prepared and prepared[0] is compiled else _decide(e, compiled)
        span_id, project_id = e.span.pk, e.span.project_id
        runs_by_span[span_id] = {
            (span_id, c.rule.pk, scorer_key): {
                "project_id": project_id, "span_id": span_id, "rule_id": c.rule.pk, "scorer": ref,
                "scorer_key": scorer_key, "created": now, "updated": now,
            }
            for c in queued
            for ref, scorer_key in c.scorers
        }  # fmt: skip
        records[span_id] = {"span_id": span_id, "project_id": project_id, "ended_at": e.ended_at,
                            "rule_set_id": compiled.rule_set_id, "codes": codes, "errors": errors}  # fmt: skip
    bulk_insert(SpanDecisions, records.values(), update_fields=["ended_at", "rule_set", "codes", "errors"])
    runs = {key: run for span_runs in runs_by_span.values() for key, run in span_runs.items()}
    # The runs that exist already are not inserted (nor returned).
    run_ids = bulk_insert(ScoringRun, runs.values(), ignore_conflicts=True, returning=True)
    if len(run_ids) < len(runs):
        # A span deleted and logged again is a new span: the runs of its first life start over,
        # so that it keeps one run (and one score) per rule and scorer.
        new = set(run_ids)
        existing = {
            (span_id, rule_id, scorer_key): pk
            for pk, span_id, rule_id, scorer_key in ScoringRun.objects.filter(
                span__in={key[0] for key in runs}, rule__isnull=False
            ).values_list("pk", "span_id", "rule_id", "scorer_key")
            if pk not in new
        }
        restarted = [pk for key in runs if (pk := existing.get(key))]
        # A worker still holding one of them loses its lease: its result is not recorded.
        ScoringRun.objects.filter(pk__in=restarted).update(
            status=ScoringRun.Status.PENDING, attempts=0, scores=None, error="", scoring_span_row_id="",
            not_before=None, lease_token=None, lease_expires=None, finished=None, created=now, updated=now,
        )  # fmt: skip
        run_ids += restarted
    if run_ids:
        from scoring.services.runs import runs_enqueue

        transaction.on_commit(partial(runs_enqueue, run_ids))
    return run_ids


def on_spans_ended(sender, ended, **kwargs):
    spans_end(ended=ended)


def on_spans_ending(sender, ending, **kwargs):
    spans_prepare(ending=ending)
