import io

import pytest
from django.core.management import call_command

from projects.models import Project, Span

pytestmark = pytest.mark.django_db


def insert(api, project, *rows):
    assert api.post(f"/v1/project_logs/{project.pk}/insert", {"events": list(rows)}).status_code == 200


def row(i, created=None):
    return {
        "id": f"r{i:03}",
        "created": created or f"2026-11-26T10:{i // 60:02}:{i % 60:02}+00:00",
        "input": i,
    }


def fetch_all(api, project, *, limit, during=None, method="get"):
    ids, cursor, pages = [], None, 0
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        path = f"/v1/project_logs/{project.pk}/fetch"
        response = api.get(path, **params) if method == "get" else api.post(path, params)
        assert response.status_code == 200, response.content
        body = response.json()
        ids += [e["id"] for e in body["events"]]
        pages += 1
        if during:
            during(pages)
        cursor = body["cursor"]
        if not cursor:
            return ids


def test_fetch_returns_newest_first_in_pages(owner, project):
    insert(owner, project, *[row(i) for i in range(25)])
    expected = [f"r{i:03}" for i in reversed(range(25))]
    assert fetch_all(owner, project, limit=10) == expected
    assert fetch_all(owner, project, limit=7, method="post") == expected


def test_pagination_is_stable_while_inserts_happen(owner, project):
    insert(owner, project, *[row(i) for i in range(30)])
    extra = iter(range(100, 200))

    def insert_between_pages(page):
        # Newer rows, older rows and rows at the very created of the page boundary.
        n = next(extra)
        insert(
            owner,
            project,
            row(n),
            row(n + 1000, created="2020-01-01T00:00:00+00:00"),
            row(n + 2000, "2026-11-26T10:00:15+00:00"),
        )

    ids = fetch_all(owner, project, limit=10, during=insert_between_pages)
    original = [f"r{i:03}" for i in reversed(range(30))]
    assert [i for i in ids if i in original] == original
    assert len(ids) == len(set(ids))


def test_fetched_events_have_the_braintrust_shape(owner, project):
    insert(owner, project, {"id": "a", "span_id": "s", "root_span_id": "s", "input": {"q": 1}, "tags": ["t"],
                            "span_attributes": {"name": "root", "type": "task"}, "metrics": {"start": 1.5}})  # fmt: skip
    [event] = owner.get(f"/v1/project_logs/{project.pk}/fetch").json()["events"]
    assert event["id"] == "a" and event["span_id"] == "s" and event["is_root"] is True
    assert event["project_id"] == str(project.pk) and event["log_id"] == "g"
    assert event["input"] == {"q": 1} and event["tags"] == ["t"] and event["metrics"] == {"start": 1.5}
    assert int(event["_xact_id"]) > 0 and event["created"].endswith("+00:00")


def test_login_describes_the_keys_organization_with_this_server_as_api_url(owner, org):
    info = owner.post("/api/apikey/login", raw=b"", content_type="").json()["org_info"]
    assert info == [{"id": str(org.pk), "name": "acme", "api_url": "http://testserver",
                     "proxy_url": "http://testserver", "git_metadata": None}]  # fmt: skip


def test_version_advertises_no_payload_limit(owner):
    assert owner.get("/version").json() == {"logs3_payload_max_bytes": None}


def test_new_sdk_project_resolve_creates_then_finds(owner, org):
    first = owner.post("/v1/project", {"name": "demo", "org_name": "acme"}).json()
    again = owner.post("/v1/project", {"name": "demo", "org_name": "acme"}).json()
    assert first["id"] == again["id"] and first["name"] == "demo" and first["org_id"] == str(org.pk)
    assert owner.get(f"/v1/project/{first['id']}").json()["name"] == "demo"
    assert owner.post("/v1/project", {"name": "demo", "org_name": "other"}).status_code == 404


def test_legacy_sdk_project_resolve(owner, org):
    registered = owner.post("/api/project/register", {"project_name": "old", "org_id": str(org.pk)}).json()
    assert registered["project"]["name"] == "old"
    assert owner.get("/api/project", id=registered["project"]["id"]).json()["name"] == "old"
    assert owner.get("/api/project").status_code == 400


def test_deleting_a_project_deletes_its_logs(owner, project):
    insert(owner, project, row(1))
    response = owner.delete(f"/v1/project/{project.pk}")
    assert response.status_code == 200 and response.json()["id"] == str(project.pk)
    assert not Project.objects.filter(pk=project.pk).exists() and not Span.objects.exists()
    assert owner.get(f"/v1/project/{project.pk}").status_code == 404


def test_malformed_project_ids_are_404s(owner):
    assert owner.get("/v1/project/not-a-uuid").status_code == 404


def test_openapi_schema_and_docs_are_served(anonymous):
    schema = anonymous.get("/api/schema/")
    assert schema.status_code == 200 and b"/v1/project_logs/{project_id}/insert" in schema.content
    assert b"bearer" in schema.content
    assert anonymous.get("/api/docs/").status_code == 200


def test_the_openapi_schema_validates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())


def test_a_disallowed_host_gets_a_json_400(owner):
    response = owner.client.get("/v1/project", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
