"""The span store's write path: replace, merge, delete, comments, idempotency and "ended"."""

import copy

import pytest
from braintrust.merge_row_batch import merge_row_batch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projects.auth import principal_from_key
from projects.ingest.services import logs_ingest
from projects.models import Comment, Project, Span, Transaction
from projects.selectors import logs_fetch
from projects.signals import spans_ended
from tests.conftest import member_key
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ended():
    """Every EndedSpan emitted while the test runs, with the event it came in."""
    events = []

    def receiver(sender, ended, **kwargs):
        events.append(list(ended))

    spans_ended.connect(receiver)
    yield events
    spans_ended.disconnect(receiver)


def start(row_id, **fields):
    return {"id": row_id, "span_id": f"s-{row_id}", "root_span_id": "root", "span_parents": ["root"],
            "created": "2026-11-26T09:50:22.369840+00:00", "metrics": {"start": 1.0},
            "span_attributes": {"name": "step", "type": "function"}, **fields}  # fmt: skip


def merge(row_id, **fields):
    return {"id": row_id, "_is_merge": True, **fields}


def insert(api, project, *rows):
    response = api.post(f"/v1/project_logs/{project.pk}/insert", {"events": list(rows)})
    assert response.status_code == 200, response.content
    return response.json()


def stored(project, row_id):
    return Span.objects.get(project=project, row_id=row_id)


def test_logs3_without_content_type_stores_a_span(owner, project):
    row = {
        "id": "r1",
        "span_id": "s1",
        "root_span_id": "s1",
        "project_id": str(project.pk),
        "log_id": "g",
        "input": {"q": 1},
        "span_attributes": {"name": "root", "type": "task"},
    }
    response = owner.post("/logs3", {"rows": [row], "api_version": 2}, content_type="")
    assert response.status_code == 200, response.content
    assert response.json() == {}
    span = Span.objects.get(project=project, row_id="r1")
    assert span.input == {"q": 1} and span.name == "root" and span.type == "task" and span.is_root


def test_insert_returns_row_ids_aligned_with_the_events_and_generates_missing_ones(owner, project):
    row_ids = insert(owner, project, start("a"), {"input": "no id"}, merge("a", output=1))["row_ids"]
    assert row_ids[0] == "a" and row_ids[2] == "a"
    generated = stored(project, row_ids[1])
    assert generated.span_id == row_ids[1] and generated.root_span_id == row_ids[1] and generated.is_root


def test_a_merge_after_a_separate_request_deep_merges_and_keeps_created(owner, project):
    insert(owner, project, start("a", metadata={"a": {"x": 1}}, tags=["t1"]))
    insert(owner, project, merge("a", metadata={"a": {"y": 2}}, tags=["t2"], created="2030-01-01T00:00:00Z",
                                 span_parents=None, output="answer"))  # fmt: skip
    span = stored(project, "a")
    assert span.metadata == {"a": {"x": 1, "y": 2}}
    assert span.tags == ["t1", "t2"]
    assert span.output == "answer"
    assert span.created.isoformat() == "2026-11-26T09:50:22.369840+00:00"
    assert span.span_parents == ["root"] and not span.is_root


def test_a_replace_overwrites_the_whole_row(owner, project):
    insert(owner, project, start("a", input="old", output="old", metadata={"k": 1}))
    insert(owner, project, start("a", input="new"))
    span = stored(project, "a")
    assert (span.input, span.output, span.metadata) == ("new", None, None)


def test_object_delete_tombstones_the_row_and_hides_it_from_fetch(owner, project):
    insert(owner, project, start("a"), start("b"))
    insert(owner, project, {"id": "a", "_object_delete": True})
    assert stored(project, "a").deleted
    events, _ = logs_fetch(project=project)
    assert [e["id"] for e in events] == ["b"]


