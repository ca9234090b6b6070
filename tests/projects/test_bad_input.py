"""Bad input: a 400 (or 413) JSON error naming the row and the field, and nothing written."""

import gzip
import json

import pytest
from django.test import override_settings

from projects.models import Comment, Span, Transaction
from tests.conftest import Api

pytestmark = pytest.mark.django_db

GOOD = {"id": "ok", "input": "fine"}


def insert_raw(api, project, body, **kw):
    return api.post(f"/v1/project_logs/{project.pk}/insert", body, **kw)


def assert_nothing_written():
    assert not Span.objects.exists() and not Comment.objects.exists() and not Transaction.objects.exists()


@pytest.mark.parametrize(
    ("bad_row", "field", "words"),
    [
        ("not an object", None, "JSON object"),
        ({"id": 5}, "id", "non-empty string"),
        ({"id": ""}, "id", "non-empty string"),
        ({"id": "x" * 300}, "id", "longer than"),
        ({"id": "b", "span_id": 3}, "span_id", "non-empty string"),
        ({"id": "b", "span_parents": "p"}, "span_parents", "list of span ids"),
        ({"id": "b", "metadata": [1]}, "metadata", "object"),
        ({"id": "b", "span_attributes": {"name": 3}}, "span_attributes.name", "string"),
        ({"id": "b", "scores": {"acc": 1.5}}, "scores.acc", "from 0 to 1"),
        ({"id": "b", "scores": {"acc": "high"}}, "scores.acc", "from 0 to 1"),
        ({"id": "b", "metrics": {"start": "soon"}}, "metrics.start", "number"),
        ({"id": "b", "tags": ["ok", 1]}, "tags", "list of strings"),
        ({"id": "b", "created": "yesterday"}, "created", "ISO-8601"),
        ({"id": "b", "_is_merge": "yes"}, "_is_merge", "boolean"),
        ({"id": "b", "_merge_paths": ["input"]}, "_merge_paths", "list of paths"),
        ({"id": "b", "experiment_id": "e"}, "experiment_id", "project logs"),
        ({"id": "b", "log_id": "x"}, "log_id", "'g'"),
        ({"id": "b", "surprise": 1}, "surprise", "Unknown field"),
        ({"id": "b", "_parent_id": "p"}, "_parent_id", "span_parents"),
        ({"id": "b", "comment": {"text": "hi"}}, "origin.id", "origin.id"),
        ({"id": "b", "input": {"a": ["nul \u0000 inside"]}}, "input.a[0]", "NUL"),
        ({"id": "b", "metadata": {"bad\u0000key": 1}}, "metadata", "NUL"),
        ({"id": "b", "input": "lone \ud800 surrogate"}, "input", "surrogates"),
        ({"id": "b", "metadata": {"k\udfff": 1}}, "metadata", "surrogates"),
        ({"id": "b\ud800"}, "id", "surrogates"),
        ({"id": "b", "metrics": {"start": 10**400}}, "metrics.start", "64-bit"),
        ({"id": "b", "output": -(2**63) - 1}, "output", "64-bit"),
        ({"id": "b", "metrics": {"end": 1e300}}, "metrics.end", "64-bit"),
        ({"id": "b", "created": "0001-01-01T00:00:00+05:00"}, "created", "out of range"),
        ({"id": "b", "comment": {"text": "hi"}, "origin": {"id": "x" * 300}}, "origin.id", "longer than"),
        ({"id": "b", "metadata": {"a b": {"c": "\u0000"}}}, 'metadata."a b".c', "NUL"),
        ({"id": "b", "org_id": ["x"]}, "org_id", "string"),
        ({"id": "b", "org_id": "5"}, "org_id", "organization of your API key"),
        (
            {"id": "b", "org_id": "6f1c3a52-28a4-4b8e-9e0f-8ad8f1f1f1f1"},
            "org_id",
            "organization of your API key",
        ),
        (
            {"id": "c", "comment": {"text": "hi"}, "origin": {"id": "a"}, "input": "lost"},
            "input",
            "log that in a row",
        ),
        (
            {"id": "c", "comment": {"text": "hi"}, "origin": {"id": "a"}, "scores": {"s": 1}},
            "scores",
            "not scores",
        ),
        (
            {"id": "c", "comment": {"text": "hi"}, "origin": {"id": "a"}, "_is_merge": True},
            "_is_merge",
            "comment",
        ),
    ],
)
def test_a_bad_row_rejects_the_batch_with_its_index_and_field(owner, project, bad_row, field, words):
    response = insert_raw(owner, project, {"events": [GOOD, bad_row]})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["index"] == 1 and error.get("field") == field
    assert words in error["message"]
    assert_nothing_written()


def test_logs3_reports_the_row_index_too(owner, project):
    rows = [
        {**GOOD, "project_id": str(project.pk)},
        {"id": "b", "project_id": str(project.pk), "scores": {"a": 2}},
    ]
    response = owner.post("/logs3", {"rows": rows}, content_type="")
    assert response.status_code == 400
    assert response.json()["error"]["index"] == 1
    assert_nothing_written()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"api_version": "two"}, "api_version"),
        ({"api_version": True}, "api_version"),
    ],
)
def test_logs3_refuses_what_it_does_not_know_at_the_top_level(owner, project, extra, field):
    row = {**GOOD, "project_id": str(project.pk)}
    response = owner.post("/logs3", {"rows": [row], "api_version": 2, **extra}, content_type="")
    assert response.status_code == 400 and response.json()["error"]["field"] == field
    assert_nothing_written()


