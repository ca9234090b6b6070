"""Braintrust's row write semantics as pure functions on row documents.

A row document is the JSON object of one log event without its control fields, for example
{"id", "span_id", "input", "metadata", "metrics", "tags", ...}. A write is a document plus
its controls (`_is_merge`, `_merge_paths`); `apply_write` gives the stored document after it.
"""

import json
from collections.abc import Iterable
from typing import Any

# Kept from the first write of a row: a merge never moves a span in its trace or in time.
IDENTITY_FIELDS = ("created", "span_id", "root_span_id", "span_parents")
# Arrays that a merge unions instead of replacing, as the SDK does when it batches.
SET_UNION_FIELDS = frozenset({"tags"})


def apply_write(
    stored: dict[str, Any] | None,
    incoming: dict[str, Any],
    *,
    is_merge: bool,
    merge_paths: Iterable[Iterable[str]] = (),
) -> dict[str, Any]:
    """Return the stored document after `incoming` is written over `stored`.

    A replace (or any write to a missing row) stores `incoming` as it is. A merge deep-merges
    it: objects recursively, except below a path of `merge_paths`; `tags` set-unioned (unless
    `merge_paths` names it); any other value replaced; identity fields ignored (they stay as
    `stored` has them, even absent).

    Neither argument is modified, but the result shares values with `incoming` (copying them
    is most of the cost of a write): treat documents as immutable once written.
    """
    if stored is None or not is_merge:
        return incoming
    merged = copy_json(stored)
    updates = {k: v for k, v in incoming.items() if k not in IDENTITY_FIELDS}
    _merge_into(merged, updates, (), {tuple(p) for p in merge_paths})
    return merged


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON document (other values, such as datetimes, are immutable and
    shared). Several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def _merge_into(target: dict, source: dict, path: tuple[str, ...], merge_paths: set[tuple[str, ...]]) -> None:
    for key, value in source.items():
        here = path + (key,)
        current = target.get(key)
        union_field = not path and key in SET_UNION_FIELDS and here not in merge_paths
        if union_field and isinstance(current, list) and isinstance(value, list):
            target[key] = union(current, value)
        elif isinstance(current, dict) and isinstance(value, dict) and here not in merge_paths:
            _merge_into(current, value, here, merge_paths)
        else:
            target[key] = value


def union(first: list, second: list) -> list:
    """Items of both lists, first-seen order, each once (objects compared by their JSON)."""
    seen: set[str] = set()
    out = []
    for item in (*first, *second):
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def has_ended(document: dict[str, Any] | None) -> bool:
    metrics = (document or {}).get("metrics")
    return isinstance(metrics, dict) and metrics.get("end") is not None
