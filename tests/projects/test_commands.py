import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from projects.auth import principal_from_key
from projects.models import Membership, User
from projects.services import instance_bootstrap

pytestmark = pytest.mark.django_db


def create_api_key(*args) -> list[str]:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_create_api_key_creates_what_is_missing_and_prints_the_key_last():
    lines = create_api_key(
        "--org", "acme", "--user", "bot@example.com", "--role", "owner", "--service-account"
    )
    principal = principal_from_key(lines[-1])
    assert principal.organization.name == "acme" and principal.is_owner
    assert principal.user.email == "bot@example.com" and principal.user.is_service_account


def test_create_api_key_reuses_the_user_and_changes_the_role_only_when_asked():
    create_api_key("--org", "acme", "--user", "a@example.com", "--role", "owner")
    second = create_api_key("--org", "acme", "--user", "a@example.com")
    assert principal_from_key(second[-1]).is_owner
    create_api_key("--org", "acme", "--user", "a@example.com", "--role", "member")
    assert Membership.objects.get(user__email="a@example.com").role == "member"
    assert User.objects.filter(email="a@example.com").count() == 1


def test_create_api_key_takes_the_first_runs_login_and_refuses_an_unknown_one():
    instance_bootstrap()
    lines = create_api_key("--org", "default", "--user", "admin")
    assert principal_from_key(lines[-1]).user.username == "admin" and User.objects.count() == 1
    with pytest.raises(CommandError, match="No user has the login 'nobody'; give an email to create one."):
        create_api_key("--org", "default", "--user", "nobody")
    assert User.objects.count() == 1


def test_create_api_key_rejects_an_unknown_role():
    with pytest.raises(CommandError):
        call_command("create_api_key", "--org", "acme", "--user", "a@example.com", "--role", "boss")


def test_bootstrap_runs_once_and_returns_a_working_key_and_login():
    credentials = instance_bootstrap()
    principal = principal_from_key(credentials["api_key"])
    assert principal.is_owner and principal.user.is_superuser
    assert User.objects.get(username="admin").check_password(credentials["password"])
    assert instance_bootstrap() is None


def test_the_worker_command_runs_jobs_from_the_embedded_redis(tmp_path):
    """A real worker process, on the embedded Redis, runs a job enqueued from here."""
    from rq import Queue

    from onlinescore.rq import embedded_redis
    from tests.support.jobs import write_file

    socket = tmp_path / "redis.sock"
    with override_settings(VAR_DIR=tmp_path, EMBEDDED_REDIS_SOCKET=socket), embedded_redis() as redis:
        target = tmp_path / "done.txt"
        Queue("default", connection=redis).enqueue(write_file, str(target), "ran")
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env.update(ONLINESCORE_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="onlinescore.settings.base")
        result = subprocess.run(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "worker", "--burst"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert target.read_text() == "ran"
