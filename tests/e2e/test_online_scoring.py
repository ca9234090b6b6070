"""Online scoring end to end, with real processes: Redis, the web server as `manage.py serve` runs
it, `manage.py worker` processes, and the braintrust SDK (tests/e2e/stack.py starts them).

Most tests share one stack, each in projects of its own; the tests that kill a worker or stop
Redis get a stack each. On PostgreSQL (DATABASE_URL set) every stack creates and drops its own
database on that server.
"""

import random
import string
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e


def scorer(name: str) -> dict:
    return {"type": "global", "name": name}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pytestconfig):
    with stack_shown_on_failure(tmp_path_factory.mktemp("stack"), pytestconfig, workers=2) as s:
        yield s


class stack_shown_on_failure:
    """A started Stack whose children's output is added to the report of a failed test."""

    def __init__(self, directory, pytestconfig, **options):
        self.stack = Stack(directory, **options)
        self.pluginmanager = pytestconfig.pluginmanager
        self.plugin = self.stack.pytest_plugin()

    def __enter__(self) -> Stack:
        self.pluginmanager.register(self.plugin)
        try:
            return self.stack.start()
        except BaseException:
            self.pluginmanager.unregister(self.plugin)
            raise

    def __exit__(self, *exc):
        try:
            self.stack.close()
        finally:
            self.pluginmanager.unregister(self.plugin)


# --- Helpers over the API ------------------------------------------------------------------


def rule_create(stack: Stack, project_id: str, name: str, scorers: list[str], *, rate: float = 1.0,
                btql_filter: str | None = None, root: bool = False, names: tuple = ()) -> dict:  # fmt: skip
    online = {
        "sampling_rate": rate,
        "scorers": [scorer(s) for s in scorers],
        "apply_to_root_span": root,
        "apply_to_span_names": list(names),
        "btql_filter": btql_filter,
    }
    body = {"project_id": project_id, "name": name, "score_type": "online", "config": {"online": online}}
    return stack.api("POST", "/v1/project_score", body)


def stats(stack: Stack, rule: dict) -> dict:
    return stack.api("GET", f"/v1/project_score/{rule['id']}/stats")


def wait_for_runs(stack: Stack, rules: list[dict], timeout: float = 60) -> None:
    """Until no rule has a pending or running run."""
    stack.wait_until(
        lambda: all(stats(stack, rule)["pending_runs"] == 0 for rule in rules),
        timeout=timeout,
        message=lambda: [stats(stack, rule) for rule in rules],
    )


def scoring_state(stack: Stack, project_id: str, row_id: str) -> dict:
    return stack.api("GET", f"/v1/project_logs/{project_id}/scoring_state", params={"id": row_id})


def decisions(stack: Stack, project_id: str, row_id: str) -> dict[str, str]:
    """{rule id: decision} for a span."""
    return {r["rule_id"]: r["decision"] for r in scoring_state(stack, project_id, row_id)["rules"]}


def is_scoring_span(event: dict) -> bool:
    return (event["span_attributes"] or {}).get("purpose") == "scorer"


def scoring_spans_by_parent(events: list[dict]) -> dict[str, list[dict]]:
    """The scoring spans of a project, by the span_id of the span each one scores."""
    children = defaultdict(list)
    for event in events:
        if is_scoring_span(event):
            assert len(event["span_parents"]) == 1, event
            children[event["span_parents"][0]].append(event)
    return children


def runs_get(stack: Stack, run_ids: list[int]) -> list[dict]:
    runs = []
    for i in range(0, len(run_ids), 500):  # the most a request takes
        chunk = ",".join(str(pk) for pk in run_ids[i : i + 500])
        runs.extend(stack.api("GET", "/v1/scoring_runs", params={"ids": chunk})["objects"])
    return runs


def log_row(project_id: str, *, name: str = "request", output="o", expected="o", parent: dict | None = None,
            **fields) -> dict:  # fmt: skip
    """A complete span as the SDK sends it to /logs3: started and ended in one row."""
    now = time.time()
    span_id = uuid.uuid4().hex[:16]
    row = {
        "id": str(uuid.uuid4()),
        "project_id": project_id,
        "log_id": "g",
        "created": datetime.now(UTC).isoformat(),
        "span_id": span_id,
        "root_span_id": parent["root_span_id"] if parent else uuid.uuid4().hex,
        "span_parents": [parent["span_id"]] if parent else None,
        "span_attributes": {"name": name, "type": "task"},
        "input": {"question": name},
        "output": output,
        "expected": expected,
        "metrics": {"start": now, "end": now + 0.01},
    }
    row.update(fields)
    return row


