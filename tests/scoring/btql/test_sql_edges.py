"""Stored values that look like dates or numbers but are out of range must not fail a query."""

import pytest

from projects.auth import principal_from_key
from projects.ingest.services import logs_ingest
from projects.models import Span
from projects.selectors import span_event
from scoring.btql.predicate import predicate
from scoring.btql.q import to_q
from tests.conftest import member_key

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "expression",
    [
        "metadata.when < created",
        "to_datetime(metadata.when) IS NULL",
        "to_number(metadata.big) IS NULL",
        "to_integer(metadata.big) IS NULL",
        "to_number(metadata.n) = 12",
        "nullif(true, true) IS NULL",
        "nullif(1 = 1, true) NOT LIKE 'x'",
        "nullif(1 = 1, false) NOT LIKE 'x'",
    ],
)
def test_out_of_range_strings_are_null_on_both_backends(project, expression):
    principal = principal_from_key(member_key(project.organization, role="owner"))
    rows = [{"id": "a", "metadata": {"when": "2026-13-45", "big": "1e999", "n": "12"}}]
    logs_ingest(principal=principal, rows=rows, project=project)
    span = Span.objects.get(row_id="a")
    in_python = predicate(expression)(span_event(span))
    in_sql = Span.objects.filter(project=project).filter(to_q(expression)).exists()
    assert in_python == in_sql


# --- Limits and indexes the databases would read otherwise ----------------------------------------


@pytest.mark.parametrize("expression", ["tags[4294967296] = 't'", "tags[-4294967297] = 't'",
                                        "tags[2147483648] IS NULL", "tags[0] = 't'"])  # fmt: skip
def test_an_index_beyond_32_bits_reads_nothing_on_both_backends(project, expression):
    principal = principal_from_key(member_key(project.organization, role="owner"))
    logs_ingest(principal=principal, rows=[{"id": "a", "tags": ["t"]}], project=project)
    span = Span.objects.get(row_id="a")
    in_python = predicate(expression)(span_event(span))
    in_sql = Span.objects.filter(project=project).filter(to_q(expression)).exists()
    assert in_python == in_sql == (expression in ("tags[2147483648] IS NULL", "tags[0] = 't'"))
