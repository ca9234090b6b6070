"""A worker recording results while ingest starts the same span's runs over, on PostgreSQL with
two connections: they lock rows in one order, so neither waits for the other in a cycle."""

import threading
import time

import pytest
from django.db import connection

from projects.ingest.services import logs_ingest
from projects.models import APIKey
from scoring import services
from scoring.models import ScoringRun
from scoring.services import runs

pytestmark = pytest.mark.django_db(transaction=True)

EXACT = {"type": "global", "name": "ExactMatch"}
ROW = {
    "id": "x",
    "span_id": "x",
    "root_span_id": "x",
    "output": "a",
    "expected": "a",
    "metrics": {"start": 1, "end": 2},
}


def _deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor == "sqlite", reason="the test database is in memory: one connection")
def test_a_worker_recording_and_ingest_starting_the_runs_over_do_not_deadlock(
    owner, org, project, monkeypatch
):
    monkeypatch.setattr(runs, "runs_enqueue", lambda run_ids, delay=None: True)
    key = APIKey.objects.select_related("user").get(organization=org)
    services.rule_create(project=project, name="r", description="", online={"sampling_rate": 1, "scorers": [EXACT]},
                         run_as_user=key.user, run_as_key=key)  # fmt: skip
    logs_ingest(principal=None, project=project, rows=[ROW])
    run = ScoringRun.objects.get()
    logs_ingest(principal=None, project=project, rows=[{"id": "x", "_object_delete": True}])
    before = _deadlocks()

    # The worker is about to lock the spans it records for, when the span is logged again:
    # ingest locks the span, then starts its runs over.
    recording, lock_spans = threading.Event(), runs.spans_lock

    def slow_lock(**kwargs):
        recording.set()
        time.sleep(0.5)
        return lock_spans(**kwargs)

    monkeypatch.setattr(runs, "spans_lock", slow_lock)
    errors = []

    def in_thread(work):
        def target():
            try:
                work()
            except Exception as exc:  # noqa: BLE001 -- reported below
                errors.append(exc)
            finally:
                connection.close()

        return threading.Thread(target=target)

    threads = [
        in_thread(lambda: services.runs_execute(run_ids=[run.pk])),
        in_thread(lambda: recording.wait(5) and logs_ingest(principal=None, project=project, rows=[ROW])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    run.refresh_from_db()
    # Started over by the new life of the span: the worker's result for the old one is dropped.
    assert run.status == ScoringRun.Status.PENDING and run.attempts == 0
    # Counted when a backend reports its statistics, at the latest when it closes.
    time.sleep(1.5)
    assert _deadlocks() == before
