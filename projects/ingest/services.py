"""The write path of the span store: validate a batch, apply it, emit "spans ended".

A batch is all-or-nothing. Rows are applied in order, each over the state left by the ones
before it, so a batch holding a span's start, end and a later log gives the same result as
three batches. Writing a batch twice changes nothing: rows whose stored columns would not
change are not written, and a batch that changes nothing takes no transaction id.

The scoring workers' results take a shorter path, `logs_record_results`, which stores what a
batch would and differs only where its docstring says.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from types import SimpleNamespace
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, OperationalError, connection, transaction
from django.db.models.functions import Collate
from django.utils import timezone

from onlinescore.exceptions import ApplicationError, NotFound, ValidationError
from projects.auth import Principal
from projects.ingest.bulk import bulk_insert, bulk_update
from projects.ingest.merge import apply_write, copy_json, has_ended
from projects.ingest.rows import Write, parse_row
from projects.models import Comment, Project, Span, Transaction
from projects.selectors import project_get, span_event
from projects.signals import spans_ended, spans_ending

_LOOKUP_CHUNK = 500
_WRITE_ATTEMPTS = 5
# PostgreSQL: unique violation, deadlock, serialization failure.
_RETRY_SQLSTATES = frozenset({"23505", "40P01", "40001"})


@dataclass(frozen=True)
class EndedSpan:
    """A span that ended in this write: the saved row, and the row as it was at its end
    (later rows of the same batch may have changed the saved one).

    The same object goes to `spans_ending`, before the write, then to `spans_ended`; before the
    write `span` is not saved yet (a new row has no pk, and no row has this write's xact_id), so
    receivers of `spans_ending` read `document` or `row_readonly`. `prepared` carries what a
    receiver works out in the first for the second, each under a key of its own."""

    span: Span
    document: dict
    ended_at: datetime
    prepared: dict = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def at_end(self) -> Span:
        """An unsaved copy of `span` (same pk) holding the row as it was at its end. Its values
        are the receiver's own: changing them changes nothing stored."""
        at_end = Span(pk=self.span.pk, project_id=self.span.project_id, row_id=self.span.row_id)
        values = {**_columns(copy_json(self.document)), "deleted": False, "ended_at": self.ended_at}
        _fill(at_end, values, self.span.xact_id)
        return at_end

    @property
    def row(self) -> dict:
        """The row as it was at its end, in the API's event shape."""
        return span_event(self.at_end)

    @property
    def row_readonly(self) -> dict:
        """`row` without the copy, for receivers that only read it: its values are the stored
        document's own, so it must not be changed. The scoring engine reads one per ended span,
        where the copy and the model instance would cost more than its 20 filters."""
        # span_event only reads attributes: a namespace holds them without a model instance.
        values = SimpleNamespace(**_columns(self.document), xact_id=self.span.xact_id,
                                 row_id=self.span.row_id, project_id=self.span.project_id)  # fmt: skip
        return span_event(values)


def logs_ingest(*, principal: Principal | None, rows: Any, project: Project | None = None) -> list[str]:
    """Write a batch of log rows and return their row ids, in input order.

    With `project` (REST insert, whose caller has checked the permission; or the system's own
    writes, such as scores, with no principal) rows may omit `project_id`; without it (/logs3)
    each row names its project, and the principal needs `update` on the logs of each. Raises ApplicationError, having
    written nothing, for any bad row. Receivers of `spans_ended` run inside the transaction: if
    one raises, nothing is written and the error propagates.
    """
    if not isinstance(rows, list):
        raise ValidationError("Expected a list of rows.", field="events" if project else "rows")
    writes = [parse_row(i, row) for i, row in enumerate(rows)]
    projects = _projects_for(principal, writes, project)
    for attempt in range(_WRITE_ATTEMPTS):
        try:
            _write(writes, projects)
            return [w.row_id for w in writes]
        except (IntegrityError, OperationalError) as exc:
            if _is_missing_parent(exc):  # a project deleted while the batch was being written
                raise NotFound("A project of this batch was deleted while it was written.") from exc
            # Another request inserted one of our new rows first, or the two deadlocked: the
            # transaction rolled back, so read the rows again and re-apply the batch.
            if attempt == _WRITE_ATTEMPTS - 1 or not _is_write_conflict(exc):
                raise


def spans_lock(*, project: Project, row_ids: set[str]) -> dict[str, Span]:
    """Lock these rows of the project's logs until the transaction ends, in the order every
    write locks rows (so that writers cannot deadlock), and return those that exist by row id,
    with their `deleted`, `created`, `ended_at` and `scores`. On SQLite the transaction holds
    the whole database already."""
    stored = _load(Span, {(project.pk, row_id) for row_id in row_ids}, lock=True, fields=_RESULT_READ)
    return {row_id: span for (_, row_id), span in stored.items()}


_RESULT_READ = ["deleted", "created", "ended_at", "scores"]


def logs_record_results(
    *, project: Project, rows: list[dict], scores: dict[str, dict], locked: dict[str, Span]
) -> None:
    """The system's own write of results about stored spans, in the caller's transaction:
    `rows`, ended rows under ids of the system's making, and `scores` ({row id: {name: value}})
    merged into the scores of those stored spans that are not deleted. `locked` is what
    `spans_lock` returned, in this transaction, for at least these rows and scored spans: the
    caller locks them first, to decide what to write from their state.

    It stores what `logs_ingest` would store for the same rows and merges (a row that exists is
    replaced, keeping its `created` and `ended_at` unless it was deleted), with two differences:
    it always writes (these are new results, not replays), and a merge never brings back a
    deleted or missing span. Without `logs_ingest`'s general machinery: of the stored rows only
    the columns `spans_lock` reads are read, under their locks, taken before the transaction id
    is (so that ids grow in commit order). A worker's batch of 200 results spent half its time in
    `logs_ingest`. The rows are checked as any row is, but not announced as ended: nothing
    reacts to the system's own results (the scoring engine never scores them)."""
    documents = [parse_row(i, row).document for i, row in enumerate(rows)]
    if not documents and not scores:
        return
    now = timezone.now()
    xact_id = Transaction.objects.create().id
    values = []
    for document in documents:
        previous = locked.get(document["id"])
        if previous is not None and previous.deleted:
            previous = None  # a deleted row written again starts afresh, as in `logs_ingest`
        document = _with_defaults(document, previous and {"created": previous.created}, now)
        ended_at = (
            previous.ended_at if previous and previous.ended_at else now if has_ended(document) else None
        )
        values.append({**_columns(document), "project_id": project.pk, "row_id": document["id"],
                       "xact_id": xact_id, "deleted": False, "ended_at": ended_at})  # fmt: skip
    bulk_insert(Span, values, update_fields=_REPLACED, unique_fields=["project", "row_id"])
    merged = [
        {"id": span.pk, "xact_id": xact_id,
         "scores": apply_write({"scores": span.scores}, {"scores": new}, is_merge=True)["scores"]}
        for row_id, new in scores.items()
        if (span := locked.get(row_id)) is not None and not span.deleted
    ]  # fmt: skip
    bulk_update(Span, merged, ["scores", "xact_id"])


def _is_missing_parent(exc: Exception) -> bool:
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    return sqlstate == "23503" or "FOREIGN KEY constraint failed" in str(exc)


def _in_code_point_order(field_name: str):
    """Order by code point, as Python sorts: the lock order must match the sorted chunks
    whatever the database's collation (SQLite compares bytes already)."""
    if connection.vendor == "postgresql":
        return Collate(field_name, "C")
    return field_name


def _is_write_conflict(exc: Exception) -> bool:
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _RETRY_SQLSTATES
    return isinstance(exc, IntegrityError) and "UNIQUE constraint failed" in str(exc)


def _projects_for(principal: Principal, writes: list[Write], project: Project | None) -> dict[int, Project]:
    """The project of each write (by index), with permission checked once per project."""
    resolved: dict[str, Project] = {}
    if project is not None:
        resolved[str(project.pk)] = project
    by_index = {}
    for w in writes:
        if w.org_id is not None and not _same_uuid(w.org_id, principal.organization.pk):
            raise ValidationError(
                "org_id is not the organization of your API key.", index=w.index, field="org_id"
            )
        if project is not None and w.project_id is not None and not _same_uuid(w.project_id, project.pk):
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


def _same_uuid(text: str, pk: uuid.UUID) -> bool:
    try:
        return uuid.UUID(text) == pk
    except ValueError:
        return False


_SPAN_JSON = ("span_parents", "span_attributes", "input", "output", "expected", "error",
              "scores", "metadata", "metrics", "tags", "context", "origin")  # fmt: skip
_SPAN_DATA = (
    *_SPAN_JSON,
    "span_id",
    "root_span_id",
    "is_root",
    "name",
    "type",
    "created",
    "deleted",
    "ended_at",
)


@dataclass
class _State:
    """One row while a batch is applied: its stored version (if any) and its current document."""

    span: Span | None
    document: dict | None = None
    deleted: bool = False
    ended_at: datetime | None = None
    ends: list[tuple[dict, datetime]] = field(default_factory=list)  # (document at its end, when)
    reborn: bool = False  # deleted, then written again, in this batch
    stored: dict | None = field(init=False)

    def __post_init__(self):
        self.stored = None if self.span is None else {name: getattr(self.span, name) for name in _SPAN_DATA}
        if self.span is not None:
            self.document = _document_of(self.span)
            self.deleted, self.ended_at = self.span.deleted, self.span.ended_at

    def values(self) -> dict | None:
        if self.document is None:
            return None
        return {**_columns(self.document), "deleted": self.deleted, "ended_at": self.ended_at}

    def changes(self) -> dict | None:
        """The new column values, or None if the row would not change. A row deleted and written
        again as it was stored is unchanged too (its `created` and `ended_at`, taken from the
        clock, do not count): else replaying such a batch would end the span again."""
        values = self.values()
        if values == self.stored:
            return None
        if self.reborn and self.stored and _without_clock(values) == _without_clock(self.stored):
            return None
        return values


def _without_clock(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in ("created", "ended_at")}


@dataclass
class _Plan:
    """What a batch changes, worked out from the rows as they were read."""

    spans: list[tuple[_State, dict, Span]]  # (state, new column values, the row to save), in key order
    ended: list[EndedSpan]  # the spans this batch ends
    comments: list[Comment]
    read: set[tuple]  # (model, project, row id) of every row the batch writes, found or not
    versions: dict[tuple, int]  # (model, project, row id) -> xact_id of each of them found


def _write(writes: list[Write], projects: dict[int, Project]) -> None:
    """Apply a batch in one transaction.

    The new state of every row is worked out before the write lock is taken (on SQLite one lock
    serializes every writer, so time under it is the ingest rate). Under the lock, the rows are
    checked to be as they were read; if another request wrote one meanwhile, the plan is made
    again from rows read under the lock. So are the spans it will end announced before the
    lock (`spans_ending`), for receivers to do their part of the work there."""
    plan = _plan(writes, projects, lock=False)
    if plan.ended:
        spans_ending.send(sender=Span, ending=plan.ended)
    with transaction.atomic():
        if _versions(plan.read, lock=True) != plan.versions:
            plan = _plan(writes, projects, lock=True)
        _save(plan)


def _plan(writes: list[Write], projects: dict[int, Project], *, lock: bool) -> _Plan:
    now = timezone.now()
    span_writes = [w for w in writes if not w.is_comment]
    span_keys = {(projects[w.index].pk, w.row_id) for w in span_writes}
    stored = _load(Span, span_keys, lock=lock)
    states: dict[tuple, _State] = {}
    for w in span_writes:
        key = (projects[w.index].pk, w.row_id)
        state = states.get(key) or states.setdefault(key, _State(stored.get(key)))
        _apply_one(state, w, now)
    comment_writes = [w for w in writes if w.is_comment]
    comment_keys = {(projects[w.index].pk, w.row_id) for w in comment_writes}
    stored_comments = _load(Comment, comment_keys, lock=lock)
    # Sorted, so that concurrent batches touching the same rows lock them in the same order.
    spans = [
        (state, values, state.span or Span(project_id=key[0], row_id=key[1]))
        for key, state in sorted(states.items())
        if (values := state.changes()) is not None
    ]
    return _Plan(
        spans=spans,
        ended=[
            EndedSpan(span, document, ended_at)
            for state, _, span in spans
            for document, ended_at in state.ends
        ],
        comments=_comment_changes(comment_writes, projects, stored_comments, now),
        read={(Span, *key) for key in span_keys} | {(Comment, *key) for key in comment_keys},
        versions={
            **{(Span, *key): span.xact_id for key, span in stored.items()},
            **{(Comment, *key): comment.xact_id for key, comment in stored_comments.items()},
        },
    )


def _versions(keys: set[tuple], *, lock: bool) -> dict[tuple, int]:
    """xact_id of each of these rows that exists, by (model, project, row id)."""
    versions = {}
    for model in (Span, Comment):
        rows = _load(model, {key[1:] for key in keys if key[0] is model}, lock=lock, fields=["xact_id"])
        versions.update({(model, *key): row.xact_id for key, row in rows.items()})
    return versions


def _save(plan: _Plan) -> None:
    if not plan.spans and not plan.comments:
        return
    xact = Transaction.objects.create()
    new, updated = [], []
    for state, values, span in plan.spans:
        _fill(span, values, xact.id)
        (updated if state.span else new).append(span)
    # New rows: a plain INSERT, so that a row another request inserted meanwhile is a unique
    # violation (and a retry), never a silent overwrite.
    for span, pk in zip(new, bulk_insert(Span, map(_row_of, new), returning=True), strict=True):
        span.pk, span._state.adding, span._state.db = pk, False, DEFAULT_DB_ALIAS  # as bulk_create does
    # Stored rows, locked: one UPDATE writes the columns that changed in any of them (an end
    # writes the output, a score merge the scores), not the whole rows and every index; the
    # ORM's bulk_update would build a CASE per column and row, and save() is a statement a row.
    fields = [*_changed_columns(plan), "xact_id"]
    bulk_update(
        Span, [{"id": span.pk, **{name: getattr(span, name) for name in fields}} for span in updated], fields
    )
    for comment in plan.comments:
        comment.xact_id = xact.id
        if comment.pk is not None:
            comment.save(update_fields=[*_COMMENT_FIELDS, "xact_id"])
    Comment.objects.bulk_create([c for c in plan.comments if c.pk is None])
    if plan.ended:
        spans_ended.send(sender=Span, ended=plan.ended)


def _changed_columns(plan: _Plan) -> list[str]:
    """The columns that change in at least one of the stored rows the plan writes."""
    changed = set()
    for state, values, _ in plan.spans:
        if state.span is not None:
            changed.update(name for name, value in values.items() if value != state.stored[name])
    return sorted(changed)


def _apply_one(state: _State, w: Write, now: datetime) -> None:
    if w.delete:
        if state.document is not None:
            state.deleted = True
        return
    # A tombstoned row is gone: a later write starts it afresh, as a new span.
    current = None if state.deleted else state.document
    document = apply_write(current, w.document, is_merge=w.is_merge, merge_paths=w.merge_paths)
    document = _with_defaults(document, current, now)
    if state.deleted:
        state.ended_at, state.reborn = None, True
    state.document, state.deleted = document, False
    if state.ended_at is None and has_ended(document):
        state.ended_at = now
        state.ends.append((document, now))  # documents are never modified once written: no copy


def _with_defaults(document: dict, previous: dict | None, now: datetime) -> dict:
    """A row without trace ids is a root span of its own. A row without `created` keeps the
    stored one, or was created now."""
    defaults = {}
    if "span_id" not in document:
        defaults["span_id"] = document["id"]
    if "root_span_id" not in document:
        defaults["root_span_id"] = document.get("span_id", document["id"])
    if document.get("created") is None:
        defaults["created"] = previous["created"] if previous else now
    return {**document, **defaults} if defaults else document


def _columns(document: dict) -> dict:
    """The stored columns of a row document (all but deleted, ended_at and xact_id)."""
    attributes = document.get("span_attributes") or {}
    return {
        **{name: document.get(name) for name in _SPAN_JSON},
        "span_attributes": attributes,
        "span_id": document["span_id"],
        "root_span_id": document["root_span_id"],
        "is_root": not document.get("span_parents"),
        "name": str(attributes.get("name") or "")[:255],
        "type": str(attributes.get("type") or "")[:64],
        "created": document["created"],
    }


_SPAN_FIELDS = [f.attname for f in Span._meta.concrete_fields if not f.primary_key]
_REPLACED = [name for name in _SPAN_FIELDS if name not in ("project_id", "row_id")]


def _row_of(span: Span) -> dict:
    return {name: getattr(span, name) for name in _SPAN_FIELDS}


def _fill(span: Span, values: dict, xact_id: int) -> None:
    for name, value in values.items():
        setattr(span, name, value)
    span.xact_id = xact_id


def _document_of(span: Span) -> dict:
    document = {name: getattr(span, name) for name in _SPAN_JSON}
    document.update(
        id=span.row_id, span_id=span.span_id, root_span_id=span.root_span_id, created=span.created
    )
    return document


_COMMENT_FIELDS = ("comment", "origin", "span_row_id", "created", "deleted")


def _comment_changes(
    writes: list[Write], projects: dict[int, Project], comments: dict[tuple, Comment], now: datetime
) -> list[Comment]:
    """The comments these writes create or change (unsaved; xact_id not yet set), given the
    stored ones (which are modified)."""
    before = {key: _comment_state(c) for key, c in comments.items()}
    for w in writes:
        key = (projects[w.index].pk, w.row_id)
        comment = comments.get(key)
        if w.delete:
            if comment is not None:
                comment.deleted = True
            continue
        comment = comments.setdefault(key, Comment(project_id=key[0], row_id=w.row_id, created=now))
        comment.comment = w.document["comment"]
        comment.origin = w.document["origin"]
        comment.span_row_id = w.document["origin"]["id"]
        comment.created = w.document.get("created") or comment.created
        comment.deleted = False
    return [c for key, c in sorted(comments.items()) if _comment_state(c) != before.get(key)]


def _comment_state(comment: Comment) -> tuple:
    return tuple(getattr(comment, name) for name in _COMMENT_FIELDS)


def _load(model, keys: set[tuple], *, lock: bool, fields: list[str] | None = None) -> dict[tuple, Any]:
    """Stored rows by (project pk, row id). With `lock`, they stay locked until the transaction
    ends (PostgreSQL; SQLite has locked the whole database), taken in a fixed order so that
    concurrent batches cannot deadlock on them."""
    by_project: dict[Any, list[str]] = {}
    for project_id, row_id in sorted(keys):
        by_project.setdefault(project_id, []).append(row_id)
    found = {}
    for project_id, row_ids in by_project.items():
        for i in range(0, len(row_ids), _LOOKUP_CHUNK):
            rows = model.objects.filter(project_id=project_id, row_id__in=row_ids[i : i + _LOOKUP_CHUNK])
            if lock:
                rows = rows.select_for_update().order_by(_in_code_point_order("row_id"))
            if fields:
                rows = rows.only("project_id", "row_id", *fields)
            for row in rows:
                found[(row.project_id, row.row_id)] = row
    return found
