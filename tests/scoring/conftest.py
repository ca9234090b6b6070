"""Shared helpers of the online-scoring tests.

Runs are enqueued after commit (`transaction.on_commit`). In a test that is not
`transaction=True`, wrap the write in `django_capture_on_commit_callbacks(execute=True)` (or
`log`, below) so that the callbacks run; patch the enqueue with `run_inline` or `queued`, since
the real one would reach for Redis.
"""

import pytest
from django.test import TestCase

from scoring import services
from scoring.services import runs


def rule_body(project, *, name="rule", description=None, **online) -> dict:
    """A POST /v1/project_score body; `online` goes over a rule that scores every span with
    ExactMatch."""
    body = {
        "project_id": str(project.pk),
        "name": name,
        "score_type": "online",
        "config": {
            "online": {"sampling_rate": 1, "scorers": [{"type": "global", "name": "ExactMatch"}], **online}
        },
    }
    if description is not None:
        body["description"] = description
    return body


def log(api, project, *events):
    """Insert rows with the REST API and run the after-commit callbacks (the enqueue) it
    registered, also inside a test's transaction."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = api.post(f"/v1/project_logs/{project.pk}/insert", {"events": list(events)})
    assert response.status_code == 200, response.content
    return response


@pytest.fixture
def run_inline(monkeypatch):
    """Enqueueing runs them, synchronously, in this process; a delayed job (a retry's) is only
    recorded, as it would wait in the queue: a test runs it. Returns the ids enqueued."""
    enqueued = []

    def enqueue(run_ids, *, delay=None):
        enqueued.extend(run_ids)
        if not delay:
            services.runs_execute(run_ids=list(run_ids))
        return True

    monkeypatch.setattr(runs, "runs_enqueue", enqueue)
    return enqueued


@pytest.fixture
def queued(monkeypatch):
    """Enqueueing only records the run ids, in order: the runs stay pending."""
    enqueued = []

    def enqueue(run_ids, *, delay=None):
        enqueued.extend(run_ids)
        return True

    monkeypatch.setattr(runs, "runs_enqueue", enqueue)
    return enqueued