def test_a_comment_row_is_stored_as_a_comment_on_its_span(owner, project):
    insert(owner, project, start("a"))
    insert(owner, project, {"id": "c1", "comment": {"text": "nice"}, "origin": {"id": "a"},
                            "_audit_source": "external", "_audit_metadata": None})  # fmt: skip
    comment = Comment.objects.get(project=project, row_id="c1")
    assert comment.span_row_id == "a" and comment.comment == {"text": "nice"}
    assert not Span.objects.filter(row_id="c1").exists()
    events, _ = logs_fetch(project=project)
    assert [c["comment"] for c in events[0]["comments"]] == [{"text": "nice"}]


def test_sending_the_same_batch_twice_changes_nothing(owner, project, ended):
    batch = [
        start("a", input=1),
        merge("a", output=2, metrics={"end": 2.0}),
        start("b", tags=["x"]),
        merge("b", tags=["y"]),
        # As the SDK sends a root: explicit nulls; and a row that leaves `created` to the server.
        {"id": "root", "span_id": "root", "root_span_id": "root", "span_parents": None, "input": None},
        {"id": "bare", "span_attributes": {}, "metadata": {"k": None}},
        {"id": "c1", "comment": {"text": "hi"}, "origin": {"id": "a"}},
    ]
    insert(owner, project, *batch)
    before = list(Span.objects.order_by("pk").values())
    comments = list(Comment.objects.values())
    transactions = Transaction.objects.count()
    insert(owner, project, *copy.deepcopy(batch))
    assert list(Span.objects.order_by("pk").values()) == before
    assert list(Comment.objects.values()) == comments
    assert Transaction.objects.count() == transactions
    assert len([e for event in ended for e in event]) == 1


def test_a_replace_without_created_keeps_the_stored_created(owner, project):
    insert(owner, project, {"id": "a", "input": 1})
    created = stored(project, "a").created
    insert(owner, project, {"id": "a", "input": 2})
    assert stored(project, "a").created == created and stored(project, "a").input == 2


def test_xact_ids_grow_with_each_write(owner, project):
    insert(owner, project, start("a"))
    first = stored(project, "a").xact_id
    insert(owner, project, merge("a", output=1))
    assert stored(project, "a").xact_id > first
    assert Transaction.objects.filter(pk=stored(project, "a").xact_id).exists()


# --- "span ended" ------------------------------------------------------------------------


def test_the_sdks_text_for_nan_and_infinities_in_scores_and_metrics_is_stored_as_null(owner, project):
    """The SDK sends a float JSON cannot hold as "NaN", "Infinity" or "-Infinity": not a number
    to store, and not a reason to refuse the row and its batch. Elsewhere it is text, as sent."""
    insert(owner, project, start("a", scores={"s": "NaN", "t": 0.5}, metadata={"rate": "Infinity"},
                                 metrics={"start": 1.0, "tok_per_s": "Infinity", "delta": "-Infinity"}))  # fmt: skip
    span = stored(project, "a")
    assert span.scores == {"s": None, "t": 0.5} and span.metadata == {"rate": "Infinity"}
    assert span.metrics == {"start": 1.0, "tok_per_s": None, "delta": None}
    response = owner.post("/logs3", {"rows": [start("b", metrics={"x": "nan"})], "api_version": 2})
    assert response.status_code == 400 and response.json()["error"]["field"] == "metrics.x"


def test_a_span_ends_when_metrics_end_first_appears(owner, project, ended):
    insert(owner, project, start("a", input="q"))
    assert ended == [] and stored(project, "a").ended_at is None
    insert(owner, project, merge("a", output="answer", metrics={"end": 2.0}))
    [[event]] = ended
    assert event.span.row_id == "a" and event.span.pk == stored(project, "a").pk
    assert event.row["output"] == "answer" and event.row["metrics"] == {"start": 1.0, "end": 2.0}
    assert stored(project, "a").ended_at is not None