# --- 1. Which spans each rule scores ----------------------------------------------------------

# One rule per way of choosing spans, each with its own scorer, so that a span's scores say which
# rules scored it.
SELECTIONS = [
    # (rule name, choice, scorer)
    ("root only", {"root": True}, "ExactMatch"),
    ("names only", {"names": ("llm",)}, "Levenshtein"),
    ("root or names", {"root": True, "names": ("llm",)}, "JSONDiff"),
    ("every span", {}, "ValidJSON"),
]


def span(key: str, name: str, env: str, children=(), **options) -> dict:
    return {"key": key, "name": name, "type": "llm" if name == "llm" else "task", "input": {"q": key},
            "output": "o", "expected": "o", "metadata": {"env": env}, "children": list(children), **options}  # fmt: skip


TRACES = [
    span("a", "chat", "prod", [span("a.llm", "llm", "prod"),
                               span("a.retrieve", "retrieve", "prod", [span("a.retrieve.llm", "llm", "dev")])]),
    span("b", "chat", "dev", [span("b.llm", "llm", "dev"), span("b.rerank", "rerank", "prod")]),
    # Logged with @traced: a root span named like the listed span name, and a child.
    span("c", "llm", "prod", [span("c.tool", "tool", "prod", traced=True)], traced=True),
]  # fmt: skip

# Each span's decision by the rules of SELECTIONS, in order: S scored, - not selected, F filtered out.
WITHOUT_FILTER = {
    "a":              "S-SS",
    "a.llm":          "-SSS",
    "a.retrieve":     "---S",
    "a.retrieve.llm": "-SSS",
    "b":              "S-SS",
    "b.llm":          "-SSS",
    "b.rerank":       "---S",
    "c":              "SSSS",
    "c.tool":         "---S",
}  # fmt: skip
# The same rules with the filter metadata.env = 'prod'.
WITH_FILTER = {
    "a":              "S-SS",
    "a.llm":          "-SSS",
    "a.retrieve":     "---S",
    "a.retrieve.llm": "FFFF",
    "b":              "FFFF",
    "b.llm":          "FFFF",
    "b.rerank":       "---S",
    "c":              "SSSS",
    "c.tool":         "---S",
}  # fmt: skip
DECISION = {"S": "scored", "-": "not_selected", "F": "filtered_out"}


