"""`bulk_insert` and `bulk_update`, the one-statement writes of the ingest and scoring paths:
what they store is what the ORM stores, on SQLite and on PostgreSQL."""

from datetime import datetime, timedelta, timezone

import pytest
from django.db import IntegrityError, transaction

from projects.ingest.bulk import bulk_insert, bulk_update
from projects.models import Span
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

CREATED = datetime(2026, 11, 26, 9, 50, 22, 369840, tzinfo=timezone(timedelta(hours=5, minutes=30)))
# JSON values that compare equal but are stored apart, and the rest of what a span holds.
VALUES = [1, 1.0, True, "1", 0, False, None, [], {}, "", {"é": ["ü", 2.5, None, {"x": -0.0}]}, "a'b\"c\\d%s"]


def span_row(project, i, value) -> dict:
    return {
        "project_id": project.pk, "row_id": f"row-{i}", "span_id": f"span-{i}", "root_span_id": "root",
        "is_root": i % 2 == 0, "name": "étape", "type": "llm", "span_attributes": {"name": "étape"},
        "input": value, "output": {"answer": value}, "metadata": None, "created": CREATED + timedelta(seconds=i),
        "xact_id": 7,
    }  # fmt: skip


def stored(project) -> list[dict]:
    fields = [f.attname for f in Span._meta.concrete_fields if f.attname not in ("id", "project_id")]
    return list(Span.objects.filter(project=project).order_by("row_id").values(*fields))


def test_it_stores_what_bulk_create_stores():
    by_orm, by_bulk_insert = ProjectFactory(), ProjectFactory()
    Span.objects.bulk_create([Span(**span_row(by_orm, i, value)) for i, value in enumerate(VALUES)])
    bulk_insert(Span, [span_row(by_bulk_insert, i, value) for i, value in enumerate(VALUES)])

    assert stored(by_bulk_insert) == stored(by_orm)
    inputs = {span["row_id"]: span["input"] for span in stored(by_bulk_insert)}
    assert [type(inputs[f"row-{i}"]) for i in range(6)] == [int, float, bool, str, int, bool]


def test_it_returns_the_ids_of_the_rows_in_their_order_over_several_statements():
    project = ProjectFactory()
    # 100 rows of 24 columns: several statements on SQLite (999 values each).
    ids = bulk_insert(Span, [span_row(project, i, i) for i in range(100)], returning=True)
    assert ids == [Span.objects.get(project=project, row_id=f"row-{i}").pk for i in range(100)]


def test_a_row_that_exists_is_an_error_skipped_or_updated_as_asked():
    project = ProjectFactory()
    [first] = bulk_insert(Span, [span_row(project, 0, "first")], returning=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        bulk_insert(Span, [span_row(project, 0, "again")])

    ids = bulk_insert(Span, [span_row(project, 0, "again"), span_row(project, 1, "new")],
                      ignore_conflicts=True, returning=True)  # fmt: skip
    assert ids == [Span.objects.get(project=project, row_id="row-1").pk]
    assert Span.objects.get(pk=first).input == "first"

    bulk_insert(Span, [span_row(project, 0, "updated") | {"xact_id": 8}], unique_fields=["project", "row_id"],
                update_fields=["input", "xact_id"])  # fmt: skip
    span = Span.objects.get(pk=first)
    assert (span.input, span.output, span.xact_id) == ("updated", {"answer": "first"}, 8)


def test_bulk_update_sets_the_fields_given_as_the_orm_would_and_nothing_else():
    by_orm, by_bulk_update = ProjectFactory(), ProjectFactory()
    for project in (by_orm, by_bulk_update):
        bulk_insert(Span, [span_row(project, i, "before") for i in range(len(VALUES))])
    for i, value in enumerate(VALUES):
        Span.objects.filter(project=by_orm, row_id=f"row-{i}").update(input=value, output=None, xact_id=8)
    spans = {s.row_id: s.pk for s in Span.objects.filter(project=by_bulk_update)}
    bulk_update(Span, [{"id": spans[f"row-{i}"], "input": value, "output": None, "xact_id": 8}
                       for i, value in enumerate(VALUES)], ["input", "output", "xact_id"])  # fmt: skip

    assert stored(by_bulk_update) == stored(by_orm)
    assert {s["metadata"] for s in stored(by_bulk_update)} == {None} and stored(by_bulk_update)[0][
        "name"
    ] == "étape"


def test_bulk_update_leaves_out_rows_that_do_not_exist_and_spans_several_statements():
    project = ProjectFactory()
    ids = bulk_insert(Span, [span_row(project, i, i) for i in range(400)], returning=True)
    # 401 rows of 3 values: two statements on SQLite (999 values each).
    bulk_update(Span, [{"id": pk, "input": -i, "xact_id": 9} for i, pk in enumerate([*ids, max(ids) + 1])],
                ["input", "xact_id"])  # fmt: skip
    assert Span.objects.count() == 400
    assert [(s.input, s.xact_id) for s in Span.objects.order_by("pk")] == [(-i, 9) for i in range(400)]
