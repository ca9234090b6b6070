"""The logs API through BTQL: fetch with `filter`, and POST /btql."""

import pytest
from django.db import connection

from projects.models import Membership
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db

ROWS = [
    {"id": "t1-root", "span_id": "t1", "root_span_id": "t1", "created": "2026-11-20T10:00:00+00:00",
     "metadata": {"model": "gpt-4", "n": 3}, "span_attributes": {"name": "root", "type": "task"}},
    {"id": "t1-llm", "span_id": "t1-a", "root_span_id": "t1", "span_parents": ["t1"],
     "created": "2026-11-20T10:00:01+00:00", "metadata": {"model": "claude", "n": 1}, "error": "boom",
     "span_attributes": {"name": "call", "type": "llm"}},
    {"id": "t2-root", "span_id": "t2", "root_span_id": "t2", "created": "2026-11-21T10:00:00+00:00",
     "metadata": {"model": "gpt-4", "n": 2}, "span_attributes": {"name": "root", "type": "task"}},
    {"id": "t3-root", "span_id": "t3", "root_span_id": "t3", "created": "2026-11-22T10:00:00+00:00",
     "metadata": {"n": 10}, "span_attributes": {"name": "root", "type": "task"}},
]  # fmt: skip


@pytest.fixture
def logged(owner, project):
    response = owner.post(f"/v1/project_logs/{project.pk}/insert", {"events": ROWS})
    assert response.status_code == 200
    return project


def ids(events):
    return [e["id"] for e in events]


def btql(api, query):
    return api.post("/btql", {"query": query})


def test_fetch_filters_with_btql_by_get_and_post(owner, logged):
    path = f"/v1/project_logs/{logged.pk}/fetch"
    assert ids(owner.get(path, filter="metadata.model = 'gpt-4'").json()["events"]) == ["t2-root", "t1-root"]
    body = owner.post(path, {"filter": "metadata.n >= 3", "limit": 1}).json()
    assert ids(body["events"]) == ["t3-root"]
    assert ids(
        owner.post(path, {"filter": "metadata.n >= 3", "cursor": body["cursor"]}).json()["events"]
    ) == ["t1-root"]


SLOW = "(a|aa)+$"  # backtracks exponentially on a run of a's that ends otherwise


def test_a_regular_expression_that_runs_out_of_time_is_a_400_not_a_hang(owner, project):
    """Each search has SEARCH_SECONDS; on SQLite the search runs in the query, and its failure
    must come back as the filter's error. PostgreSQL runs `~` itself."""
    insert = owner.post(
        f"/v1/project_logs/{project.pk}/insert", {"events": [{"id": "a", "input": "a" * 60 + "b"}]}
    )
    assert insert.status_code == 200
    response = owner.get(f"/v1/project_logs/{project.pk}/fetch", filter=f"input ~ '{SLOW}'")
    if connection.vendor != "sqlite":
        assert response.status_code == 200 and response.json()["events"] == []
        return
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "btql_error", error
    assert "took longer than 0.1 s" in error["message"] and (error["line"], error["column"]) == (1, 1)
    score = owner.post(f"/v1/project_logs/{project.pk}/score",
                       {"scorers": [{"type": "global", "name": "ExactMatch"}], "filter": f"input ~ '{SLOW}'"})  # fmt: skip
    assert score.status_code == 400 and score.json()["error"]["field"] == "filter"


def test_a_bad_filter_is_a_400_with_its_field_and_position(owner, logged):
    url = f"/v1/project_logs/{logged.pk}/fetch"
    for response in (
        owner.get(url, filter="metadata.model = = 'x'"),
        owner.post(url, {"filter": "metadata.model = = 'x'"}),
    ):
        error = response.json()["error"]
        assert response.status_code == 400 and error["code"] == "btql_error" and error["field"] == "filter"
        assert (error["line"], error["column"]) == (1, 18) and "^" in error["snippet"]


def test_btql_spans_with_filter_sort_and_limit(owner, logged):
    query = f"select: *\nfrom: project_logs('{logged.pk}')\nfilter: span_attributes.type = 'task'\nsort: metadata.n asc\nlimit: 2"
    body = btql(owner, query).json()
    assert ids(body["data"]) == ["t2-root", "t1-root"]
    rest = btql(owner, query + f"\ncursor: '{body['cursor']}'").json()
    assert ids(rest["data"]) == ["t3-root"] and rest["cursor"] is None