def test_the_event_carries_the_row_as_merged_at_its_end_not_later_data(owner, project, ended):
    insert(
        owner,
        project,
        start("a"),
        merge("a", output="at end", metrics={"end": 2.0}),
        merge("a", output="later"),
    )
    [[event]] = ended
    assert event.row["output"] == "at end"
    assert event.at_end.output == "at end"
    assert stored(project, "a").output == "later"


def test_the_read_only_row_of_an_ended_span_is_its_row(owner, project, ended):
    """What the scoring engine's filters read (`row_readonly`) is `row`, the API's event of the
    row as it was at its end, whatever the row holds or leaves out."""
    insert(
        owner,
        project,
        start("full", input={"q": "x"}, metadata={"m": 1}, tags=["t"], scores={"s": 0.5}),
        merge("full", output=[1, {"b": None}], expected="y", metrics={"end": 2.0}, error="boom"),
        {"id": "bare", "metrics": {"end": 1.0}},  # no trace ids, no attributes, no created
        {"id": "root", "span_id": "root", "root_span_id": "root", "span_parents": [],
         "span_attributes": {"name": "n", "purpose": "scorer"}, "metrics": {"end": 3.0},
         "context": {"f": "x.py"}, "origin": {"id": "o"}},
    )  # fmt: skip
    [events] = ended
    assert len(events) == 3
    for event in events:
        assert event.row_readonly == event.row


def test_writes_after_the_end_never_emit_again(owner, project, ended):
    insert(owner, project, start("a", metrics={"start": 1.0, "end": 2.0}))
    insert(owner, project, merge("a", output="late", metrics={"end": 3.0}))
    insert(owner, project, start("a", metrics={"start": 1.0, "end": 4.0}))
    assert len(ended) == 1


def test_a_span_ended_in_its_only_row_emits_once(owner, project, ended):
    insert(owner, project, start("a", metrics={"start": 1.0, "end": 2.0}), start("b"))
    assert [[e.span.row_id for e in event] for event in ended] == [["a"]]


@pytest.mark.django_db(transaction=True)
def test_the_event_is_sent_inside_the_ingest_transaction_and_a_failing_receiver_rolls_it_back(owner, project):
    from django.db import connection

    seen = []

    def receiver(sender, ended, **kwargs):
        seen.append(
            (connection.in_atomic_block, Span.objects.filter(row_id="a", ended_at__isnull=False).exists())
        )
        raise RuntimeError("subscriber failed")

    spans_ended.connect(receiver)
    try:
        with pytest.raises(RuntimeError):
            logs_ingest(
                principal=principal_from_key(member_key(project.organization, role="owner")),
                rows=[start("a", metrics={"start": 1.0, "end": 2.0})],
                project=project,
            )
    finally:
        spans_ended.disconnect(receiver)
    assert seen == [(True, True)]  # inside the transaction, after the row was written
    assert not Span.objects.exists() and not Transaction.objects.exists()


def test_merge_paths_on_tags_replace_them_instead_of_unioning(owner, project):
    insert(owner, project, start("a", tags=["x", "y"]))
    insert(owner, project, merge("a", tags=["z"], _merge_paths=[["tags"]]))
    assert stored(project, "a").tags == ["z"]


# --- Property: the same stream through the store, one request per row or batched by the SDK.

