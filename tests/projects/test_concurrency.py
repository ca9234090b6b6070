"""Concurrent batches writing the same rows: none fails, no merge is lost (PostgreSQL; the
embedded SQLite is covered by tests/e2e/test_sqlite_concurrency.py with real processes)."""

import threading

import pytest
from django.db import connection

from projects.auth import principal_from_key
from projects.ingest.services import logs_ingest
from projects.models import Span
from tests.conftest import member_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.skipif(connection.vendor == "sqlite", reason="the test database is in memory: one connection")
def test_concurrent_merges_into_the_same_new_rows_all_land(project):
    principal = principal_from_key(member_key(project.organization, role="owner"))
    ids = [f"row-{i}" for i in range(30)]
    errors = []

    def writer(n: int):
        order = ids if n % 2 else list(reversed(ids))  # opposite lock orders, the deadlock recipe
        rows = [{"id": row_id, "_is_merge": True, "metadata": {f"w{n}": True}} for row_id in order]
        try:
            for _ in range(3):
                logs_ingest(principal=principal, rows=rows, project=project)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Span.objects.filter(project=project).count() == 30
    for span in Span.objects.filter(project=project):
        assert span.metadata == {f"w{n}": True for n in range(8)}