def test_btql_clauses_can_be_separated_by_pipes(owner, logged):
    query = f"select: * | from: project_logs('{logged.pk}') | filter: error IS NOT NULL"
    assert ids(btql(owner, query).json()["data"]) == ["t1-llm"]


def test_btql_traces_shape_returns_whole_traces(owner, logged):
    query = f"from: project_logs('{logged.pk}') traces | filter: error IS NOT NULL"
    assert sorted(ids(btql(owner, query).json()["data"])) == ["t1-llm", "t1-root"]


def test_btql_default_order_is_newest_first(owner, logged):
    assert ids(btql(owner, f"from: project_logs('{logged.pk}')").json()["data"]) == [
        "t3-root", "t2-root", "t1-llm", "t1-root",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "line", "column"),
    [
        ("from: project_logs('{pid}')\nfilter: metdata.x = 1", 2, 9),
        ("from: project_logs('{pid}')\nwhere: x", 2, 1),
        ("select: id\nfrom: project_logs('{pid}')", 1, 9),
        ("from: experiment('x')", 1, 7),
        ("from: project_logs('{pid}')\nlimit: lots", 2, 8),
        ("from: project_logs('{pid}')\nsort: lower(input)", 2, 7),
        ("filter: input = 1", 1, 1),
        ("from: project_logs('{pid}')\nsort: created desc,", 2, 21),
        ("from: project_logs('{pid}')\nsort:", 2, 6),
        ("from: project_logs('{pid}')\nlimit: \u00b2", 2, 8),
        ("from: project_logs('{pid}')\nsort: tags[-1]", 2, 7),
        ("from: project_logs('{pid}')\nsort: metadata.\"123\"", 2, 7),
        ("from: project_logs('{pid}')\nsort: " + ", ".join(f"metadata.k{i}" for i in range(21)), 2, 7),
        ("from: project_logs('{pid}')\nfilter: metadata.x in [" + ",".join(["1"] * 1100) + "]", 2, 23),
    ],
)
def test_btql_errors_point_into_the_query(owner, logged, query, line, column):
    response = btql(owner, query.format(pid=logged.pk))
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "btql_error" and error["field"] == "query", error
    assert (error["line"], error["column"]) == (line, column), error


def test_btql_needs_read_on_the_projects_logs(org, logged):
    no_grant = Api(member_key(org))
    stranger = Api(member_key(OrganizationFactory(), role=Membership.Role.OWNER))
    query = f"from: project_logs('{logged.pk}')"
    assert btql(no_grant, query).status_code == 403
    assert btql(stranger, query).status_code == 404
    assert btql(Api(None), query).status_code == 401
    other = ProjectFactory(organization=org)
    assert btql(no_grant, f"from: project_logs('{other.pk}')").status_code == 403


@pytest.mark.parametrize(
    "expression",
    [
        "created < '0001-01-01T00:00:00+14:00'",
        "created > '9999-12-31T23:59:59-14:00'",
        "not includes(metadata.missing, 1)",
        "created + interval 10000 year > now()",
        "round(metadata.n, 9223372036854775807) = 3",
    ],
)
def test_edge_filters_answer_the_same_in_python_and_sql(owner, logged, expression):
    from projects.models import Span
    from projects.selectors import span_event
    from scoring.btql.predicate import predicate

    response = owner.get(f"/v1/project_logs/{logged.pk}/fetch", filter=expression)
    assert response.status_code == 200, response.content
    in_python = sorted(
        s.row_id for s in Span.objects.filter(project=logged) if predicate(expression)(span_event(s))
    )
    assert sorted(ids(response.json()["events"])) == in_python


def test_a_fetch_body_takes_json_numbers_and_its_query_string_takes_text(owner, logged):
    path = f"/v1/project_logs/{logged.pk}/fetch"
    response = owner.post(path, {"limit": "1"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "limit"
    assert len(owner.get(path, limit="1").json()["events"]) == 1
