"""Reads of logs through BTQL: the logs fetch with a filter, and POST /btql."""

from django.db.models import Q, Subquery

from projects.auth import Principal
from projects.models import Project, Span
from projects.selectors import logs_fetch, project_get
from scoring.btql.q import order_expression, to_q
from scoring.btql.query import parse_query


def logs_search(
    *, project: Project, filter_text: str | None = None, limit: int, cursor: str | None = None
) -> tuple[list[dict], str | None]:
    """The project's spans matching a BTQL filter, newest first, a page at a time."""
    where = to_q(filter_text) if filter_text and filter_text.strip() else None
    return logs_fetch(project=project, limit=limit, cursor=cursor, where=where)


def btql_run(*, principal: Principal, query: str) -> tuple[list[dict], str | None]:
    """Run a BTQL query (see scoring/btql/query.py) with the principal's read rights on logs."""
    parsed = parse_query(query)
    project = project_get(
        principal=principal, project_id=parsed.project_id, object_type="project_logs", permission="read"
    )
    where = to_q(parsed.filter) if parsed.filter else None
    if where is not None and parsed.shape == "traces":
        # Every span of each trace that has at least one matching span.
        matching = Span.objects.filter(project=project, deleted=False).filter(where).values("root_span_id")
        where = Q(root_span_id__in=Subquery(matching))
    # `sort: created desc` is the default order, which has the stable keyset cursor.
    sort = () if parsed.sort == ((("created",), True),) else parsed.sort
    order_by = [order_expression(path, descending=desc) for path, desc in sort]
    return logs_fetch(
        project=project, limit=parsed.limit, cursor=parsed.cursor, where=where, order_by=order_by
    )