def test_logs3_rows_need_a_project(owner, project):
    response = owner.post("/logs3", {"rows": [GOOD]}, content_type="")
    assert response.status_code == 400 and response.json()["error"]["field"] == "project_id"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"events": [', "Invalid JSON"),
        (b'{"events": [{"id": "a", "input": NaN}]}', "NaN"),
        (b'{"events": [{"id": "a", "input": 1e400}]}', "64-bit"),
        (b'{"events": [{"id": "a", "input": ' + b"[" * 150 + b"]" * 150 + b"}]}", "nested"),
        (b'{"events": [{"id": "a", "input": ' + b'{"k": ' * 150 + b"1" + b"}" * 150 + b"}]}", "nested"),
        (b'{"events": [{"id": "a", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}", "nested"),
        (b"\xff\xfe", "UTF-8"),
        (b"", "empty"),
        (b'[{"id": "a"}]', "events"),
        (b'{"events": {"id": "a"}}', "list of rows"),
    ],
)
def test_a_malformed_body_is_a_400_with_a_message(owner, project, raw, words):
    response = insert_raw(owner, project, None, raw=raw)
    assert response.status_code == 400, response.content
    assert words in response.json()["error"]["message"]
    assert_nothing_written()


def test_invalid_json_reports_line_and_column(owner, project):
    response = insert_raw(owner, project, None, raw=b'{"events": [\n  {"id": "a",}\n]}')
    error = response.json()["error"]
    assert (error["line"], error["column"]) == (2, 14)


def test_gzipped_bodies_are_accepted(owner, project):
    body = {"rows": [{**GOOD, "project_id": str(project.pk)}]}
    assert owner.post("/logs3", body, content_type="", gzipped=True).status_code == 200
    assert Span.objects.get(row_id="ok").input == "fine"


def test_gzip_is_recognised_without_a_content_encoding_header(owner, project):
    raw = gzip.compress(json.dumps({"rows": [{**GOOD, "project_id": str(project.pk)}]}).encode())
    assert owner.post("/logs3", raw=raw, content_type="").status_code == 200


@pytest.mark.parametrize("mangle", [lambda z: z[:-4], lambda z: z + z], ids=["truncated", "two-members"])
def test_incomplete_or_concatenated_gzip_is_a_400(owner, project, mangle):
    raw = gzip.compress(json.dumps({"rows": [{**GOOD, "project_id": str(project.pk)}]}).encode())
    response = owner.post("/logs3", raw=mangle(raw), content_type="")
    assert response.status_code == 400 and "gzip" in response.json()["error"]["message"]
    assert_nothing_written()


def test_a_chunked_body_without_length_is_a_411(owner, project):
    response = owner.client.generic(
        "POST", "/logs3", b"", content_type="", HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH=""
    )
    assert response.status_code == 411 and "Content-Length" in response.json()["error"]["message"]


def test_broken_gzip_is_a_400(owner, project):
    response = owner.post("/logs3", raw=b"\x1f\x8bnot gzip", content_type="")
    assert response.status_code == 400 and "gzip" in response.json()["error"]["message"]


@override_settings(INGEST_MAX_BODY_BYTES=1000)
def test_a_body_over_the_cap_is_a_413(owner, project):
    big = {"events": [{"id": "a", "input": "x" * 2000}]}
    response = insert_raw(owner, project, big)
    assert response.status_code == 413 and response.json()["error"]["limit"] == 1000
    assert_nothing_written()


@override_settings(INGEST_MAX_BODY_BYTES=1000)
def test_a_gzip_bomb_over_the_cap_is_a_413(owner, project):
    response = owner.post(
        "/logs3", {"rows": [{"id": "a", "input": "x" * 100_000}]}, content_type="", gzipped=True
    )
    assert response.status_code == 413
    assert_nothing_written()


def test_unknown_fetch_parameters_and_bad_limits_are_400s(owner, project):
    assert owner.get(f"/v1/project_logs/{project.pk}/fetch", limit="many").json()["error"]["field"] == "limit"
    assert owner.get(f"/v1/project_logs/{project.pk}/fetch", limit=0).json()["error"]["field"] == "limit"
    assert (
        owner.get(f"/v1/project_logs/{project.pk}/fetch", cursor="garbage").json()["error"]["field"]
        == "cursor"
    )
    response = owner.post(f"/v1/project_logs/{project.pk}/fetch", {"filters": []})
    assert response.status_code == 400 and response.json()["error"]["field"] == "filters"


@override_settings(INGEST_MAX_BODY_BYTES=1000)
def test_an_oversized_fetch_body_is_a_json_413(owner, project):
    response = owner.post(f"/v1/project_logs/{project.pk}/fetch", {"cursor": "x" * 2000})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_head_requests_are_checked_like_get(owner, project):
    assert owner.client.head(f"/v1/project/{project.pk}").status_code == 200
    assert owner.client.head(f"/v1/project_logs/{project.pk}/fetch").status_code == 200
    assert Api(None).client.head(f"/v1/project/{project.pk}").status_code == 401


def test_a_nul_in_a_query_parameter_is_a_400(owner, project):
    response = owner.get("/v1/project", project_name="a\x00b")
    assert response.status_code == 400 and response.json()["error"]["field"] == "project_name"


def test_a_project_group_is_refused_not_ignored(owner):
    response = owner.post("/v1/project", {"name": "p", "project_group_name": "g"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "project_group_name"


def test_an_unknown_url_is_a_json_404(owner):
    response = owner.get("/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_project_name_must_be_given(owner):
    response = owner.post("/v1/project", {"description": "x"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "name"


def test_a_row_may_name_the_organization_of_its_key(owner, project):
    row = {**GOOD, "id": "named", "org_id": str(project.organization.pk).upper()}
    assert insert_raw(owner, project, {"events": [row]}).status_code == 200
