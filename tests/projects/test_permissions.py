"""Who may do what: no key, a bad key, a revoked key, read-only, update, owner, another org."""

import pytest

from onlinescore.exceptions import NotFound
from projects.auth import principal_of
from projects.models import APIKey, Membership, ProjectGrant, Span
from projects.selectors import project_check
from projects.services import api_key_revoke
from tests.conftest import Api, member_key
from tests.factories import OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db

ROW = {"id": "r1", "input": "hello"}


def logs_read(project):
    return [(project, "project", "read"), (project, "project_logs", "read")]


def logs_update(project):
    return [*logs_read(project), (project, "project_logs", "update")]


def calls(project):
    """(name, request) for every project-scoped endpoint."""
    pid = project.pk
    return {
        "fetch": lambda api: api.get(f"/v1/project_logs/{pid}/fetch"),
        "fetch_post": lambda api: api.post(f"/v1/project_logs/{pid}/fetch", {}),
        "insert": lambda api: api.post(f"/v1/project_logs/{pid}/insert", {"events": [ROW]}),
        "logs3": lambda api: api.post("/logs3", {"rows": [{**ROW, "project_id": str(pid)}]}, content_type=""),
        "project_get": lambda api: api.get(f"/v1/project/{pid}"),
        "project_legacy_get": lambda api: api.get("/api/project", id=str(pid)),
        "project_delete": lambda api: api.delete(f"/v1/project/{pid}"),
    }


EXPECTED = {
    # endpoint:          project only, read logs, update logs, owner, other org
    "fetch": (403, 200, 200, 200, 404),
    "fetch_post": (403, 200, 200, 200, 404),
    "insert": (403, 403, 200, 200, 404),
    "logs3": (403, 403, 200, 200, 404),
    "project_get": (200, 200, 200, 200, 404),
    "project_legacy_get": (200, 200, 200, 200, 404),
    "project_delete": (403, 403, 403, 200, 404),
}


@pytest.mark.parametrize("endpoint", sorted(EXPECTED))
def test_permission_matrix(endpoint, org, project):
    stranger_org = OrganizationFactory()
    principals = [
        Api(member_key(org, grants=[(project, "project", "read")])),
        Api(member_key(org, grants=logs_read(project))),
        Api(member_key(org, grants=logs_update(project))),
        Api(member_key(org, role=Membership.Role.OWNER)),
        Api(member_key(stranger_org, role=Membership.Role.OWNER)),
    ]
    # Each principal gets a project of its own, so that a delete by one cannot answer for the next.
    got = []
    for api in principals:
        target = ProjectFactory(organization=org)
        for grant in ProjectGrant.objects.filter(project=project):
            ProjectGrant.objects.create(project=target, user=grant.user, object_type=grant.object_type,
                                        permission=grant.permission)  # fmt: skip
        response = calls(target)[endpoint](api)
        got.append(response.status_code)
        if response.status_code >= 400:
            assert response.json()["error"]["message"], response.content
    assert tuple(got) == EXPECTED[endpoint]
    assert Span.objects.filter(project__organization=org).count() == got[:4].count(200) * (
        endpoint in ("insert", "logs3")
    )


@pytest.mark.parametrize("endpoint", sorted(EXPECTED))
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Bearer os_000000000000_secret", "Basic abc"])
def test_every_endpoint_answers_401_without_a_valid_key(endpoint, authorization, project):
    api = Api(None)
    if authorization:
        api.client.credentials(HTTP_AUTHORIZATION=authorization)
    response = calls(project)[endpoint](api)
    assert response.status_code == 401
    assert response.json()["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/api/apikey/login", "/v1/project", "/version", "/api/project/register"])
def test_handshake_endpoints_need_a_key_too(path, anonymous):
    response = anonymous.get(path) if path in ("/version", "/v1/project") else anonymous.post(path, {})
    assert response.status_code == 401


def test_a_revoked_key_is_rejected(org, project):
    raw = member_key(org, role=Membership.Role.OWNER)
    api = Api(raw)
    assert api.get(f"/v1/project/{project.pk}").status_code == 200
    api_key_revoke(key=APIKey.objects.get(prefix=raw.split("_")[1]))
    assert api.get(f"/v1/project/{project.pk}").status_code == 401


def test_a_malformed_key_is_rejected_before_any_query(org, project, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert Api("os_\x00\x01_secret").get(f"/v1/project/{project.pk}").status_code == 401


def test_a_key_with_a_wrong_secret_but_a_real_prefix_is_rejected(org, project):
    raw = member_key(org, role=Membership.Role.OWNER)
    assert Api(raw[:-2] + "xx").get(f"/v1/project/{project.pk}").status_code == 401


def test_a_key_of_someone_who_left_the_organization_is_rejected(org, project):
    raw = member_key(org, role=Membership.Role.OWNER)
    Membership.objects.filter(user__api_keys__prefix=raw.split("_")[1]).delete()
    assert Api(raw).get(f"/v1/project/{project.pk}").status_code == 401


def test_keys_are_stored_hashed(org):
    raw = member_key(org)
    key = APIKey.objects.get(prefix=raw.split("_")[1])
    assert raw not in (key.digest, key.prefix) and len(key.digest) == 64


def test_logs3_rejects_the_whole_batch_when_one_row_targets_another_org(org, project):
    foreign = ProjectFactory(organization=OrganizationFactory())
    owner = Api(member_key(org, role=Membership.Role.OWNER))
    rows = [{**ROW, "project_id": str(project.pk)}, {"id": "r2", "project_id": str(foreign.pk)}]
    response = owner.post("/logs3", {"rows": rows}, content_type="")
    assert response.status_code == 404
    assert response.json()["error"]["index"] == 1 and response.json()["error"]["field"] == "project_id"
    assert not Span.objects.exists()


def test_members_see_only_projects_they_may_read(org, project):
    hidden = ProjectFactory(organization=org, name="hidden")
    member = Api(member_key(org, grants=logs_read(project)))
    owner = Api(member_key(org, role=Membership.Role.OWNER))
    assert [p["name"] for p in member.get("/v1/project").json()["objects"]] == ["demo"]
    assert [p["name"] for p in owner.get("/v1/project").json()["objects"]] == ["demo", "hidden"]
    assert owner.get("/v1/project", project_name="hidden").json()["objects"][0]["id"] == str(hidden.pk)


def test_only_owners_create_projects(org):
    member = Api(member_key(org))
    owner = Api(member_key(org, role=Membership.Role.OWNER))
    assert member.post("/v1/project", {"name": "new"}).status_code == 403
    created = owner.post("/v1/project", {"name": "new"})
    assert created.status_code == 200 and created.json()["name"] == "new"
    assert owner.post("/v1/project", {"name": "new"}).json()["id"] == created.json()["id"]


def test_project_check_refuses_another_organizations_project_as_not_found(org):
    member_key(org, role=Membership.Role.OWNER)
    principal = principal_of(Membership.objects.get(organization=org).user, None, org)
    elsewhere = ProjectFactory(organization=OrganizationFactory(), name="secret plans")
    with pytest.raises(NotFound) as refused:
        project_check(principal=principal, project=elsewhere, object_type="project_logs", permission="read")
    assert "secret plans" not in str(refused.value)
