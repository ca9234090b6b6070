"""The write path of the span store: validate a batch, apply it, emit "spans ended".

A batch is all-or-nothing. Rows are applied in order, each over the state left by the ones
before it, so a batch holding a span's start, end and a later log gives the same result as
three batches. Writing a batch twice changes nothing: a row whose merged state equals its
stored state is not written again.
"""

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction

from onlinescore.exceptions import ApplicationError, ValidationError
from projects.auth import Principal
from projects.ingest.merge import apply_write, has_ended
from projects.ingest.rows import Write, parse_row
from projects.ingest.wire import contains_nul
from projects.models import Comment, Project, Span, Transaction
from projects.selectors import project_get, span_event
from projects.signals import spans_ended

_LOOKUP_CHUNK = 500
_WRITE_ATTEMPTS = 3


@dataclass(frozen=True)
class EndedSpan:
    """A span that ended in this write: the saved row, and the row as it was at its end
    (later rows of the same batch may have changed the saved one)."""

    span: Span
    at_end: Span

    @property
    def row(self) -> dict:
        return span_event(self.at_end)


def logs_ingest(*, principal: Principal, rows: Any, project: Project | None = None) -> list[str]:
    """Write a batch of log rows and return their row ids, in input order.

    With `project` (REST insert) rows may omit `project_id`; without it (/logs3) each row names
    its project. Each project needs `update` on its logs. Raises ApplicationError, having
    written nothing, for any bad row.
    """
    if not isinstance(rows, list):
        raise ValidationError("Expected a list of rows.", field="events" if project else "rows")
    writes = [parse_row(i, row) for i, row in enumerate(rows)]
    projects = _projects_for(principal, writes, project)
    for w in writes:
        if contains_nul(w.document):
            raise ValidationError(
                "Strings cannot contain the NUL character (\\u0000).", index=w.index, field=None
            )
    for attempt in range(_WRITE_ATTEMPTS):
        try:
            with transaction.atomic():
                return _apply(writes, projects)
        except IntegrityError:
            # Another request created one of these rows between our read and our insert:
            # the transaction rolled back, so read again and re-apply.
            if attempt == _WRITE_ATTEMPTS - 1:
                raise


def _projects_for(principal: Principal, writes: list[Write], project: Project | None) -> dict[int, Project]:
    """The project of each write (by index), with permission checked once per project."""
    resolved: dict[str, Project] = {}
    if project is not None:
        resolved[str(project.pk)] = project
    by_index = {}
    for w in writes:
        if project is not None and w.project_id is not None and w.project_id != str(project.pk):
            raise ValidationError(
                "project_id differs from the project in the URL.", index=w.index, field="project_id"
            )
        pid = str(project.pk) if project is not None else w.project_id
        if pid is None:
            raise ValidationError("Each row needs a project_id.", index=w.index, field="project_id")
        if pid not in resolved:
            try:
                resolved[pid] = project_get(
                    principal=principal, project_id=pid, object_type="project_logs", permission="update"
                )
            except ApplicationError as exc:
                exc.details.update(index=w.index, field="project_id")
                raise
        by_index[w.index] = resolved[pid]
    return by_index


@dataclass
class _State:
    span: Span | None
    document: dict | None
    deleted: bool = False
    ended_at: datetime | None = None
    at_end: dict | None = None

    def __post_init__(self):
        self.stored = (self.document, self.deleted)

    @property
    def dirty(self) -> bool:
        return (self.document, self.deleted) != self.stored


def _apply(writes: list[Write], projects: dict[int, Project]) -> list[str]:
    xact = Transaction.objects.create()
    span_writes = [w for w in writes if not w.is_comment]
    stored = _load(Span, {(projects[w.index].pk, w.row_id) for w in span_writes})
    states: dict[tuple, _State] = {}
    for w in span_writes:
        key = (projects[w.index].pk, w.row_id)
        if key not in states:
            span = stored.get(key)
            states[key] = (
                _State(span, _document_of(span), span.deleted, span.ended_at) if span else _State(None, None)
            )
        _apply_one(states[key], w, xact.created)

    created, updated, ended = [], [], []
    for (project_id, row_id), state in states.items():
        if not state.dirty:
            continue
        span = state.span or Span(project_id=project_id, row_id=row_id)
        _fill(span, state.document, xact.id, state.deleted, state.ended_at)
        (updated if state.span else created).append(span)
        if state.at_end is not None:
            ended.append((span, state.at_end))
    Span.objects.bulk_create(created)
    _update_spans(updated)
    _apply_comments([w for w in writes if w.is_comment], projects, xact)
    if ended:
        spans_ended.send(sender=Span, ended=[_ended(span, doc) for span, doc in ended])
    return [w.row_id for w in writes]


