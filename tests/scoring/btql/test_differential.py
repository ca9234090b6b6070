"""The SQL backend (`to_q`) against the Python one (`predicate`): same answer on every row.

Random expressions (as text, from a small grammar) over random spans stored with `logs_ingest`;
the reference is `predicate(text)(span_event(span))` on the span as it is read back.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projects.auth import principal_from_key
from projects.ingest.services import logs_ingest
from projects.models import Span
from projects.selectors import span_event
from scoring.btql.predicate import predicate
from scoring.btql.q import to_q
from tests.conftest import member_key
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

# -- rows ----------------------------------------------------------------------------------

_text = st.text(alphabet="abA _%\\é1", max_size=4)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.0, -1.5, 2.0, 0.1, 10.0]),
    _text,
    st.sampled_from(["a", "b", "2026-01-01", "2026-01-01T12:30:00.5Z", "1", "true", "a b", "B A"]),
)
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "bb"]), inner, max_size=3),
    ),
    max_leaves=5,
)
_CREATED = ["2026-01-01T00:00:00+00:00", "2026-01-01T12:30:00.500000+00:00", "2025-12-31T23:59:59Z"]


@st.composite
def _row(draw, i):
    row = {"id": f"r{i}", "span_id": f"s{i}", "root_span_id": draw(st.sampled_from([f"s{i}", "root"])),
           "created": draw(st.sampled_from(_CREATED))}  # fmt: skip
    if row["root_span_id"] != row["span_id"]:
        row["span_parents"] = ["root"]
    for name in ("metadata", "input", "scores", "tags"):
        if draw(st.booleans()):
            if name == "metadata":
                row[name] = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), _json, max_size=3))
            elif name == "scores":
                row[name] = {"s": draw(st.one_of(st.none(), st.integers(0, 1), st.sampled_from([0.25, 0.5])))}
            elif name == "tags":
                row[name] = draw(st.lists(st.sampled_from(["x", "y", "triage", "a b"]), max_size=3))
            else:
                row[name] = draw(_json)
    return row


# -- expressions ---------------------------------------------------------------------------

_FIELDS = ["metadata.a", "metadata.b", "metadata.a.b", "metadata.a[0]", "metadata.a[-1]", "metadata.c",
           "tags", "tags[0]", "tags[-1]", "scores.s", "input", "input.a", "created", "id", "is_root",
           "span_attributes.name", "metadata"]  # fmt: skip


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _literal_text(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal_text(x) for x in value) + "]"
    return repr(value) if value >= 0 else f"({value!r})"


_literal_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=2), max_leaves=3)
_literal = st.one_of(
    _literal_value.map(_literal_text),
    st.sampled_from(["'2026-01-01'", "'2026-01-01T12:30:00.5Z'", "'2025-12-31T23:59:59Z'"]),
)
_FUNCS1 = [
    "lower",
    "upper",
    "len",
    "to_string",
    "to_number",
    "to_integer",
    "to_boolean",
    "round",
    "to_datetime",
]
_FUNCSN = ["coalesce", "concat", "least", "greatest", "nullif", "includes"]


def _value(depth=2):
    base = st.one_of(st.sampled_from(_FIELDS), _literal)
    if depth == 0:
        return base
    sub = _value(depth - 1)
    return st.one_of(
        base,
        base,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "%"]), sub).map(
            lambda x: f"({x[0]} {x[1]} {x[2]})"
        ),
        sub.map(lambda x: f"(-{x})"),
        st.tuples(st.sampled_from(_FUNCS1), sub).map(lambda x: f"{x[0]}({x[1]})"),
        st.tuples(st.sampled_from(_FUNCSN), sub, sub).map(lambda x: f"{x[0]}({x[1]}, {x[2]})"),
        st.tuples(_condition(depth - 1), sub, sub).map(lambda x: f"({x[0]} ? {x[1]} : {x[2]})"),
        st.sampled_from(
            ["(created - interval 1 day)", "(created + interval 2 hours)", "(now() - interval 1 year)"]
        ),
    )


_PATTERNS = ["'%a%'", "'a%'", "'_'", "'%\\\\%'", "'A'", "'%1'", "'%é%'", "'%\"a\"%'", "'[%'", "'%a b%'"]
_REGEXES = ["'^a'", "'b$'", "'\\\\d'", "'a|b'", "'^[ab]+$'", "'\"a\"'", "'^.{2}$'", "'A'", "'é'"]
_MATCHES = ["'a'", "'A b'", "'triage'", "'1'", "'b_'"]


def _condition(depth=2):
    value = _value(max(depth - 1, 0))
    leaf = st.one_of(
        st.tuples(value, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), value).map(" ".join),
        st.tuples(value, st.sampled_from(["IS NULL", "IS NOT NULL"])).map(" ".join),
        st.tuples(value, st.sampled_from(["IS", "IS NOT"]), value).map(" ".join),
        st.tuples(value, st.sampled_from(["IN", "NOT IN"]), st.lists(_literal, max_size=3)).map(
            lambda x: f"{x[0]} {x[1]} [{', '.join(x[2])}]"
        ),
        st.tuples(value, st.sampled_from(["IN", "NOT IN"]), value).map(" ".join),
        st.tuples(
            value, st.sampled_from(["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]), st.sampled_from(_PATTERNS)
        ).map(" ".join),
        st.tuples(value, st.sampled_from(["MATCH", "NOT MATCH"]), st.sampled_from(_MATCHES)).map(" ".join),
        st.tuples(value, st.sampled_from(["~", "!~"]), st.sampled_from(_REGEXES)).map(" ".join),
        st.tuples(value, st.sampled_from(["INCLUDES", "NOT INCLUDES"]), value).map(" ".join),
        value,
    )
    if depth == 0:
        return leaf.map(lambda x: f"({x})")
    sub = _condition(depth - 1)
    return st.one_of(
        leaf.map(lambda x: f"({x})"),
        leaf.map(lambda x: f"({x})"),
        sub.map(lambda x: f"(NOT {x})"),
        st.tuples(sub, st.sampled_from(["AND", "OR"]), sub).map(lambda x: f"({x[0]} {x[1]} {x[2]})"),
    )


def assert_agree(project, texts):
    spans = list(Span.objects.filter(project=project))
    for text in texts:
        expected = {s.row_id for s in spans if predicate(text)(span_event(s))}
        got = set(Span.objects.filter(project=project).filter(to_q(text)).values_list("row_id", flat=True))
        assert got == expected, (
            text,
            [
                (s.row_id, {k: span_event(s)[k] for k in ("metadata", "tags", "scores", "input", "created")})
                for s in spans
                if s.row_id in got ^ expected
            ],
        )


@pytest.fixture
def ingest(org):
    principal = principal_from_key(member_key(org, role="owner"))

    def ingest(rows):
        project = ProjectFactory(organization=org)
        logs_ingest(principal=principal, rows=rows, project=project)
        return project

    return ingest


@settings(
    max_examples=int(os.environ.get("BTQL_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_sql_agrees_with_python(ingest, data):
    rows = [data.draw(_row(i)) for i in range(data.draw(st.integers(1, 6)))]
    project = ingest(rows)
    texts = data.draw(st.lists(_condition(2), min_size=1, max_size=8))
    assert_agree(project, texts)


# -- focused cases ---------------------------------------------------------------------------

_ROWS = [
    {
        "id": "n1",
        "metadata": {"a": 1, "env": "prod", "arr": [None], "s": "a b"},
        "tags": ["x", "triage"],
        "created": "2026-01-01T00:00:00Z",
        "scores": {"s": 0.5},
    },
    {
        "id": "n2",
        "metadata": {"a": 1.0, "env": "dev", "arr": [1, [2, 3]], "s": "refund please"},
        "tags": ["y"],
        "created": "2026-01-02T10:30:00.25Z",
        "input": {"bb": [1, 2], "a": 1},
    },
    {
        "id": "n3",
        "metadata": {"a": "1", "env": None, "arr": "xyz", "s": 7},
        "tags": ["triaged"],
        "output": "triaged",
        "created": "2026-01-03T00:00:00Z",
        "input": "-7",
    },
    {"id": "n4", "metadata": {"a": True}, "created": "2026-01-04T00:00:00Z", "input": 3.5},
]


@pytest.mark.parametrize(
    "text",
    [
        "metadata.a = 1",
        "metadata.a = 1.0",
        "metadata.a = '1'",
        "metadata.a = true",
        "metadata.a != 1",
        "NOT (metadata.a = 1)",
        "metadata.env != 'prod'",
        "metadata.env IS NOT 'prod'",
        "metadata.env IS NULL",
        "metadata.arr = [null]",
        "metadata.arr != [null]",
        "metadata.arr INCLUDES [2, 3]",
        "metadata.arr INCLUDES 'y'",
        "metadata.arr[-1] = [2, 3]",
        "tags INCLUDES 'triage'",
        "tags NOT INCLUDES 'triage'",
        "tags[-1] = 'triage'",
        "created > '2026-01-02'",
        "created = '2026-01-02T10:30:00.25Z'",
        "created != 'garbage'",
        "created < now() - interval 1 day",
        "input ILIKE '%\"BB\": [1, 2]%'",
        'input LIKE \'{"a": 1, "bb": [1, 2]}\'',
        "metadata.s MATCH 'REFUND'",
        "metadata.s ~ '^\\d$'",
        "to_number(input) % 2 = -1",
        "input / 2 = 1.75",
        "to_string(metadata.a * 2) = '2.0'",
        "len(input) = 2",
        "round(input) = 4",
        "metadata.a IN [1, 'x']",
        "metadata.a NOT IN [2, 'x']",
        "(metadata.a = 1 ? 'one' : 'other') = 'other'",
        "greatest(metadata.a, 0.5) = 1",
        "concat(metadata.a, '-', tags) LIKE '1%'",
        "id < 'n3'",
        "is_root",
    ],
)
def test_focused(ingest, text):
    project = ingest([{**row, "span_id": row["id"], "root_span_id": row["id"]} for row in _ROWS])
    assert_agree(project, [text])
