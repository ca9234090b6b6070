from projects.models import Span


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
