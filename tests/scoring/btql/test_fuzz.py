"""Fuzzing BTQL: any text either parses to an AST or is a BTQLError, and a parsed expression
never raises when it runs on a span, whatever the span holds."""

import re
from datetime import timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.btql import ast
from scoring.btql.errors import BTQLError
from scoring.btql.parser import parse
from scoring.btql.predicate import predicate
from tests.scoring.btql.test_conformance import CASES, ROWS
from tests.scoring.btql.test_parser import REFERENCE_EXAMPLES

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = sorted({expression for expression, _ in CASES} | set(REFERENCE_EXAMPLES))

TOKENS = [
    "and", "or", "not", "is", "null", "true", "false", "in", "like", "ilike", "match", "includes",
    "contains", "interval", "AND", "Not", "(", ")", "[", "]", ",", ".", "?", ":", "=", "!=", "<>", "<",
    "<=", ">", ">=", "~", "!~", "+", "-", "*", "/", "%", "'x'", '"y"', "''", "1", "-1", "0", "0.5",
    "1e3", ".5", "9223372036854775807", "metadata", "metadata.a", "metadata.\"b c\"", "tags", "tags[0]",
    "tags[-1]", "input", "output.x[2]", "created", "scores.s", "metrics.m", "span_attributes.name", "is_root",
    "id", "now()", "day", "days", "hour", "lower(", "concat(", "round(", "len(", "json_extract(",
    "to_integer(", "to_datetime(", "least(", "coalesce(", "includes(", "'%a_'", r"'\%'", r"'\d+'",
    "'^a$'", "'2025-01-01'", "'", '"', "\\", "@", "\n", "é", "日", "$", "{", "}", "#", ";", "..", "[]", "()",
]  # fmt: skip

_TOKEN = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\w+|!=|<>|<=|>=|!~|\S""", re.S)


def _parse_or_error(text: str):
    """parse's contract: an ast.Node, or a BTQLError; anything else fails the test."""
    try:
        node = parse(text)
    except BTQLError as error:
        assert error.message and error.details["line"] >= 1 and error.details["column"] >= 1
        assert 0 <= error.details["start"] <= len(text)
        return None
    assert isinstance(node, ast.Node)
    return node


# --- rows ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["x", "1", "3.5", "true", "2025-01-01", "2025-01-01T00:00:00Z", '{"a": [1]}', "%_\\", "a b"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "x", "b c", "s", "m"]) | st.text(max_size=3), children, max_size=4),
    max_leaves=12,
)  # fmt: skip

rows = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=5),
        "span_id": st.text(min_size=1, max_size=5),
        "root_span_id": st.text(min_size=1, max_size=5),
        "span_parents": st.none() | st.lists(st.text(min_size=1, max_size=3), max_size=2),
        "is_root": st.booleans(),
        "created": st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()),
        "span_attributes": st.dictionaries(st.sampled_from(["name", "type", "purpose"]), st.text(max_size=5)),
        "input": json_values,
        "output": json_values,
        "expected": json_values,
        "error": json_values,
        "metadata": st.none() | st.dictionaries(st.sampled_from(["a", "b", "b c", "x"]), json_values),
        "metrics": st.none() | st.dictionaries(st.sampled_from(["m", "tokens"]), st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)),
        "scores": st.none() | st.dictionaries(st.sampled_from(["s", "Factuality"]), st.none() | st.floats(0, 1)),
        "tags": st.none() | st.lists(st.sampled_from(["x", "y", "triage", "é"]), max_size=3, unique=True),
    }
)  # fmt: skip

FIXED_ROWS = [
    {**row, "created": row["created"].replace("Z", "+00:00"), "is_root": "span_parents" not in row}
    for row in ROWS
]


def _runs_on(node_text: str, sample_rows) -> None:
    matches = predicate(node_text)
    for row in [*sample_rows, *FIXED_ROWS[:4], {}]:
        assert matches(row) in (True, False)


# --- random text ----------------------------------------------------------------------------


@SETTINGS
@given(text=st.text(max_size=80))
def test_random_text_parses_or_is_a_btql_error(text):
    _parse_or_error(text)


@SETTINGS
@given(
    parts=st.lists(st.sampled_from(TOKENS), max_size=12),
    separator=st.sampled_from([" ", "", "\n"]),
    sample=st.lists(rows, max_size=2),
)
def test_random_token_soup(parts, separator, sample):
    text = separator.join(parts)
    if _parse_or_error(text) is not None:
        _runs_on(text, sample)


# --- mutations of valid expressions ----------------------------------------------------------

