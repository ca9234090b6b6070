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
        order = ids if n % 2 else list(reversed(ids))  # the service must lock them in one order anyway
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


@pytest.mark.skipif(connection.vendor == "sqlite", reason="the test database is in memory: one connection")
def test_a_row_inserted_after_the_lock_time_check_is_merged_not_overwritten(project, monkeypatch):
    """PostgreSQL cannot lock a row that does not exist yet: another request may insert it after
    our check. Our INSERT must then fail and the batch be replanned, never overwrite theirs."""
    from projects.ingest import services

    principal = principal_from_key(member_key(project.organization, role="owner"))
    real_versions, interfered = services._versions, []

    def versions_then_interfere(keys, *, lock):
        result = real_versions(keys, lock=lock)
        if lock and not interfered:
            interfered.append(True)
            other = threading.Thread(target=_insert, args=(principal, project, {"theirs": 1}))
            other.start()
            other.join()
        return result

    monkeypatch.setattr(services, "_versions", versions_then_interfere)
    logs_ingest(
        principal=principal, rows=[{"id": "a", "_is_merge": True, "metadata": {"ours": 1}}], project=project
    )
    assert Span.objects.get(row_id="a").metadata == {"theirs": 1, "ours": 1}


def _insert(principal, project, metadata):
    try:
        logs_ingest(
            principal=principal, rows=[{"id": "a", "_is_merge": True, "metadata": metadata}], project=project
        )
    finally:
        connection.close()