def _apply_one(state: _State, w: Write, now: datetime) -> None:
    if w.delete:
        if state.document is not None:
            state.deleted = True
        return
    # A tombstoned row is gone: a later write starts it afresh, as a new span.
    current = None if state.deleted else state.document
    document = apply_write(current, w.document, is_merge=w.is_merge, merge_paths=w.merge_paths)
    _set_defaults(document, now)
    if state.deleted:
        state.ended_at = None
    state.document, state.deleted = document, False
    if state.ended_at is None and has_ended(document):
        state.ended_at = now
        state.at_end = copy.deepcopy(document)


def _set_defaults(document: dict, now: datetime) -> None:
    """A row without trace ids is a root span of its own; without `created`, it was created now."""
    document.setdefault("span_id", document["id"])
    document.setdefault("root_span_id", document["span_id"])
    if document.get("created") is None:
        document["created"] = now


_SPAN_JSON = ("span_parents", "span_attributes", "input", "output", "expected", "error",
              "scores", "metadata", "metrics", "tags", "context", "origin")  # fmt: skip
_SPAN_COLUMNS = ["span_id", "root_span_id", "is_root", "name", "type", "created", "xact_id", "ended_at",
                 "deleted", *_SPAN_JSON]  # fmt: skip


def _fill(span: Span, document: dict, xact_id: int, deleted: bool, ended_at: datetime | None) -> None:
    for name in _SPAN_JSON:
        setattr(span, name, document.get(name))
    if span.span_attributes is None:
        span.span_attributes = {}
    span.span_id = document["span_id"]
    span.root_span_id = document["root_span_id"]
    span.is_root = not document.get("span_parents")
    span.name = str(span.span_attributes.get("name") or "")[:255]
    span.type = str(span.span_attributes.get("type") or "")[:64]
    span.created = document["created"]
    span.xact_id = xact_id
    span.deleted = deleted
    span.ended_at = ended_at


def _update_spans(spans: list[Span]) -> None:
    # One UPDATE per span: bulk_update's CASE WHEN per column and row costs far more in Python.
    for span in spans:
        span.save(update_fields=_SPAN_COLUMNS)


def _document_of(span: Span) -> dict:
    document = {name: getattr(span, name) for name in _SPAN_JSON if getattr(span, name) is not None}
    document.update(
        id=span.row_id, span_id=span.span_id, root_span_id=span.root_span_id, created=span.created
    )
    if document.get("span_attributes") == {}:
        del document["span_attributes"]
    return document


def _ended(span: Span, document: dict) -> EndedSpan:
    at_end = Span(pk=span.pk, project_id=span.project_id, row_id=span.row_id)
    _fill(at_end, document, span.xact_id, False, span.ended_at)
    return EndedSpan(span=span, at_end=at_end)


def _apply_comments(writes: list[Write], projects: dict[int, Project], xact: Transaction) -> None:
    if not writes:
        return
    comments = _load(Comment, {(projects[w.index].pk, w.row_id) for w in writes})
    before = {key: _comment_state(c) for key, c in comments.items()}
    for w in writes:
        key = (projects[w.index].pk, w.row_id)
        comment = comments.get(key)
        if w.delete:
            if comment is not None:
                comment.deleted = True
            continue
        comment = comments.setdefault(key, Comment(project_id=key[0], row_id=w.row_id, created=xact.created))
        comment.comment = w.document["comment"]
        comment.origin = w.document["origin"]
        comment.span_row_id = w.document["origin"]["id"]
        comment.created = w.document.get("created") or comment.created
        comment.deleted = False
    changed = [c for key, c in comments.items() if _comment_state(c) != before.get(key)]
    for comment in changed:
        comment.xact_id = xact.id
    Comment.objects.bulk_create([c for c in changed if c.pk is None])
    if any(c.pk is not None for c in changed):
        Comment.objects.bulk_update([c for c in changed if c.pk is not None], [*_COMMENT_FIELDS, "xact_id"])


_COMMENT_FIELDS = ("comment", "origin", "span_row_id", "created", "deleted")


def _comment_state(comment: Comment) -> tuple:
    return tuple(getattr(comment, name) for name in _COMMENT_FIELDS)


def _load(model, keys: set[tuple]) -> dict[tuple, Any]:
    """Stored rows by (project pk, row id), locked until the transaction ends (PostgreSQL)."""
    by_project: dict[Any, list[str]] = {}
    for project_id, row_id in keys:
        by_project.setdefault(project_id, []).append(row_id)
    found = {}
    for project_id, row_ids in by_project.items():
        for i in range(0, len(row_ids), _LOOKUP_CHUNK):
            chunk = row_ids[i : i + _LOOKUP_CHUNK]
            for row in model.objects.select_for_update().filter(project_id=project_id, row_id__in=chunk):
                found[(row.project_id, row.row_id)] = row
    return found