@pytest.mark.parametrize(
    "btql_filter,table",
    [
        pytest.param(None, WITHOUT_FILTER, id="no-filter"),
        pytest.param("metadata.env = 'prod'", WITH_FILTER, id="filter"),
    ],
)
def test_rules_score_the_root_the_named_spans_both_or_every_span_of_traces_logged_with_the_sdk(
    stack, btql_filter, table
):
    name = f"semantics-{'filter' if btql_filter else 'plain'}"
    project_id = stack.project(name)
    rules = [
        rule_create(stack, project_id, rule_name, [scorer_name], btql_filter=btql_filter, **choice)
        for rule_name, choice, scorer_name in SELECTIONS
    ]

    logged = {s["key"]: s for s in stack.sdk_log(name, TRACES)}
    assert set(logged) == set(table)
    wait_for_runs(stack, rules)

    events = stack.fetch_all(project_id)
    by_id = {e["id"]: e for e in events}
    scoring = scoring_spans_by_parent(events)
    assert len(events) == len(table) + sum(row.count("S") for row in table.values())
    for key, row in table.items():
        span_ids = logged[key]
        event = by_id[span_ids["id"]]
        expected_scorers = {scorer_name for (_, _, scorer_name), cell in zip(SELECTIONS, row) if cell == "S"}
        # The span's scores are those of the rules that chose it; ValidJSON("o") is 0, the others 1.
        assert event["scores"] == ({s: 0 if s == "ValidJSON" else 1 for s in expected_scorers} or None), key
        # One scoring span per rule that chose it: a child of the span, in its trace.
        children = scoring.get(span_ids["span_id"], [])
        assert sorted(c["span_attributes"]["name"] for c in children) == sorted(expected_scorers), key
        for child in children:
            scorer_name = child["span_attributes"]["name"]
            assert child["span_attributes"] == {"name": scorer_name, "type": "score", "purpose": "scorer"}
            assert child["span_parents"] == [span_ids["span_id"]]
            assert child["root_span_id"] == span_ids["root_span_id"] == event["root_span_id"]
            assert child["output"] == {"score": event["scores"][scorer_name]}
            assert child["scores"] == {scorer_name: event["scores"][scorer_name]}
            assert child["input"]["output"] == "o" and child["input"]["metadata"] == {
                "env": event["metadata"]["env"]
            }
            assert child["metrics"]["start"] <= child["metrics"]["end"]
        # Each rule's decision, and its one run (for the spans it chose), done, with that scoring span.
        state = {r["rule_id"]: r for r in scoring_state(stack, project_id, span_ids["id"])["rules"]}
        for rule, cell, (_, _, scorer_name) in zip(rules, row, SELECTIONS):
            entry = state[rule["id"]]
            assert entry["decision"] == DECISION[cell], (key, rule["name"], entry)
            if cell == "S":
                (run,) = entry["runs"]
                child = next(c for c in children if c["span_attributes"]["name"] == scorer_name)
                assert (run["status"], run["scoring_span_id"], run["error"]) == ("done", child["id"], None)
                assert run["scores"] == {scorer_name: event["scores"][scorer_name]}
            else:
                assert entry["runs"] == [], (key, rule["name"])

    for i, rule in enumerate(rules):
        chosen = [row[i] for row in table.values()].count("S")
        assert stats(stack, rule) == {"matched": chosen, "sampled": chosen, "scored": chosen, "errored": 0,
                                      "pending_runs": 0, "queue_lag_seconds": 0.0}  # fmt: skip


# --- 3. The filter sees the span as it was when it ended ---------------------------------------


def test_output_logged_after_the_span_ended_does_not_make_it_match(stack):
    project_id = stack.project("after-end")
    rule = rule_create(stack, project_id, "has output", ["ExactMatch"], btql_filter="output IS NOT NULL")
    logged = stack.sdk_log(
        "after-end",
        [
            {"key": "late", "name": "late", "input": {"q": 1}, "expected": "x", "after_end": {"output": "x"}},
            {"key": "early", "name": "early", "input": {"q": 2}, "output": "x", "expected": "x"},
        ],
    )
    late, early = (next(s for s in logged if s["key"] == key) for key in ("late", "early"))
    wait_for_runs(stack, [rule])

    events = {e["id"]: e for e in stack.fetch_all(project_id)}
    # The output logged after the end is stored, and changes nothing about scoring.
    assert events[late["id"]]["output"] == "x" and events[late["id"]]["scores"] is None
    assert decisions(stack, project_id, late["id"]) == {rule["id"]: "filtered_out"}
    assert events[early["id"]]["scores"] == {"ExactMatch": 1}
    assert decisions(stack, project_id, early["id"]) == {rule["id"]: "scored"}
    assert len(events) == 3  # the two spans and one scoring span
    assert stats(stack, rule)["matched"] == 1


# --- 4. Scoring spans are never scored ----------------------------------------------------------


def test_scoring_spans_are_never_scored_by_any_rule(stack):
    project_id = stack.project("scoring-spans")
    rules = [
        rule_create(stack, project_id, "every span, exact", ["ExactMatch"]),
        rule_create(stack, project_id, "every span, json", ["ValidJSON"]),
    ]
    logged = stack.sdk_log("scoring-spans", [span("r", "chat", "prod", [span("r.llm", "llm", "prod")])])
    wait_for_runs(stack, rules)

    events = stack.fetch_all(project_id)
    scoring = [e for e in events if is_scoring_span(e)]
    # Two spans, two rules: four scoring spans, and no scoring span of a scoring span.
    assert len(events) == 6 and len(scoring) == 4
    assert {e["span_parents"][0] for e in scoring} == {s["span_id"] for s in logged}
    for event in scoring:
        name = event["span_attributes"]["name"]
        assert event["scores"] == {name: 0 if name == "ValidJSON" else 1}
        state = scoring_state(stack, project_id, event["id"])
        assert state["manual_runs"] == []
        assert [(r["rule_id"], r["decision"], r["runs"]) for r in state["rules"]] == [
            (rule["id"], "not_evaluated", []) for rule in rules
        ]
    for rule in rules:
        assert stats(stack, rule) == {"matched": 2, "sampled": 2, "scored": 2, "errored": 0, "pending_runs": 0,
                                      "queue_lag_seconds": 0.0}  # fmt: skip


