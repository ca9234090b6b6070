"""Validation of incoming log rows into writes.

Every problem is a ValidationError naming the row `index` and the `field`, so a client can
find the bad row in its batch; nothing is written for a batch with a bad row.
"""

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from onlinescore.exceptions import ValidationError

MAX_ID_LENGTH = 255

# Fields of a span row, as stored and returned.
DOCUMENT_FIELDS = frozenset({
    "id", "created", "span_id", "root_span_id", "span_parents", "span_attributes",
    "input", "output", "expected", "error", "scores", "metadata", "metrics", "tags", "context", "origin",
})  # fmt: skip
# Accepted and not stored: who wrote a row is the API key's business, not the row's.
AUDIT_FIELDS = frozenset({"_audit_source", "_audit_metadata"})
CONTROL_FIELDS = frozenset({"_is_merge", "_merge_paths", "_object_delete"})
ROUTING_FIELDS = frozenset({"project_id", "log_id", "org_id"})
OTHER_OBJECTS = ("experiment_id", "dataset_id", "prompt_session_id")
ACCEPTED_FIELDS = DOCUMENT_FIELDS | AUDIT_FIELDS | CONTROL_FIELDS | ROUTING_FIELDS | {"comment"}


# What a comment row (the SDK's log_feedback(comment=...)) does not carry: it would be dropped.
_NOT_IN_COMMENTS = DOCUMENT_FIELDS - {"id", "created", "origin"} | {"_is_merge", "_merge_paths"}


@dataclass
class Write:
    """One validated row: a span write, a tombstone, or a comment."""

    index: int
    project_id: str | None
    row_id: str
    document: dict[str, Any]
    is_merge: bool = False
    merge_paths: list[list[str]] = field(default_factory=list)
    delete: bool = False
    is_comment: bool = False
    org_id: str | None = None


def parse_row(index: int, row: Any) -> Write:
    if not isinstance(row, dict):
        raise ValidationError("A row must be a JSON object.", index=index, field=None)

    def fail(message: str, name: str):
        raise ValidationError(message, index=index, field=name)

    for name in OTHER_OBJECTS:
        if row.get(name) is not None:
            fail(f"Only project logs can be written here; {name} is not supported.", name)
    for name in row:
        if name not in ACCEPTED_FIELDS:
            hint = " Use span_parents instead." if name == "_parent_id" else ""
            fail(f"Unknown field {name!r}.{hint}", name)
    if row.get("log_id") not in (None, "g"):
        fail("log_id must be 'g' (project logs).", "log_id")
    project_id = row.get("project_id")
    for name in ("project_id", "org_id"):
        if row.get(name) is not None and not isinstance(row[name], str):
            fail(f"{name} must be a string.", name)

    row_id = row.get("id")
    if row_id is None:
        row_id = str(uuid.uuid4())
    _check_id(row_id, "id", fail)
    for name in ("_is_merge", "_object_delete"):
        if row.get(name) is not None and not isinstance(row[name], bool):
            fail(f"{name} must be a boolean.", name)
    merge_paths = row.get("_merge_paths") or []
    if not isinstance(merge_paths, list) or not all(
        isinstance(p, list) and p and all(isinstance(k, str) for k in p) for p in merge_paths
    ):
        fail("_merge_paths must be a list of paths, each a non-empty list of strings.", "_merge_paths")

    document = {name: row[name] for name in DOCUMENT_FIELDS if name in row}
    document["id"] = row_id
    _check_document(document, fail)

    if row.get("comment") is not None:
        origin = row.get("origin")
        content = sorted(set(row) & _NOT_IN_COMMENTS)
        if content:
            fail(
                f"A comment row holds a comment, not {content[0]}: log that in a row of its own.", content[0]
            )
        if not isinstance(row["comment"], dict):
            fail('comment must be an object such as {"text": "..."}.', "comment")
        if not isinstance(origin, dict) or origin.get("id") is None:
            fail("A comment row needs origin.id, the row id of the span it is about.", "origin.id")
        _check_id(origin["id"], "origin.id", fail)
        document["comment"] = row["comment"]
        return Write(
            index,
            project_id,
            row_id,
            document,
            is_comment=True,
            delete=bool(row.get("_object_delete")),
            org_id=row.get("org_id"),
        )

    return Write(
        index,
        project_id,
        row_id,
        document,
        is_merge=bool(row.get("_is_merge")),
        merge_paths=merge_paths,
        delete=bool(row.get("_object_delete")),
        org_id=row.get("org_id"),
    )


