"""Braintrust's write semantics, and agreement with how the real SDK batches rows."""

import copy

from braintrust.merge_row_batch import merge_row_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from projects.ingest.merge import apply_write


def write(stored, incoming, **kw):
    return apply_write(stored, incoming, is_merge=kw.pop("is_merge", True), **kw)


def test_a_row_without_is_merge_replaces_the_stored_row():
    stored = {"id": "r", "input": {"a": 5, "b": 10}, "output": 1}
    assert apply_write(stored, {"id": "r", "input": {"b": 11}}, is_merge=False) == {
        "id": "r",
        "input": {"b": 11},
    }


def test_a_merge_deep_merges_objects_and_replaces_everything_else():
    stored = {"id": "r", "input": {"a": 5, "b": 10}, "metadata": {"x": {"y": 1}}, "output": [1, 2]}
    merged = write(
        stored, {"id": "r", "input": {"b": 11, "c": 20}, "metadata": {"x": {"z": 2}}, "output": [3]}
    )
    assert merged == {
        "id": "r",
        "input": {"a": 5, "b": 11, "c": 20},
        "metadata": {"x": {"y": 1, "z": 2}},
        "output": [3],
    }


def test_a_merge_keeps_the_first_created_and_trace_position():
    stored = {"id": "r", "created": "t1", "span_id": "s", "root_span_id": "root", "span_parents": ["p"]}
    merged = write(
        stored, {"id": "r", "created": "t2", "span_id": "x", "root_span_id": "y", "span_parents": None}
    )
    assert merged == stored


def test_a_merge_unions_tags_in_first_seen_order():
    assert write({"id": "r", "tags": ["a", "b"]}, {"id": "r", "tags": ["b", "c"]})["tags"] == ["a", "b", "c"]


def test_merge_paths_stop_the_deep_merge_at_their_path():
    stored = {"id": "r", "input": {"a": {"keep": 1}, "c": {"k": 1}}, "output": {"x": 1}}
    incoming = {"id": "r", "input": {"a": {"new": 2}, "c": {"n": 2}}, "output": {"y": 2}}
    merged = write(stored, incoming, merge_paths=[["input", "a"], ["output"]])
    assert merged == {"id": "r", "input": {"a": {"new": 2}, "c": {"k": 1, "n": 2}}, "output": {"y": 2}}


def test_a_merge_into_a_missing_row_inserts_it_as_is():
    assert write(None, {"id": "r", "input": 1}) == {"id": "r", "input": 1}


def test_apply_write_modifies_neither_argument():
    stored, incoming = {"id": "r", "metadata": {"a": {"b": 1}}}, {"id": "r", "metadata": {"a": {"c": 2}}}
    before = copy.deepcopy((stored, incoming))
    write(stored, incoming)
    assert (stored, incoming) == before


# --- Property: the server applying rows one by one agrees with the SDK's client-side batching.
# Paths keep one kind of value (an object stays an object), as a real application logs them:
# merging is not associative when one write turns an object into a scalar and the next back.

scalars = st.one_of(st.integers(-5, 5), st.text("ab", max_size=2), st.booleans(), st.none())
objects = st.recursive(
    st.dictionaries(st.sampled_from(["s1", "s2"]), scalars, max_size=2),
    lambda inner: st.dictionaries(st.sampled_from(["s1", "s2", "o1", "o2"]), scalars, max_size=2).flatmap(
        lambda leaves: st.dictionaries(st.sampled_from(["o1", "o2"]), inner, max_size=2).map(
            lambda nested: {**{k: v for k, v in leaves.items() if k.startswith("s")}, **nested}
        )
    ),
    max_leaves=6,
)
partial = st.fixed_dictionaries(
    {},
    optional={
        "input": scalars,
        "output": st.lists(scalars, max_size=2),
        "metadata": objects,
        "metrics": st.dictionaries(
            st.sampled_from(["start", "end", "tokens"]), st.integers(0, 9), max_size=2
        ),
        "tags": st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=2),
        "scores": st.dictionaries(st.sampled_from(["acc", "rel"]), st.sampled_from([0, 0.5, 1]), max_size=2),
        "created": st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"]),
        "span_parents": st.sampled_from([None, ["p1"], ["p2"]]),
    },
)
event = st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.booleans(), partial)


def sdk_row(row_id, is_merge, fields):
    row = {"id": row_id, "project_id": "p", "log_id": "g", **copy.deepcopy(fields)}
    if is_merge:
        row["_is_merge"] = True
    return row


def server_apply(store, rows):
    for row in rows:
        body = {k: v for k, v in row.items() if k not in ("project_id", "log_id", "_is_merge")}
        store[row["id"]] = apply_write(store.get(row["id"]), body, is_merge=bool(row.get("_is_merge")))


@settings(max_examples=400, deadline=None)
@given(stream=st.lists(event, min_size=1, max_size=12), cuts=st.sets(st.integers(1, 11)))
def test_rows_applied_one_by_one_equal_the_sdk_batched_stream(stream, cuts):
    rows = [sdk_row(*e) for e in stream]
    one_by_one = {}
    server_apply(one_by_one, rows)

    batched = {}
    bounds = [0, *sorted(c for c in cuts if c < len(rows)), len(rows)]
    for start, end in zip(bounds, bounds[1:]):
        server_apply(batched, merge_row_batch(copy.deepcopy(rows[start:end])))
    assert batched == one_by_one