partials = st.fixed_dictionaries(
    {},
    optional={
        "output": st.integers(0, 3),
        "metadata": st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
        "tags": st.lists(st.sampled_from(["t1", "t2"]), max_size=2),
        "metrics": st.dictionaries(st.sampled_from(["end", "tokens"]), st.integers(1, 3), max_size=2),
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(st.tuples(st.sampled_from(["a", "b"]), partials), min_size=1, max_size=8))
def test_the_store_agrees_with_the_sdk_batching(org, stream):
    # As the SDK logs a span: its first row replaces, every later one merges.
    rows, seen = [], set()
    for row_id, fields in stream:
        rows.append(
            {"id": row_id, "log_id": "g", **({"_is_merge": True} if row_id in seen else {}), **fields}
        )
        seen.add(row_id)
    principal = principal_from_key(member_key(org, role="owner"))
    one_by_one, batched = ProjectFactory(organization=org), ProjectFactory(organization=org)
    for row in rows:
        logs_ingest(principal=principal, rows=[copy.deepcopy(row)], project=one_by_one)
    logs_ingest(principal=principal, rows=merge_row_batch(copy.deepcopy(rows)), project=batched)

    def state(project):
        return {s.row_id: (s.output, s.metadata, s.tags, s.metrics, s.ended_at is not None)
                for s in Span.objects.filter(project=project)}  # fmt: skip

    assert state(batched) == state(one_by_one)


def test_a_row_written_between_planning_and_locking_is_replanned(owner, project, monkeypatch, ended):
    """The batch is planned before the write lock; a write that lands in between is not lost."""
    from projects.ingest import services

    insert(owner, project, start("a", metadata={"first": 1}))
    real_plan, calls = services._plan, []

    def plan_then_interfere(writes, projects, *, lock):
        calls.append(lock)
        result = real_plan(writes, projects, lock=lock)
        if len(calls) == 1:  # another request merges into the row after we read it
            insert(owner, project, merge("a", metadata={"between": 2}, metrics={"end": 3.0}))
        return result

    monkeypatch.setattr(services, "_plan", plan_then_interfere)
    insert(owner, project, merge("a", metadata={"second": 3}, metrics={"end": 4.0}))
    assert calls == [False, False, True]  # ours, the interfering request's, ours again under the lock
    assert stored(project, "a").metadata == {"first": 1, "between": 2, "second": 3}
    assert stored(project, "a").metrics == {"start": 1.0, "end": 4.0}
    assert len([e for event in ended for e in event]) == 1  # it ended once, in the write between


def test_a_delete_planned_against_a_missing_row_sees_the_row_created_meanwhile(owner, project, monkeypatch):
    from projects.ingest import services

    real_plan, calls = services._plan, []

    def plan_then_interfere(writes, projects, *, lock):
        calls.append(lock)
        result = real_plan(writes, projects, lock=lock)
        if len(calls) == 1:  # the row is created after we found it missing
            insert(owner, project, start("a"))
        return result

    monkeypatch.setattr(services, "_plan", plan_then_interfere)
    insert(owner, project, {"id": "a", "_object_delete": True})
    assert stored(project, "a").deleted


def test_large_numbers_are_stored_as_postgresql_returns_them_so_replays_change_nothing(owner, project):
    batch = [{"id": "a", "metrics": {"start": 1.7326123456789012e18, "tokens": 12.0}}]
    insert(owner, project, *batch)
    xact = stored(project, "a").xact_id
    insert(owner, project, *copy.deepcopy(batch))
    assert stored(project, "a").xact_id == xact
    assert stored(project, "a").metrics == {"start": 1732612345678901200, "tokens": 12.0}


@pytest.mark.parametrize(
    "batch",
    [
        [start("a", metrics={"start": 1.0, "end": 2.0}), {"id": "a", "_object_delete": True}],
        [{"id": "a", "_object_delete": True}, start("a", metrics={"start": 1.0, "end": 2.0})],
        [{"id": "a", "_object_delete": True}, {"id": "a", "metrics": {"end": 2.0}}],
    ],
    ids=["end-then-delete", "delete-then-end", "delete-then-end-without-created"],
)
def test_replaying_a_batch_that_deletes_and_rewrites_a_row_changes_nothing(owner, project, ended, batch):
    insert(owner, project, start("a"))
    insert(owner, project, *copy.deepcopy(batch))
    before, events = list(Span.objects.values()), len([e for event in ended for e in event])
    insert(owner, project, *copy.deepcopy(batch))
    assert list(Span.objects.values()) == before
    assert len([e for event in ended for e in event]) == events


def test_a_span_deleted_and_written_again_is_a_new_span_that_ends_again(owner, project, ended):
    insert(owner, project, start("a", input="first", metrics={"start": 1.0, "end": 2.0}))
    insert(owner, project, {"id": "a", "_object_delete": True})
    insert(owner, project, start("a", input="second", metrics={"start": 3.0, "end": 4.0}))
    assert [[e.row["input"] for e in event] for event in ended] == [["first"], ["second"]]


def test_every_end_in_one_batch_is_an_event_with_its_own_time(owner, project, ended):
    insert(
        owner,
        project,
        start("a", input="first", metrics={"start": 1.0, "end": 2.0}),
        {"id": "a", "_object_delete": True},
        start("a", input="second", metrics={"start": 3.0, "end": 4.0}),
        {"id": "a", "_object_delete": True},
        start("a", input="third"),
    )
    [events] = ended
    assert [e.row["input"] for e in events] == ["first", "second"]
    assert all(e.at_end.ended_at is not None for e in events)
    assert stored(project, "a").ended_at is None and stored(project, "a").input == "third"


def test_a_receiver_cannot_change_what_is_stored_through_the_event(owner, project):
    def receiver(sender, ended, **kwargs):
        for e in ended:
            e.row["input"]["seen"] = 1
            e.at_end.input["seen"] = 1

    spans_ended.connect(receiver)
    try:
        insert(owner, project, start("a", input={"q": 1}, metrics={"start": 1.0, "end": 2.0}))
        insert(owner, project, merge("a", output="later"))
    finally:
        spans_ended.disconnect(receiver)
    assert stored(project, "a").input == {"q": 1}


@pytest.mark.django_db(transaction=True)  # foreign keys are checked at commit
def test_a_project_deleted_while_its_batch_is_written_is_a_404(owner, project, monkeypatch):
    from projects.ingest import services

    real_plan = services._plan

    def plan_then_delete(writes, projects, *, lock):
        result = real_plan(writes, projects, lock=lock)
        Project.objects.filter(pk=project.pk).delete()
        return result

    monkeypatch.setattr(services, "_plan", plan_then_delete)
    response = owner.post(f"/v1/project_logs/{project.pk}/insert", {"events": [start("a")]})
    assert response.status_code == 404 and "deleted" in response.json()["error"]["message"]


def test_duplicate_tags_are_stored_once(owner, project):
    batch = [{"id": "a", "_is_merge": True, "tags": ["t1", "t1", "t2"]}]
    insert(owner, project, *batch)
    xact = stored(project, "a").xact_id
    insert(owner, project, *copy.deepcopy(batch))
    assert stored(project, "a").tags == ["t1", "t2"] and stored(project, "a").xact_id == xact


def test_project_ids_in_rows_compare_as_uuids(owner, project):
    insert(owner, project, {"id": "a", "project_id": str(project.pk).upper()})
    assert stored(project, "a")


def test_a_comment_written_between_planning_and_locking_is_replanned(owner, project, monkeypatch):
    from projects.ingest import services

    insert(owner, project, start("a"), {"id": "c1", "comment": {"text": "v1"}, "origin": {"id": "a"}})
    real_plan, calls = services._plan, []

    def plan_then_interfere(writes, projects, *, lock):
        calls.append(lock)
        result = real_plan(writes, projects, lock=lock)
        if len(calls) == 1:
            insert(owner, project, {"id": "c1", "comment": {"text": "v2"}, "origin": {"id": "a"}})
        return result

    monkeypatch.setattr(services, "_plan", plan_then_interfere)
    # Replaying v1 after v2 landed must write v1 again: the planned no-op is stale.
    insert(owner, project, {"id": "c1", "comment": {"text": "v1"}, "origin": {"id": "a"}})
    assert calls[-1] is True
    assert Comment.objects.get(row_id="c1").comment == {"text": "v1"}
