"""Reads. Everything here is scoped by a Principal, so no query can cross organizations."""

import uuid
from collections import defaultdict
from datetime import datetime

from django.core import signing
from django.db.models import Q, QuerySet

from onlinescore.exceptions import Forbidden, NotFound, ValidationError
from projects.auth import Principal, has_permission
from projects.models import Comment, Project, ProjectGrant, Span

FETCH_DEFAULT_LIMIT = 100
FETCH_MAX_LIMIT = 1000


def project_get(
    *, principal: Principal, project_id, object_type: str, permission: str, field: str | None = None
) -> Project:
    """The project, if the principal may `permission` its `object_type`.

    404 for a malformed id or a project of another organization (existence does not leak
    across organizations); 403 for a project of the caller's organization it lacks rights on.
    `field`: the request body's field the id came from, which the error then names.
    """
    where = {"field": field} if field else {}
    try:
        pk = uuid.UUID(str(project_id))
    except ValueError:
        raise NotFound(f"Project {project_id} not found.", **where) from None
    project = (
        Project.objects.select_related("organization")
        .filter(pk=pk, organization=principal.organization)
        .first()
    )
    if project is None:
        raise NotFound(f"Project {project_id} not found.", **where)
    try:
        project_check(principal=principal, project=project, object_type=object_type, permission=permission)
    except (Forbidden, NotFound) as exc:
        exc.details.update(where)
        raise
    return project


def project_check(*, principal: Principal, project: Project, object_type: str, permission: str) -> None:
    """403 unless the principal may `permission` the `object_type` of a project already read
    (`project_get` reads and checks); 404 for another organization's project, as there."""
    if project.organization_id != principal.organization.pk:
        raise NotFound(f"Project {project.pk} not found.")
    if not has_permission(principal, project, object_type, permission):
        raise Forbidden(f"Missing '{permission}' permission on {object_type} of project {project.name!r}.")


def project_list(*, principal: Principal, name: str | None = None) -> QuerySet[Project]:
    """Projects of the principal's organization that it may read."""
    projects = Project.objects.filter(organization=principal.organization)
    if not principal.is_owner:
        readable = ProjectGrant.objects.filter(
            user=principal.user,
            object_type=ProjectGrant.ObjectType.PROJECT,
            permission=ProjectGrant.Permission.READ,
        ).values("project_id")
        projects = projects.filter(pk__in=readable)
    if name is not None:
        projects = projects.filter(name=name)
    return projects.order_by("name")


def logs_fetch(
    *,
    project: Project,
    limit: int = FETCH_DEFAULT_LIMIT,
    cursor: str | None = None,
    where: Q | None = None,
    order_by: list | None = None,
) -> tuple[list[dict], str | None]:
    """One page of the project's live spans matching `where`, and the cursor of the next page
    (None on the last page).

    By default newest first, with keyset pagination on (created, pk): a page never repeats or
    skips a row because of rows inserted meanwhile, whatever their `created`. With `order_by`
    (ORM ordering expressions), pages are by offset: rows inserted meanwhile may shift them.
    """
    spans = Span.objects.filter(project=project, deleted=False)
    if where is not None:
        spans = spans.filter(where)
    if order_by:
        offset = _cursor_decode(cursor, kind="offset") if cursor else 0
        page = list(spans.order_by(*order_by, "-pk")[offset : offset + limit + 1])
        next_cursor = _cursor_encode("offset", offset + limit) if len(page) > limit else None
    else:
        if cursor:
            created, pk = _cursor_decode(cursor, kind="keyset")
            spans = spans.filter(Q(created__lt=created) | Q(created=created, pk__lt=pk))
        page = list(spans.order_by("-created", "-pk")[: limit + 1])
        last = page[limit - 1] if len(page) > limit else None
        next_cursor = _cursor_encode("keyset", [last.created.isoformat(), last.pk]) if last else None
    page = page[:limit]
    comments = defaultdict(list)
    for comment in Comment.objects.filter(
        project=project, deleted=False, span_row_id__in=[s.row_id for s in page]
    ).order_by("created", "pk"):
        comments[comment.span_row_id].append(comment_event(comment))
    return [span_event(span, comments.get(span.row_id, [])) for span in page], next_cursor


def span_event(span: Span, comments: list[dict] | None = None) -> dict:
    """A stored span in Braintrust's log event shape."""
    return {
        "id": span.row_id,
        "_xact_id": str(span.xact_id),
        "created": span.created.isoformat(),
        "project_id": str(span.project_id),
        "log_id": "g",
        "span_id": span.span_id,
        "root_span_id": span.root_span_id,
        "span_parents": span.span_parents,
        "is_root": span.is_root,
        "span_attributes": span.span_attributes,
        "input": span.input,
        "output": span.output,
        "expected": span.expected,
        "error": span.error,
        "scores": span.scores,
        "metadata": span.metadata,
        "metrics": span.metrics,
        "tags": span.tags,
        "context": span.context,
        "origin": span.origin,
        "comments": comments or [],
    }


def comment_event(comment: Comment) -> dict:
    return {
        "id": comment.row_id,
        "_xact_id": str(comment.xact_id),
        "created": comment.created.isoformat(),
        "comment": comment.comment,
        "origin": comment.origin,
    }


_CURSOR_SALT = "projects.logs_fetch.cursor"


def _cursor_encode(kind: str, position) -> str:
    # Signed, so a cursor is only ever one this server made: nothing else reaches the query.
    return signing.dumps([kind, position], salt=_CURSOR_SALT, compress=True)


def _cursor_decode(cursor: str, *, kind: str):
    try:
        found, position = signing.loads(cursor, salt=_CURSOR_SALT)
        if found != kind:
            raise ValueError(kind)
        if kind == "keyset":
            return datetime.fromisoformat(position[0]), int(position[1])
        return int(position)
    except (signing.BadSignature, ValueError, TypeError, IndexError):
        raise ValidationError("cursor is not a cursor returned by this query.", field="cursor") from None
