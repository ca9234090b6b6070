"""What the conformance table cannot say: when now() is read, caching, and evaluation at the edges
of the value ranges (never an exception: out-of-range arithmetic is null)."""

import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.btql import values
from scoring.btql.predicate import predicate

ROW = {
    "id": "r",
    "created": "2025-01-01T00:00:00+00:00",
    "metadata": {"big": 1e30, "f": 0.85, "neg": -2.5, "s": "a]$", "deep": "[" * 5000, "nan": "NaN"},
    "tags": ["x"],
}

MAX = "9223372036854775807"


def test_now_is_read_when_the_predicate_runs_not_when_it_is_built():
    matches = predicate("created > now()")
    row = {"created": (datetime.now(timezone.utc) + timedelta(seconds=0.3)).isoformat()}
    assert matches(row) is True
    time.sleep(0.4)
    assert matches(row) is False


def test_the_predicate_is_cached_by_text():
    text = "metadata.cached = 'yes'"
    assert predicate(text) is predicate(text)
    assert predicate(text)({"metadata": {"cached": "yes"}}) is True


def test_a_row_without_any_field_is_all_missing():
    assert predicate("input IS NULL and metadata.a IS NULL and not tags includes 'x'")({}) is True
    assert predicate("created IS NULL")({}) is True


@pytest.mark.parametrize(
    "expression",
    [
        # numbers beyond a double are null, not an OverflowError
        " * ".join([MAX] * 17) + " * 1.0 IS NULL",
        " * ".join([MAX] * 17) + " / 2 IS NULL",
        "1e300 * 1e300 IS NULL",
        "-1e300 * 1e300 IS NULL",
        " * ".join([MAX] * 16) + " > 0",  # still within range: exact
        # timestamps outside years 1-9999 are null, not a ValueError/OverflowError
        "created + interval 9999 year IS NULL",
        "created - interval 3000 year IS NULL",
        "created + interval 315569520000 second IS NULL",
        "to_datetime('0001-01-01T00:00:00Z') - interval 1 day IS NULL",
        "created + interval 1 day > created",
        # round: any magnitude, any number of places
        "round(metadata.big) = 1e30",
        "round(metadata.big, -29) = 1e30",
        "round(1.5, 100) = 1.5",
        "round(1.5, -400) = 0",
        f"round(1.5, {MAX}) = 1.5",
        "round(metadata.f, 1) = 0.9",  # the decimal 0.85, not the double 0.8499999...
        "round(metadata.neg) = -3",
        "round(1e300 * 1e300) IS NULL",
        # json_extract: deeply nested or non-JSON numbers are null
        "json_extract(metadata.deep, 'a') IS NULL",
        "json_extract(metadata.nan, '') IS NULL",
        "json_extract('Infinity', '') IS NULL",
        "json_extract('1e999', '') IS NULL",
        "to_integer(json_extract('NaN', '')) IS NULL",
        "json_extract('[1.5, {\"a\": [true]}]', '[1].a[0]') = true",
        "json_extract('[1, 2]', '[-1]') = 2",
        "to_integer(1e300 * 1e300) IS NULL",
        "to_integer(1e300) > 0",
        # to_number reads decimal numbers in ASCII only
        "to_number('1_000') IS NULL",
        "to_number('١٢') IS NULL",
        "to_number('nan') IS NULL",
        "to_number('1e999') IS NULL",
        "to_number(' 12 ') = 12",
        "to_number('+1.5e2') = 150",
        "to_number('-.5') = -0.5",
        "to_integer('7.9') = 7",
        # a "]" first in a class is a literal, also before a "$"
        "metadata.s ~ '[]$]'",
        "metadata.s ~ 'a[]][$]$'",
        "metadata.s ~ '[^]]$'",
        "not metadata.s ~ '^[^]a]'",
        # includes()/contains() as functions
        "includes(tags, 'x') and contains(tags, 'x') and not includes(tags, 'y')",
    ],
)
def test_edges_evaluate_without_raising(expression):
    assert predicate(expression)(ROW) is True


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"bb": [1, 2], "a": 1}, '{"a": 1, "bb": [1, 2]}'),
        ({"b": 1, "a": 2, "aa": 3}, '{"a": 2, "b": 1, "aa": 3}'),
        ({"é": 1, "z": 2}, '{"z": 2, "é": 1}'),  # length in bytes: é is two
        ({"é": 1, "ab": 2}, '{"ab": 2, "é": 1}'),  # same length: in byte order
        ({"s": 'a"b\\c\nd\u0001é\u2028'}, '{"s": "a\\"b\\\\c\\nd\\u0001é\u2028"}'),
        # PostgreSQL's numeric has no negative zero
        ([1.0, 2.5, 1e20, 1e-7, -0.0], "[1.0, 2.5, 100000000000000000000, 0.0000001, 0.0]"),
        ([0.1, -2.5e-05, 123.456], "[0.1, -0.000025, 123.456]"),
        # objects of one shape reuse their key order, whatever their insertion order
        (
            [{"bb": 1, "a": 2}, {"bb": 3, "a": 4}, {"a": 5, "bb": 6}],
            '[{"a": 2, "bb": 1}, {"a": 4, "bb": 3}, {"a": 5, "bb": 6}]',
        ),
        ({"a": {}, "b": [], "c": [{}]}, '{"a": {}, "b": [], "c": [{}]}'),
        ("naïve", "naïve"),
        (True, "true"),
        (None, None),
    ],
)
def test_text_of_renders_like_postgresql_jsonb(value, text):
    assert values.text_of(value) == text


# LIKE is matched piece by piece, without backtracking: it must agree with the plain regex
# reading of the pattern (which backtracks, exponentially so on '%a%a%a...b').
_LIKE_ALPHABET = "ab%_\\"


def _like_by_regex(text: str, pattern: str) -> bool:
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append({"%": ".*", "_": "."}.get(pattern[i], re.escape(pattern[i])))
        i += 1
    return re.fullmatch("".join(out), text, re.DOTALL) is not None


@settings(max_examples=3000, deadline=None)
@given(text=st.text("ab%_\\\n", max_size=12), pattern=st.text(_LIKE_ALPHABET, max_size=8))
def test_like_agrees_with_the_regex_reading_of_its_pattern(text, pattern):
    assert values.like(text, pattern, insensitive=False) is _like_by_regex(text, pattern)