mutations = st.lists(
    st.tuples(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap"]), st.integers(0, 200), st.sampled_from(TOKENS)),
    min_size=1,
    max_size=4,
)  # fmt: skip


def _mutate(text: str, edits) -> str:
    tokens = _TOKEN.findall(text)
    for kind, where, token in edits:
        i = where % (len(tokens) + 1)
        if kind == "insert":
            tokens.insert(i, token)
        elif not tokens:
            continue
        elif kind == "delete":
            del tokens[i % len(tokens)]
        elif kind == "replace":
            tokens[i % len(tokens)] = token
        elif kind == "duplicate":
            tokens.insert(i, tokens[i % len(tokens)])
        else:
            j = (i + 1) % len(tokens)
            tokens[i % len(tokens)], tokens[j] = tokens[j], tokens[i % len(tokens)]
    return " ".join(tokens)


@SETTINGS
@given(seed=st.sampled_from(SEEDS), edits=mutations, sample=st.lists(rows, min_size=1, max_size=3))
def test_mutated_expressions_parse_or_are_btql_errors_and_never_raise_when_run(seed, edits, sample):
    text = _mutate(seed, edits)
    if _parse_or_error(text) is not None:
        _runs_on(text, sample)


@SETTINGS
@given(
    seed=st.sampled_from(SEEDS),
    cut=st.tuples(st.integers(0, 300), st.integers(0, 5)),
    sample=st.lists(rows, max_size=2),
)
def test_expressions_with_characters_cut_out(seed, cut, sample):
    start, length = cut
    start %= len(seed) + 1
    text = seed[:start] + seed[start + length :]
    if _parse_or_error(text) is not None:
        _runs_on(text, sample)


@SETTINGS
@given(seed=st.sampled_from(SEEDS), sample=st.lists(rows, min_size=1, max_size=4))
def test_every_seed_runs_on_random_rows(seed, sample):
    assert _parse_or_error(seed) is not None
    _runs_on(seed, sample)


# --- generated well-formed expressions --------------------------------------------------------

FIELD_PATHS = [
    "id", "created", "is_root", "span_parents", "span_parents[0]", "input", "output", "expected", "error",
    "input.a", "output[0]", "output[-1].x", "metadata", "metadata.a", 'metadata."b c"', "metadata.a[1].b",
    "metadata.x", "metrics.m", "metrics.tokens", "scores.s", "scores.Factuality", "tags", "tags[0]", "tags[-1]",
    "span_attributes.name", "span_attributes.type",
]  # fmt: skip
LITERALS = [
    "null", "true", "false", "0", "1", "-1", "2.5", "1e300", "9223372036854775807", "'x'", "''", "'1'",
    "'2025-01-01'", "'2025-01-01T00:00:00Z'", "'true'", "'%_'", "[]", "[1, 'x', null]", "('a', 'b')",
    "(now() - interval 1 day)", "(created + interval 9999 year)", "(created - interval 315569520000 second)",
    "now()",
]  # fmt: skip
PATTERNS = ["'a'", "'^x'", r"'\d+$'", "'[a-z]*?'", "'(?:a|b){2,}'", "'.'", "'[]$]'"]
FUNCTIONS = {
    "lower": 1, "upper": 1, "len": 1, "to_string": 1, "to_number": 1, "to_integer": 1, "to_boolean": 1,
    "to_datetime": 1, "nullif": 2, "json_extract": 2, "includes": 2, "contains": 2, "round": 2,
    "concat": 3, "coalesce": 2, "least": 3, "greatest": 2,
}  # fmt: skip
BINARY = ["=", "!=", "<>", "<", "<=", ">", ">=", "IS", "IS NOT", "IN", "NOT IN", "INCLUDES", "NOT INCLUDES",
          "CONTAINS", "and", "or", "+", "-", "*", "/", "%"]  # fmt: skip
TEXT = ["LIKE", "ILIKE", "MATCH", "NOT LIKE", "NOT ILIKE", "NOT MATCH"]


def _expressions():
    leaves = st.sampled_from(FIELD_PATHS) | st.sampled_from(LITERALS)

    def extend(children):
        return (
            st.tuples(children, st.sampled_from(BINARY), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
            | st.tuples(
                children, st.sampled_from(TEXT), st.sampled_from(["'%a%'", "'x'", "''", "metadata.a"])
            ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
            | st.tuples(children, st.sampled_from(["~", "!~"]), st.sampled_from(PATTERNS))
            .map(" ".join)
            .map("({})".format)
            | st.tuples(children, children, children).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})")
            | children.map("(not {})".format)
            | children.map("(-{})".format)
            | children.map("({} IS NULL)".format)
            | st.sampled_from(sorted(FUNCTIONS)).flatmap(
                lambda name: st.lists(children, min_size=FUNCTIONS[name], max_size=FUNCTIONS[name]).map(
                    # json_extract's path must be a string literal
                    lambda args, name=name: (
                        f"{name}({args[0]}, 'a.b[0]')"
                        if name == "json_extract"
                        else f"{name}({', '.join(args)})"
                    )
                )
            )
        )

    return st.recursive(leaves, extend, max_leaves=8)


EXPRESSIONS = _expressions()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=EXPRESSIONS, sample=st.lists(rows, min_size=1, max_size=3))
def test_well_formed_expressions_parse_and_never_raise_when_run(text, sample):
    assert _parse_or_error(text) is not None, text
    _runs_on(text, sample)
