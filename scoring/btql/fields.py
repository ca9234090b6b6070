"""The one table of what a BTQL expression may read from a span."""

# Top-level fields, and what may follow them: None: nothing (a scalar), "any": any path,
# or the set of names allowed as the next segment.
FIELDS: dict[str, frozenset[str] | str | None] = {
    "id": None,
    "span_id": None,
    "root_span_id": None,
    "is_root": None,
    "created": None,
    "span_parents": "any",
    "input": "any",
    "output": "any",
    "expected": "any",
    "error": "any",
    "tags": "any",
    "metadata": "any",
    "metrics": "any",
    "scores": "any",
    "span_attributes": frozenset({"name", "type", "purpose"}),
}

# Fields holding timestamps: compared with ISO strings as timestamps.
TIMESTAMP_FIELDS = frozenset({"created"})
