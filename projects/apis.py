"""The HTTP API: Braintrust's REST dialect, so that the unmodified SDK can log here.

Views parse, call one service or selector, and serialize. Authentication is the API key
(projects.auth); the project, the permission and tenancy are checked by `project_get`.
"""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from onlinescore.exceptions import ValidationError
from projects import selectors, services
from projects.ingest.services import logs_ingest
from projects.ingest.wire import read_json_body
from projects.serializers import (
    InsertSerializer,
    Logs3Serializer,
    ProjectCreateSerializer,
    ProjectListQuerySerializer,
    ProjectRegisterSerializer,
    ProjectSerializer,
    RowIdsSerializer,
)


def validated(serializer_class, data, *, types: bool = True) -> dict:
    """A JSON body's validated data. A field the serializer does not know, at any depth, is an
    error, and so is a value of another JSON type than the field's (unless `types` is off, for
    text that the fields convert): DRF alone would read true as 1.0, 1 as "1" and "5" as 5."""
    if not isinstance(data, dict):
        raise ValidationError("Expected a JSON object.", field=None)
    _check(serializer_class(), data, prefix="", types=types)
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def validated_query(serializer_class, request) -> dict:
    """A query string's validated data: each parameter known and given once (else which value
    counts?); its text is converted by the field."""
    repeated = sorted(name for name, values in request.query_params.lists() if len(values) > 1)
    if repeated:
        raise ValidationError(f"Give {repeated[0]!r} once.", field=repeated[0])
    return validated(serializer_class, request.query_params.dict(), types=False)


# The JSON types a field takes, first match wins (subclasses such as URLField are CharFields).
_JSON_TYPES = [
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.UUIDField, (str,), "a string"),
    (serializers.CharField, (str,), "a string"),
    (serializers.ListField, (list,), "a list"),
    (serializers.DictField, (dict,), "an object"),
]


def _check(serializer: serializers.Serializer, data: dict, *, prefix: str, types: bool) -> None:
    fields = serializer.fields
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValidationError(f"Unknown field {unknown[0]!r}.", field=prefix + unknown[0])
    for name, value in data.items():
        field = fields[name]
        if isinstance(field, serializers.Serializer) and isinstance(value, dict):
            _check(field, value, prefix=f"{prefix}{name}.", types=types)
        elif types:
            _check_type(field, value, prefix + name)


def _check_type(field: serializers.Field, value, where: str) -> None:
    if value is None:
        return  # the field's allow_null decides
    for kind, json_types, words in _JSON_TYPES:
        if isinstance(field, kind):
            if not isinstance(value, json_types) or (isinstance(value, bool) and bool not in json_types):
                raise ValidationError(f"{where.rsplit('.', 1)[-1]} must be {words}.", field=where)
            break
    if isinstance(field, serializers.ListField):
        for i, item in enumerate(value):
            _check_type(field.child, item, f"{where}[{i}]")


class RawJSONAPIView(APIView):
    """Reads the body itself: SDK clients post JSON without a Content-Type, sometimes gzipped."""

    parser_classes: list = []

    def body(self, *, allow_empty: bool = False):
        return read_json_body(self.request._request, allow_empty=allow_empty)


class ProjectScopedAPIView(RawJSONAPIView):
    """Resolves `project_id` from the URL and checks `object_type`/`permissions[method]`."""

    object_type = "project_logs"
    permissions = {"GET": "read", "HEAD": "read", "POST": "update", "DELETE": "update"}

    def get_project(self):
        return selectors.project_get(
            principal=self.request.auth,
            project_id=self.kwargs["project_id"],
            object_type=self.object_type,
            permission=self.permissions[self.request.method],
        )


# --- Braintrust SDK handshake -------------------------------------------------------------


class LoginAPI(APIView):
    @extend_schema(
        request=None, responses={200: inline_serializer("Login", {"org_info": serializers.ListField()})}
    )
    def post(self, request):
        base = settings.PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")
        org = request.auth.organization
        return Response(
            {
                "org_info": [
                    {
                        "id": str(org.pk),
                        "name": org.name,
                        "api_url": base,
                        "proxy_url": base,
                        "git_metadata": None,
                    }
                ]
            }
        )