def _check_id(value: Any, name: str, fail) -> None:
    if not isinstance(value, str) or not value:
        fail(f"{name} must be a non-empty string.", name)
    if len(value) > MAX_ID_LENGTH:
        fail(f"{name} is longer than {MAX_ID_LENGTH} characters.", name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# How the braintrust SDK sends a float JSON cannot hold (NaN, an infinity): as text.
_NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})


def _without_non_finite(values: dict) -> dict:
    """`values` with the SDK's text for NaN and the infinities as null: a score or metric that is
    no number has nothing to store, and must not cost the rest of the row and its batch."""
    if not any(type(value) is str and value in _NON_FINITE for value in values.values()):
        return values
    return {
        key: None if type(value) is str and value in _NON_FINITE else value for key, value in values.items()
    }


def document_problem(document: dict[str, Any]) -> str | None:
    """Why a document the server builds from foreign input (a scorer's scores, metadata and
    metrics) would be refused as a row, naming the field; or None. The check every row gets."""

    def fail(message: str, name: str):
        raise ValidationError(message, field=name)

    try:
        _check_document(dict(document), fail)
    except ValidationError as exc:
        return f"{exc.details['field']}: {exc.message}"
    return None


def _check_document(doc: dict[str, Any], fail) -> None:
    for name in ("span_id", "root_span_id"):
        if name in doc:
            _check_id(doc[name], name, fail)
    parents = doc.get("span_parents")
    if parents is not None and (
        not isinstance(parents, list) or not all(isinstance(p, str) and p for p in parents)
    ):
        fail("span_parents must be null or a list of span ids.", "span_parents")
    for name in ("span_attributes", "metadata", "context", "origin"):
        if doc.get(name) is not None and not isinstance(doc[name], dict):
            fail(f"{name} must be an object.", name)
    for name in ("name", "type", "purpose"):
        value = (doc.get("span_attributes") or {}).get(name)
        if value is not None and not isinstance(value, str):
            fail(f"span_attributes.{name} must be a string.", f"span_attributes.{name}")
    scores = doc.get("scores")
    if scores is not None:
        if not isinstance(scores, dict):
            fail("scores must be an object of name: number.", "scores")
        scores = doc["scores"] = _without_non_finite(scores)
        for key, value in scores.items():
            if value is not None and not (_is_number(value) and 0 <= value <= 1):
                fail("A score must be a number from 0 to 1, or null.", f"scores.{key}")
    metrics = doc.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, dict):
            fail("metrics must be an object of name: number.", "metrics")
        metrics = doc["metrics"] = _without_non_finite(metrics)
        for key, value in metrics.items():
            if value is not None and not _is_number(value):
                fail("A metric must be a number or null.", f"metrics.{key}")
    tags = doc.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            fail("tags must be null or a list of strings.", "tags")
        doc["tags"] = list(dict.fromkeys(tags))  # a set, as every merge keeps it
    if "created" in doc:
        doc["created"] = _parse_created(doc["created"], fail)


def _parse_created(value: Any, fail) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        fail("created must be an ISO-8601 timestamp string.", "created")
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except ValueError:
        fail(f"created is not an ISO-8601 timestamp: {value!r}.", "created")
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        fail(f"created is out of range: {value!r}.", "created")
