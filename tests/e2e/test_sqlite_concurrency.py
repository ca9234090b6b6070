"""The embedded SQLite database takes writers from several processes at once (web workers and
RQ workers) without "database is locked": WAL, BEGIN IMMEDIATE and a busy timeout."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.e2e

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")

SETUP = """
from projects.auth import principal_from_key
from projects.services import api_key_provision, project_get_or_create
_, raw = api_key_provision(org_name="acme", email="w@example.com", role="owner")
project_get_or_create(principal=principal_from_key(raw), name="demo")
print(raw)
"""

WRITER = """
import os
from projects.auth import principal_from_key
from projects.ingest.services import logs_ingest
from projects.models import Project
principal = principal_from_key(os.environ["KEY"])
project = Project.objects.get(name="demo")
name = os.environ["WRITER"]
for i in range(60):
    # Both writers merge into the same rows: each must keep the other's key.
    rows = [{"id": f"{i}-{j}", "_is_merge": True, "metadata": {name: j}, "metrics": {"end": 2}} for j in range(20)]
    logs_ingest(principal=principal, rows=rows, project=project)
"""


def test_two_processes_write_the_embedded_sqlite_side_by_side(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env["ONLINESCORE_VAR_DIR"] = str(tmp_path)
    subprocess.run([sys.executable, MANAGE, "migrate", "-v", "0"], env=env, check=True, timeout=120)
    raw = subprocess.run(
        [sys.executable, MANAGE, "shell", "-c", SETUP], env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-1]

    writers = [
        subprocess.Popen(
            [sys.executable, MANAGE, "shell", "-c", WRITER],
            env={**env, "KEY": raw, "WRITER": name},
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("a", "b")
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors

    database = sqlite3.connect(tmp_path / "onlinescore.sqlite3")
    rows = database.execute("SELECT metadata, ended_at FROM projects_span").fetchall()
    assert len(rows) == 60 * 20
    assert all(json.loads(metadata).keys() == {"a", "b"} and ended_at for metadata, ended_at in rows)