# --- 7. Test rule ------------------------------------------------------------------------------


def test_test_rule_runs_the_scorers_and_persists_nothing(stack):
    project_id = stack.project("test-rule")
    rule = rule_create(stack, project_id, "saved", ["ExactMatch"], root=True)
    logged = stack.sdk_log(
        "test-rule", [span(f"t{i}", "chat", "prod", [span(f"t{i}.llm", "llm", "dev")]) for i in range(3)]
    )
    wait_for_runs(stack, [rule])

    def snapshot():
        return (
            stack.fetch_all(project_id),
            stack.api("GET", "/v1/project_score", params={"project_id": project_id}),
            [scoring_state(stack, project_id, s["id"]) for s in logged],
            stats(stack, rule),
        )

    before = snapshot()
    online = {"sampling_rate": 1, "scorers": [scorer("ExactMatch"), scorer("Levenshtein")],
              "apply_to_span_names": ["llm"], "btql_filter": "metadata.env = 'dev'"}  # fmt: skip
    results = stack.api(
        "POST",
        "/v1/project_score/test",
        {"project_id": project_id, "name": "draft", "config": {"online": online}},
    )["results"]
    # The project's 6 spans (its scoring spans are left out): the 3 llm spans are chosen and scored.
    assert len(results) == 6
    chosen = [r for r in results if r["selected"]]
    assert sorted(r["id"] for r in chosen) == sorted(s["id"] for s in logged if s["name"] == "llm")
    for r in chosen:
        assert (r["matched_filter"], r["sampled"], r["scores"]) == (
            True,
            True,
            {"ExactMatch": 1, "Levenshtein": 1.0},
        )
    assert all(not r["selected"] and "scores" not in r for r in results if r not in chosen)

    time.sleep(1)  # time for anything the preview might have enqueued to show
    assert snapshot() == before


# --- 8. The done-when: a score within seconds --------------------------------------------------


def test_a_trace_logged_with_the_sdk_is_scored_within_seconds(stack):
    project_id = stack.project("done-when")
    rule_create(stack, project_id, "exact", ["ExactMatch"], root=True)
    started = time.monotonic()
    (root,) = stack.sdk_log(
        "done-when", [{"name": "answer", "input": {"q": "2+2"}, "output": "4", "expected": "4"}]
    )
    logged = time.monotonic()

    def scored():
        events = stack.fetch_all(project_id)
        span_event = next(e for e in events if e["id"] == root["id"])
        children = scoring_spans_by_parent(events).get(root["span_id"], [])
        return span_event["scores"] == {"ExactMatch": 1} and len(children) == 1

    stack.wait_until(scored, timeout=15, interval=0.05)
    done = time.monotonic()
    print(
        f"\nscore visible {done - logged:.2f} s after the SDK returned ({done - started:.2f} s after it started)"
    )
    assert done - logged < 15


def test_an_sdk_span_with_an_infinite_metric_or_a_nan_score_is_stored_with_its_batch(stack):
    """The SDK sends these as text; they are stored as null, and nothing of the batch is lost."""
    project_id = stack.project("non-finite")
    rule_create(stack, project_id, "exact", ["ExactMatch"], root=True)
    spans = stack.sdk_log("non-finite", [
        {"name": "fast", "output": "4", "expected": "4", "metrics": {"tok_per_s": float("inf")}},
        {"name": "odd", "output": "4", "expected": "4", "scores": {"human": float("nan")}},
        {"name": "plain", "output": "4", "expected": "4"},
    ])  # fmt: skip
    by_id = {span["id"]: span["name"] for span in spans}

    def scored():
        events = {by_id[e["id"]]: e for e in stack.fetch_all(project_id) if e["id"] in by_id}
        return (
            len(events) == 3
            and all((e["scores"] or {}).get("ExactMatch") == 1 for e in events.values())
            and events
        )

    events = stack.wait_until(scored, timeout=15, interval=0.05)
    assert events["fast"]["metrics"]["tok_per_s"] is None and events["odd"]["scores"]["human"] is None


