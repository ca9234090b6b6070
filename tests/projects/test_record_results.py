"""logs_record_results: the system's own write of results stores what logs_ingest would store
for the same rows and score merges, except that a deleted span stays deleted."""

import pytest

from onlinescore.exceptions import ValidationError
from projects.ingest.services import logs_ingest, logs_record_results, spans_lock
from projects.models import Span, Transaction
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

# The columns a write sets; `created`, `ended_at` and `xact_id` come from the clock and the
# write, and are checked apart.
COMPARED = ["row_id", "span_id", "root_span_id", "span_parents", "is_root", "name", "type", "span_attributes",
            "input", "output", "expected", "error", "scores", "metadata", "metrics", "tags", "context", "origin",
            "deleted"]  # fmt: skip

SCORED = [
    {"id": "no-scores", "span_id": "a", "root_span_id": "a", "metrics": {"start": 1, "end": 2}},
    {"id": "has-scores", "span_id": "b", "root_span_id": "a", "span_parents": ["a"], "scores": {"human": 0.5, "x": 1}},
]  # fmt: skip


def result_row(row_id, parent, **fields) -> dict:
    return {"id": row_id, "span_id": row_id, "root_span_id": "a", "span_parents": [parent],
            "span_attributes": {"name": "ExactMatch", "type": "score", "purpose": "scorer"},
            "input": {"output": "Paris", "expected": "Paris"}, "metadata": None,
            "metrics": {"start": 10.0, "end": 11.0}, **fields}  # fmt: skip


RESULTS = [
    result_row("r1", "a", output={"score": 1}, scores={"ExactMatch": 1}),
    result_row("r2", "b", error="The scorer raised ValueError: boom"),
    result_row("again", "b", output={"score": 0.25}, scores={"Levenshtein": 0.25}),
]
MERGES = {"no-scores": {"ExactMatch": 1}, "has-scores": {"x": 0, "Levenshtein": None}, "missing": {"y": 1}}


def stored(project) -> dict[str, dict]:
    return {row["row_id"]: row for row in Span.objects.filter(project=project).values(*COMPARED)}


def project_with_spans():
    project = ProjectFactory()
    logs_ingest(principal=None, project=project, rows=SCORED)
    # A result row written before, in an earlier life of its run: it is replaced whole.
    logs_ingest(
        principal=None, project=project, rows=[result_row("again", "b", output={"score": 0}, tags=["old"])]
    )
    return project


def record(project, rows, scores):
    """As a worker records: lock the rows and the scored spans, then write."""
    locked = spans_lock(project=project, row_ids={row["id"] for row in rows} | scores.keys())
    logs_record_results(project=project, rows=rows, scores=scores, locked=locked)


def clock_of(project, row_id) -> tuple:
    return Span.objects.values_list("created", "ended_at").get(project=project, row_id=row_id)


def test_it_stores_what_logs_ingest_stores():
    by_ingest, by_results = project_with_spans(), project_with_spans()
    clocks = {project: clock_of(project, "again") for project in (by_ingest, by_results)}
    logs_ingest(principal=None, project=by_ingest, rows=RESULTS + [
        {"id": row_id, "_is_merge": True, "scores": values} for row_id, values in MERGES.items() if row_id != "missing"
    ])  # fmt: skip
    before = Transaction.objects.order_by("-pk").values_list("pk", flat=True).first()

    record(by_results, RESULTS, MERGES)

    assert stored(by_results) == stored(by_ingest)
    assert stored(by_results)["has-scores"]["scores"] == {"human": 0.5, "x": 0, "Levenshtein": None}
    # One new transaction for every row written; the results are ended spans.
    written = Span.objects.filter(
        project=by_results, row_id__in=["r1", "r2", "again", "no-scores", "has-scores"]
    )
    (xact,) = Transaction.objects.filter(pk__gt=before)
    assert {span.xact_id for span in written} == {xact.pk}
    assert all(span.ended_at is not None for span in written.filter(row_id__in=["r1", "r2", "again"]))
    # A row written again keeps when it was created and ended, as with logs_ingest.
    assert all(clock_of(project, "again") == clock for project, clock in clocks.items())
    # A merge into a row that does not exist writes nothing (logs_ingest would make a row).
    assert not Span.objects.filter(project=by_results, row_id="missing").exists()


def test_a_deleted_span_gets_no_score_and_stays_deleted():
    project = project_with_spans()
    logs_ingest(principal=None, project=project, rows=[{"id": "no-scores", "_object_delete": True}])

    record(project, [], {"no-scores": {"ExactMatch": 1}})

    span = Span.objects.get(project=project, row_id="no-scores")
    assert span.deleted and span.scores is None


def test_a_deleted_row_written_again_starts_afresh():
    project = project_with_spans()
    logs_ingest(principal=None, project=project, rows=[{"id": "again", "_object_delete": True}])
    before = clock_of(project, "again")

    record(project, [result_row("again", "b", output={"score": 1})], {})

    span = Span.objects.get(project=project, row_id="again")
    assert not span.deleted and span.output == {"score": 1} and span.tags is None
    assert span.created > before[0] and span.ended_at > before[1]


def test_a_bad_row_is_refused_and_nothing_is_written():
    project = project_with_spans()
    count = Span.objects.count()
    with pytest.raises(ValidationError, match="score must be a number"):
        record(project, [result_row("bad", "a", scores={"x": 2})], {"no-scores": {"ExactMatch": 1}})
    assert Span.objects.count() == count
    assert Span.objects.get(project=project, row_id="no-scores").scores is None


def test_nothing_to_write_takes_no_transaction():
    project = project_with_spans()
    count = Transaction.objects.count()
    record(project, [], {})
    assert Transaction.objects.count() == count
