import re

import pytest

from projects.auth import principal_from_key
from projects.models import APIKey, Membership, Span
from tests.conftest import member_key

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "model", ["organization", "membership", "project", "projectgrant", "apikey", "span", "comment", "user"]
)
def test_every_model_has_an_admin_page(admin_client, model, project):
    assert admin_client.get(f"/admin/projects/{model}/").status_code == 200


def test_creating_a_key_in_the_admin_shows_it_once_and_it_works(admin_client, org, django_user_model):
    user = django_user_model.objects.create(username="bot@example.com", email="bot@example.com")
    Membership.objects.create(organization=org, user=user)
    response = admin_client.post(
        "/admin/projects/apikey/add/", {"organization": org.pk, "user": user.pk, "name": "ci"}, follow=True
    )
    raw = re.search(r"The new API key is (os_\S+) \.", response.content.decode()).group(1)
    key = APIKey.objects.get()
    assert raw.split("_")[1] == key.prefix and raw not in key.digest
    assert principal_from_key(raw).user == user
    detail = admin_client.get(f"/admin/projects/apikey/{key.pk}/change/").content.decode()
    assert raw not in detail


def test_the_admin_refuses_a_key_for_someone_outside_the_organization(admin_client, org, django_user_model):
    user = django_user_model.objects.create(username="out@example.com", email="out@example.com")
    response = admin_client.post("/admin/projects/apikey/add/", {"organization": org.pk, "user": user.pk})
    assert b"is not a member of" in response.content
    assert not APIKey.objects.exists()


def test_revoking_keys_from_the_admin(admin_client, org):
    raw = member_key(org)
    key = APIKey.objects.get()
    admin_client.post("/admin/projects/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert principal_from_key(raw) is None


def test_spans_are_read_only_in_the_admin(admin_client, owner, project):
    owner.post(f"/v1/project_logs/{project.pk}/insert", {"events": [{"id": "row-7f3a", "input": "x"}]})
    span = Span.objects.get(row_id="row-7f3a")
    assert admin_client.get("/admin/projects/span/add/").status_code == 403
    assert b"row-7f3a" in admin_client.get("/admin/projects/span/").content
    detail = admin_client.get(f"/admin/projects/span/{span.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    admin_client.post(f"/admin/projects/span/{span.pk}/change/", {"row_id": "changed"})
    assert Span.objects.filter(row_id="row-7f3a").exists()


def test_the_admin_is_branded_and_links_the_api_docs(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert '<a href="/admin/">onlinescore</a>' in page and 'href="/api/docs/"' in page
    assert '<link rel="icon" href="data:,">' in page  # no request for a /favicon.ico that is not there
