import json
import pytest
from tests.scoring.conftest import rule_body, log
pytestmark = pytest.mark.django_db

def test_explore(owner, project, run_inline):
    r = owner.post("/v1/project_score", rule_body(project))
    print(r.status_code, json.dumps(r.json(), indent=1))
    for bad in [dict(sampling_rate=2), dict(scorers=[{"type":"global","name":"Nope"}]), dict(bogus=1), dict(scorers=[]),
                dict(sample_by="row"), dict(btql_filter="metadata.x = = 1"),
                dict(scorers=[{"type":"global","name":"ExactMatch"},{"type":"global","name":"ExactMatch"}])]:
        r = owner.post("/v1/project_score", rule_body(project, name="x", **bad))
        print(bad, r.status_code, r.json())
    log(owner, project, {"id": "a", "input": "q", "output": "x", "expected": "x", "metrics": {"start": 1, "end": 2}})
    print(run_inline)
    ev = owner.get(f"/v1/project_logs/{project.pk}/fetch").json()["events"]
    print(json.dumps(ev, indent=1))
    print(json.dumps(owner.get(f"/v1/project_logs/{project.pk}/scoring_state", id="a").json(), indent=1))