# --- A span deleted and logged again is a new span ---------------------------------------------


def test_a_span_deleted_and_logged_again_is_scored_again(stack):
    """docs/api.md: a write after `_object_delete` starts the row afresh, "as a new span (which
    ends, and is scored, again)"."""
    project_id = stack.project("reborn")
    rule = rule_create(stack, project_id, "exact", ["ExactMatch"])
    rows = [log_row(project_id, output="same", expected="same") for _ in range(3)]
    stack.logs3(rows)
    wait_for_runs(stack, [rule])
    assert all(
        e["scores"] == {"ExactMatch": 1} for e in stack.fetch_all(project_id) if not is_scoring_span(e)
    )

    stack.logs3(
        [{"id": r["id"], "project_id": project_id, "log_id": "g", "_object_delete": True} for r in rows]
    )
    assert {e["id"] for e in stack.fetch_all(project_id)} & {r["id"] for r in rows} == set()
    stack.logs3(rows)
    wait_for_runs(stack, [rule])

    events = {e["id"]: e for e in stack.fetch_all(project_id)}
    assert [events[r["id"]]["scores"] for r in rows] == [{"ExactMatch": 1}] * 3
    for r in rows:
        assert decisions(stack, project_id, r["id"]) == {rule["id"]: "scored"}


# --- GET /v1/scoring_runs through the web server ----------------------------------------------


def test_scoring_runs_takes_as_many_ids_as_it_allows_through_the_web_server(stack):
    """The API allows 500 ids a request; through gunicorn, as `manage.py serve` runs it."""
    ids = ",".join(str(n) for n in range(1_000_000, 1_000_500))
    response = stack.api("GET", "/v1/scoring_runs", params={"ids": ids}, expect=None)
    # None of these runs exists: the API's own 404, not the web server's 414 (URI Too Long).
    assert response.status_code == 404, response.text[:300]
    assert response.json()["error"]["message"] == "Scoring run 1000000 not found."


# --- 2. Sampling ---------------------------------------------------------------------------------


def test_sampling_draws_the_rate_and_draws_the_same_spans_when_they_are_logged_again(stack):
    project_id = stack.project("sampling")
    # At 10 %, ±2 points over 5,000 spans is ±4.7 standard deviations: the rule's random id
    # cannot make this fail by chance.
    rule = rule_create(stack, project_id, "ten percent", ["ExactMatch"], rate=0.1)
    rows = []
    for _ in range(1000):  # 1,000 traces of 5 spans
        root = log_row(project_id, name="chat")
        rows.append(root)
        rows.extend(log_row(project_id, name=f"step-{j}", parent=root) for j in range(4))
    stack.logs3(rows)
    first = stats(stack, rule)
    assert first["matched"] == 5000
    fraction = first["sampled"] / first["matched"]
    print(f"\nsampled {first['sampled']} of {first['matched']} spans: {fraction:.4f}")
    assert 0.08 <= fraction <= 0.12
    wait_for_runs(stack, [rule], timeout=120)
    events = stack.fetch_all(project_id)
    scored = {e["id"] for e in events if e["scores"] and not is_scoring_span(e)}
    assert len(scored) == first["sampled"] and len(events) == 5000 + len(scored)
    probe = random.Random(7).sample([r["id"] for r in rows], 150)
    first_decisions = {row_id: decisions(stack, project_id, row_id)[rule["id"]] for row_id in probe}
    assert first_decisions == {row_id: "scored" if row_id in scored else "not_sampled" for row_id in probe}

    # Replay: the spans are deleted, then the same rows logged again: each span ends again.
    stack.logs3(
        [{"id": r["id"], "project_id": project_id, "log_id": "g", "_object_delete": True} for r in rows]
    )
    stack.logs3(rows)
    again = stats(stack, rule)
    assert (again["matched"], again["sampled"]) == (first["matched"], first["sampled"])
    wait_for_runs(stack, [rule], timeout=120)
    assert {row_id: decisions(stack, project_id, row_id)[rule["id"]] for row_id in probe} == first_decisions


# --- 5. A worker killed mid-batch --------------------------------------------------------------


