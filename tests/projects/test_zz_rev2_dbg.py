import pytest
from tests.projects.test_ingest import insert, start, stored
from projects.models import Span
pytestmark = pytest.mark.django_db

def test_dbg(owner, project, monkeypatch):
    from projects.ingest import services
    real_plan, calls = services._plan, []
    def plan_then_interfere(writes, projects, *, lock):
        calls.append(lock)
        result = real_plan(writes, projects, lock=lock)
        print("plan", lock, [(k, v) for k, s, v in result.spans], result.versions)
        if len(calls) == 1:
            insert(owner, project, start("a"))
        return result
    monkeypatch.setattr(services, "_plan", plan_then_interfere)
    insert(owner, project, {"id": "a", "_object_delete": True})
    print(calls, list(Span.objects.values("row_id", "deleted", "xact_id")))
