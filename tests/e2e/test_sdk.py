"""The unmodified Braintrust Python SDK logs to a live server; the stored rows are checked exactly.

tests/e2e/sdk_client.py runs in a subprocess under the interpreter of each SDK version, against
pytest-django's live server (a real HTTP server on the test database). The test records, in the
server thread, every request, every /logs3 batch and every "spans ended" signal.
"""

import copy
import json
import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest
import requests
from django.core.signals import request_started

from projects import apis
from projects.models import Comment, Project, Span
from projects.services import api_key_provision
from projects.signals import spans_ended

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("sdk_client.py")
LEGACY_PYTHON = ROOT / ".venv-sdk-legacy" / "bin" / "python"
PROJECT_NAME = "e2e-sdk"

SDKS = [
    pytest.param(Path(sys.executable), "0.48.1", "/v1/project", id="sdk-0.48.1"),
    pytest.param(
        LEGACY_PYTHON,
        "0.34.0",
        "/api/project/register",
        id="sdk-0.34.0",
        marks=pytest.mark.skipif(
            not LEGACY_PYTHON.exists(),
            reason=f"{LEGACY_PYTHON.relative_to(ROOT)} is missing: build it from tests/e2e/legacy-sdk.lock",
        ),
    ),
]


class Recorder:
    """What the server thread saw. Receivers run in the live server's thread: lock the lists."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.batches: list[list[dict]] = []  # the rows of each /logs3 request, as received
        self.ended: list[dict] = []  # one entry per span of each spans_ended event

    def on_request(self, sender, environ, **kwargs):
        with self.lock:
            auth = environ.get("HTTP_AUTHORIZATION")
            self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], auth))

    def on_ended(self, sender, ended, **kwargs):
        with self.lock:
            for e in ended:
                self.ended.append(
                    {"row_id": e.span.row_id, "at_end_row_id": e.at_end.row_id, "ended_at": e.span.ended_at,
                     "row": copy.deepcopy(e.row)}
                )  # fmt: skip


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    original = apis.logs_ingest

    def logs_ingest(*, principal, rows, project=None):
        with rec.lock:
            rec.batches.append(copy.deepcopy(rows))
        return original(principal=principal, rows=rows, project=project)

    monkeypatch.setattr(apis, "logs_ingest", logs_ingest)
    request_started.connect(rec.on_request, dispatch_uid="e2e-sdk-requests")
    spans_ended.connect(rec.on_ended, dispatch_uid="e2e-sdk-ended")
    yield rec
    request_started.disconnect(dispatch_uid="e2e-sdk-requests")
    spans_ended.disconnect(dispatch_uid="e2e-sdk-ended")


def run_client(python: Path, server_url: str, raw_key: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAINTRUST_", "OTEL_"))}
    env.update(
        BRAINTRUST_APP_URL=server_url,
        BRAINTRUST_API_KEY=raw_key,
        BRAINTRUST_SYNC_FLUSH="1",  # a failed /logs3 raises from flush(), not dropped in background
        BRAINTRUST_NUM_RETRIES="0",  # fail at the first error instead of sleeping and retrying
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.run(
        [str(python), str(CLIENT), PROJECT_NAME],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    report = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    for needle in ("log request failed", "Traceback", "Failed to fetch version", "Error"):
        assert needle not in proc.stderr, report
    lines = [line for line in proc.stdout.splitlines() if line.startswith("E2E_RESULT ")]
    assert len(lines) == 1, report
    return json.loads(lines[0].removeprefix("E2E_RESULT "))


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("python,version,resolve_path", SDKS)
def test_sdk_logs_traces_to_live_server(live_server, recorder, settings, python, version, resolve_path):
    settings.PUBLIC_URL = ""  # login hands out the live server's own URL as api_url
    key, raw = api_key_provision(org_name="acme", email="owner@example.com", role="owner")

    result = run_client(python, live_server.url, raw)

    assert result["version"] == version
    ids = result["ids"]
    project = Project.objects.get(organization=key.organization, name=PROJECT_NAME)
    pid = str(project.pk)
    bearer = f"Bearer {raw}"

    # --- The requests: login, project resolve, /version, one /logs3 per flush; all with the key.
    assert [(m, p) for m, p, _ in recorder.requests] == [
        ("POST", "/api/apikey/login"),
        ("POST", resolve_path),
        ("GET", "/version"),
        ("POST", "/logs3"),
        ("POST", "/logs3"),
        ("POST", "/logs3"),
    ]
    assert all(auth == bearer for _, _, auth in recorder.requests)

    # --- The batches as received: request 1 starts "long-running" without ending it, request 2
    # merges into it (and ends it), request 3 is the feedback merge plus a comment row.
    b1, b2, b3 = recorder.batches
    by_id = {name: i["id"] for name, i in ids.items()}
    assert sorted(r["id"] for r in b1) == sorted(by_id[n] for n in ("outer", "inner", "long", "child"))
    assert all(not r.get("_is_merge") for r in b1)
    long_first = next(r for r in b1 if r["id"] == by_id["long"])
    assert "end" not in long_first["metrics"] and "start" in long_first["metrics"]
    assert sorted(r["id"] for r in b2) == sorted([by_id["long"], by_id["late"]])
    long_merge = next(r for r in b2 if r["id"] == by_id["long"])
    assert long_merge["_is_merge"] is True and "end" in long_merge["metrics"] and "created" not in long_merge
    feedback = next(r for r in b3 if r["id"] == by_id["outer"])
    comment_row = next(r for r in b3 if r["id"] != by_id["outer"])
    assert len(b3) == 2
    assert feedback["_is_merge"] is True and feedback["_audit_source"] == "external"
    assert feedback["scores"] == {"helpful": 1} and feedback["expected"] == {"answer": 10}
    assert comment_row["comment"] == {"text": "nice"} and comment_row["origin"] == {"id": by_id["outer"]}

    # --- The stored rows (ORM).
    spans = {s.row_id: s for s in Span.objects.filter(project=project)}
    assert set(spans) == set(by_id.values())
    outer, inner, long, child, late = (spans[by_id[n]] for n in ("outer", "inner", "long", "child", "late"))

    # Tree: two traces, outer -> inner and long -> {child, late-child}. Ids are opaque (SDK 0.48.1
    # makes OTel-style ones: a root's root_span_id is not its span_id).
    assert outer.span_parents is None and outer.is_root
    assert inner.span_parents == [outer.span_id] and not inner.is_root
    assert inner.root_span_id == outer.root_span_id
    assert long.span_parents is None and long.is_root and long.root_span_id != outer.root_span_id
    for c in (child, late):
        assert c.span_parents == [long.span_id] and not c.is_root and c.root_span_id == long.root_span_id
    for name, span in zip(("outer", "inner", "long", "child", "late"), (outer, inner, long, child, late)):
        assert (span.span_id, span.root_span_id) == (ids[name]["span_id"], ids[name]["root_span_id"])

    assert [(s.name, s.type) for s in (outer, inner, long, child, late)] == [
        ("outer-handler", "task"), ("inner", "function"), ("long-running", "task"), ("child", "llm"),
        ("late-child", "tool"),
    ]  # fmt: skip
    for s in (outer, inner, long, child, late):
        assert s.span_attributes["name"] == s.name and s.span_attributes["type"] == s.type

    # @traced input/output, merged span.log() calls.
    assert (outer.input, outer.output) == ({"q": "hello"}, {"answer": 10})
    assert (inner.input, inner.output) == ({"x": 5}, 10)
    assert inner.metadata == {"k": "v"} and inner.metrics["prompt_tokens"] == 3
    assert outer.tags == ["prod"] and outer.metadata == {"user": "u1"}
    assert (child.output, child.metrics["tokens"]) == ("llm says hi", 12)
    assert (late.input, late.output) == ("lookup", "found")

    # "long-running": the log after the flush deep-merged metadata, unioned tags, set output/scores.
    assert long.input == {"q": 1} and long.output == "answer"
    assert long.metadata == {"a": {"x": 1, "y": 2}}
    assert long.tags == ["t1", "t2"]
    assert long.scores == {"acc": 0.9}

    # Feedback: scores merged into the span's, expected set, created and the tree untouched.
    assert outer.scores == {"manual": 0.5, "helpful": 1}
    assert outer.expected == {"answer": 10}
    first_outer = next(r for r in b1 if r["id"] == by_id["outer"])
    assert outer.created == datetime.fromisoformat(first_outer["created"])
    assert long.created == datetime.fromisoformat(long_first["created"])

    # Every span ended: metrics.start <= metrics.end, ended_at set; children inside their parents.
    for s in (outer, inner, long, child, late):
        assert s.metrics["start"] <= s.metrics["end"], s
        assert s.ended_at is not None, s
    assert outer.metrics["start"] <= inner.metrics["start"] <= inner.metrics["end"] <= outer.metrics["end"]
    assert long.metrics["start"] <= child.metrics["start"] and late.metrics["end"] <= long.metrics["end"]

    # _xact_id: one transaction per request, growing.
    assert outer.xact_id > long.xact_id > child.xact_id == inner.xact_id
    assert late.xact_id == long.xact_id

    # The comment is a Comment on the outer span, not a span.
    (comment,) = Comment.objects.filter(project=project)
    assert comment.span_row_id == by_id["outer"] and comment.row_id == comment_row["id"]
    assert comment.comment == {"text": "nice"} and comment.origin == {"id": by_id["outer"]}
    assert not comment.deleted

    # --- "spans ended" fired exactly once per span, with the row as it was at its end.
    ended = {e["row_id"]: e for e in recorder.ended}
    assert sorted(e["row_id"] for e in recorder.ended) == sorted(by_id.values())
    for row_id, e in ended.items():
        assert e["ended_at"] == spans[row_id].ended_at and e["at_end_row_id"] == row_id
        assert e["row"]["id"] == row_id and e["row"]["metrics"]["end"] == spans[row_id].metrics["end"]
    # Each span ended in the request that brought its metrics.end: "long-running" in request 2
    # (with the metadata merged then), the others in request 1; the feedback did not end anything.
    first_xact = str(inner.xact_id)
    for name in ("outer", "inner", "child"):
        assert ended[by_id[name]]["row"]["_xact_id"] == first_xact, name
    for name in ("long", "late"):
        assert ended[by_id[name]]["row"]["_xact_id"] == str(long.xact_id), name
    assert ended[by_id["long"]]["row"]["metadata"] == {"a": {"x": 1, "y": 2}}
    assert ended[by_id["outer"]]["row"]["scores"] == {"manual": 0.5}
    assert ended[by_id["outer"]]["row"]["expected"] is None

    # --- The fetch API, through the live server with the same key.
    url = f"{live_server.url}/v1/project_logs/{pid}/fetch"
    resp = requests.get(url, headers={"Authorization": bearer}, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["cursor"] is None
    events = {e["id"]: e for e in body["events"]}
    assert set(events) == set(by_id.values())
    created = [datetime.fromisoformat(e["created"]) for e in body["events"]]
    assert created == sorted(created, reverse=True)  # newest first
    for name, row_id in by_id.items():
        e, s = events[row_id], spans[row_id]
        assert e["project_id"] == pid and e["log_id"] == "g"
        assert e["span_id"] == s.span_id and e["root_span_id"] == s.root_span_id
        assert e["span_parents"] == s.span_parents
        assert e["is_root"] is (name in ("outer", "long"))
        assert e["_xact_id"] == str(s.xact_id)
        assert datetime.fromisoformat(e["created"]) == s.created
        for field in ("span_attributes", "input", "output", "expected", "scores", "metadata", "metrics",
                      "tags"):  # fmt: skip
            assert e[field] == getattr(s, field), (name, field)
        assert set(e["metrics"]) >= {"start", "end"}
        assert e["context"]["caller_functionname"]
        if name != "outer":
            assert e["comments"] == []
    (fetched_comment,) = events[by_id["outer"]]["comments"]
    assert fetched_comment["id"] == comment.row_id
    assert fetched_comment["comment"] == {"text": "nice"}
    assert fetched_comment["origin"] == {"id": by_id["outer"]}
    assert events[by_id["outer"]]["scores"] == {"manual": 0.5, "helpful": 1}
    assert events[by_id["long"]]["tags"] == ["t1", "t2"]

    # --- BTQL over what the SDK logged, through the live server: fetch's filter and POST /btql.
    filtered = requests.get(url, params={"filter": "tags includes 't2' and metadata.a.y = 2"},
                            headers={"Authorization": bearer}, timeout=10)  # fmt: skip
    assert filtered.status_code == 200, filtered.text
    assert [e["id"] for e in filtered.json()["events"]] == [by_id["long"]]
    query = f"from: project_logs('{pid}') traces | filter: span_attributes.name = 'late-child'"
    traced = requests.post(
        f"{live_server.url}/btql", json={"query": query}, headers={"Authorization": bearer}, timeout=10
    )
    assert traced.status_code == 200, traced.text
    trace_ids = {e["id"] for e in traced.json()["data"]}
    assert trace_ids == {
        row_id for row_id, s in spans.items() if s.root_span_id == spans[by_id["late"]].root_span_id
    }
    assert by_id["long"] in trace_ids and by_id["outer"] not in trace_ids