class VersionAPI(APIView):
    @extend_schema(
        responses={200: inline_serializer("Version", {"logs3_payload_max_bytes": serializers.IntegerField()})}
    )
    def get(self, request):
        # null: the SDK then sends every batch straight to /logs3, never via the overflow path.
        return Response({"logs3_payload_max_bytes": None})


class Logs3API(RawJSONAPIView):
    @extend_schema(
        request=Logs3Serializer,
        responses={200: inline_serializer("Logs3Result", {})},
    )
    def post(self, request):
        body = self.body()
        if not isinstance(body, dict) or "rows" not in body:
            raise ValidationError('Expected {"rows": [...], "api_version": 2}.', field="rows")
        if isinstance(body["rows"], dict):
            raise ValidationError(
                "Overflow uploads are not supported; /version advertises no payload limit.", field="rows"
            )
        # Fields and types only: the rows are checked one by one by the ingest (a serializer's
        # validation would copy each of them first).
        _check(Logs3Serializer(), body, prefix="", types=True)
        logs_ingest(principal=request.auth, rows=body["rows"])
        return Response({})


# --- Projects ----------------------------------------------------------------------------


class ProjectListCreateAPI(RawJSONAPIView):
    @extend_schema(
        operation_id="project_list",
        parameters=[OpenApiParameter("project_name", str, description="Only the project with this name")],
        responses={200: inline_serializer("ProjectList", {"objects": ProjectSerializer(many=True)})},
    )
    def get(self, request):
        params = validated_query(ProjectListQuerySerializer, request)
        projects = selectors.project_list(principal=request.auth, name=params.get("project_name"))
        return Response({"objects": ProjectSerializer(projects, many=True).data})

    @extend_schema(request=ProjectCreateSerializer, responses={200: ProjectSerializer})
    def post(self, request):
        data = validated(ProjectCreateSerializer, self.body())
        project, _ = services.project_get_or_create(
            principal=request.auth,
            name=data["name"],
            description=data.get("description") or "",
            org_name=data.get("org_name"),
        )
        return Response(ProjectSerializer(project).data)


class ProjectDetailAPI(ProjectScopedAPIView):
    object_type = "project"

    @extend_schema(responses={200: ProjectSerializer})
    def get(self, request, project_id):
        return Response(ProjectSerializer(self.get_project()).data)

    @extend_schema(responses={200: ProjectSerializer})
    def delete(self, request, project_id):
        project = self.get_project()
        data = ProjectSerializer(project).data
        services.project_delete(project=project)
        return Response(data)


class ProjectRegisterAPI(RawJSONAPIView):
    """The project resolve of SDKs up to 0.34 (and of the JS SDK)."""

    @extend_schema(
        request=ProjectRegisterSerializer,
        responses={200: inline_serializer("Registered", {"project": ProjectSerializer()})},
    )
    def post(self, request):
        data = validated(ProjectRegisterSerializer, self.body())
        project, _ = services.project_get_or_create(
            principal=request.auth, name=data["project_name"], org_id=data.get("org_id")
        )
        return Response({"project": ProjectSerializer(project).data})


class ProjectLegacyGetAPI(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("id", str, required=True)], responses={200: ProjectSerializer}
    )
    def get(self, request):
        project_id = request.query_params.get("id")
        if not project_id:
            raise ValidationError("The id query parameter is required.", field="id")
        project = selectors.project_get(
            principal=request.auth, project_id=project_id, object_type="project", permission="read"
        )
        return Response(ProjectSerializer(project).data)


# --- Project logs ------------------------------------------------------------------------


class LogsInsertAPI(ProjectScopedAPIView):
    @extend_schema(request=InsertSerializer, responses={200: RowIdsSerializer})
    def post(self, request, project_id):
        project = self.get_project()
        body = self.body()
        if not isinstance(body, dict) or "events" not in body:
            raise ValidationError('Expected {"events": [...]}.', field="events")
        unknown = sorted(set(body) - {"events"})
        if unknown:
            raise ValidationError(f"Unknown field {unknown[0]!r}.", field=unknown[0])
        row_ids = logs_ingest(principal=request.auth, rows=body["events"], project=project)
        return Response({"row_ids": row_ids})