def test_runs_of_a_worker_killed_mid_batch_are_finished_by_another_exactly_once(tmp_path, pytestconfig):
    count = 2000
    with stack_shown_on_failure(tmp_path, pytestconfig, workers=1) as stack:
        rule = rule_create(stack, stack.project_id, "levenshtein", ["Levenshtein"])
        # Levenshtein on 3,000 characters: a batch of 200 runs takes long enough to be caught at work.
        rng = random.Random(5)
        text = lambda: "".join(rng.choices(string.ascii_lowercase, k=3000))
        rows = [log_row(stack.project_id, output=text(), expected=text()) for _ in range(count)]
        stack.logs3(rows, batch=250)
        run_ids = list(range(1, count + 1))  # a fresh database: the runs of these spans, and no others

        def some_done_some_running():
            statuses = Counter(run["status"] for run in runs_get(stack, run_ids))
            return statuses["done"] and statuses["running"]

        caught: set[int] = set()
        for _ in range(3):
            stack.wait_until(some_done_some_running, timeout=60, interval=0.05)
            stack.worker_kill()
            caught = {run["id"] for run in runs_get(stack, run_ids) if run["status"] == "running"}
            stack.worker_start()
            if caught:
                break  # else the batch ended just before the kill: try again
        assert caught, "never killed the worker in the middle of a batch"
        print(f"\nkilled the worker holding {len(caught)} running runs")
        assert stats(stack, rule)["pending_runs"] > 0

        stack.wait_until(
            lambda: all(run["status"] == "done" for run in runs_get(stack, run_ids)),
            timeout=120,
            interval=0.5,
        )
        runs = runs_get(stack, run_ids)
        assert sorted(run["row_id"] for run in runs) == sorted(r["id"] for r in rows)  # one run per span
        # The runs the dead worker held were claimed again once their lease ran out.
        assert {run["id"] for run in runs if run["attempts"] > 1} >= caught
        assert all(run["error"] is None for run in runs)

        events = stack.fetch_all(stack.project_id)
        by_id = {e["id"]: e for e in events}
        scoring = scoring_spans_by_parent(events)
        assert len(events) == 2 * count
        for run in runs:
            event = by_id[run["row_id"]]
            assert event["scores"] == run["scores"] and set(run["scores"]) == {"Levenshtein"}
            (child,) = scoring[event["span_id"]]
            assert child["id"] == run["scoring_span_id"] and child["scores"] == run["scores"]
        assert stats(stack, rule) | {"queue_lag_seconds": 0.0} == {
            "matched": count, "sampled": count, "scored": count, "errored": 0, "pending_runs": 0,
            "queue_lag_seconds": 0.0,
        }  # fmt: skip


# --- 6. Redis down during ingest ----------------------------------------------------------------


def test_spans_logged_while_redis_is_down_are_stored_and_scored_once_it_is_back(tmp_path, pytestconfig):
    with stack_shown_on_failure(tmp_path, pytestconfig, workers=2) as stack:
        rule = rule_create(stack, stack.project_id, "exact", ["ExactMatch"])
        stack.redis_stop()

        logged = stack.sdk_log(
            "demo", [span(f"t{i}", "chat", "prod", [span(f"t{i}.llm", "llm", "prod")]) for i in range(4)]
        )
        events = stack.fetch_all(stack.project_id)
        assert {e["id"] for e in events} == {s["id"] for s in logged}
        assert stats(stack, rule)["pending_runs"] == 8
        time.sleep(2)  # past the pending grace period, several sweeps: nothing can run without Redis
        assert stats(stack, rule) | {"queue_lag_seconds": 0} == {
            "matched": 8, "sampled": 8, "scored": 0, "errored": 0, "pending_runs": 8, "queue_lag_seconds": 0
        }  # fmt: skip

        stack.redis_start()
        wait_for_runs(stack, [rule], timeout=60)
        assert all(worker.alive() for worker in stack.workers)
        events = stack.fetch_all(stack.project_id)
        scoring = scoring_spans_by_parent(events)
        for s in logged:
            event = next(e for e in events if e["id"] == s["id"])
            assert event["scores"] == {"ExactMatch": 1}
            assert len(scoring[s["span_id"]]) == 1
        assert len(events) == 16
        assert stats(stack, rule)["scored"] == 8
