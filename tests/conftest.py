import gzip
import json

import pytest
from rest_framework.test import APIClient

from projects.models import Membership, ProjectGrant
from projects.services import api_key_create
from tests.factories import OrganizationFactory, ProjectFactory, UserFactory


class Api:
    """A test client that authenticates with one API key and posts raw JSON like the SDK."""

    def __init__(self, raw_key: str | None):
        self.client = APIClient()
        if raw_key:
            self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    def get(self, path, **params):
        return self.client.get(path, params)

    def delete(self, path):
        return self.client.delete(path)

    def post(
        self, path, body=None, *, content_type="application/json", gzipped=False, raw: bytes | None = None
    ):
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        extra = {}
        if gzipped:
            data = gzip.compress(data)
            extra["HTTP_CONTENT_ENCODING"] = "gzip"
        return self.client.generic("POST", path, data, content_type=content_type, **extra)


def member_key(organization, *, role=Membership.Role.MEMBER, grants=(), email=None) -> str:
    user = UserFactory(email=email) if email else UserFactory()
    Membership.objects.create(organization=organization, user=user, role=role)
    for project, object_type, permission in grants:
        ProjectGrant.objects.create(
            project=project, user=user, object_type=object_type, permission=permission
        )
    return api_key_create(organization=organization, user=user)[1]


@pytest.fixture
def org(db):
    return OrganizationFactory(name="acme")


@pytest.fixture
def project(org):
    return ProjectFactory(organization=org, name="demo")


@pytest.fixture
def owner(org):
    return Api(member_key(org, role=Membership.Role.OWNER))


@pytest.fixture
def anonymous(db):
    return Api(None)
