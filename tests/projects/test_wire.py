"""The quick text check that spares most bodies the full walk must never miss a bad value."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from projects.ingest.wire import MAX_DEPTH, _locate_problem, _may_hold_unstorable, _parse_float

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),  # NaN and Infinity literals fail to parse
    st.floats(min_value=1e15, max_value=1e20),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=8),
)
documents = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
)


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


def test_numbers_of_1e16_and_more_become_the_integers_postgresql_would_return():
    assert _parse_float("1.7326123456789012e+18") == 1732612345678901200
    assert isinstance(_parse_float("1e16"), int) and _parse_float("1.5") == 1.5


@settings(max_examples=500, deadline=None)
@given(document=documents, ensure_ascii=st.booleans())
def test_every_unstorable_value_trips_the_quick_check(document, ensure_ascii):
    try:
        # As a body arrives: UTF-8 bytes, which cannot hold a surrogate except as an escape.
        text = json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:
        return
    if _locate_problem(json.loads(text, parse_float=_parse_float), ()) is not None:
        assert _may_hold_unstorable(text)


def test_nesting_past_the_limit_trips_the_quick_check():
    assert _may_hold_unstorable(json.dumps(nested(MAX_DEPTH // 2 + 1)))
    assert not _may_hold_unstorable(json.dumps(nested(MAX_DEPTH // 2 - 1)))
    assert not _may_hold_unstorable(
        json.dumps({"s": "[[[[" * 100, "uuid": "8f036fbe-fcef-4215-8614-3e1472d837af"})
    )


def test_overflowing_number_literals_trip_the_quick_check():
    for text in ('{"a": 1e400}', '{"a": -1E+999}', '{"a": 9223372036854775808}', "[" + "9" * 400 + "]"):
        assert _may_hold_unstorable(text), text
