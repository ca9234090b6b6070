"""The scoring API: logs fetch and POST /btql, online scoring rules (Braintrust's project
scores), Test rule, manual scoring, scoring runs and the "why is there no score?" state."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from onlinescore.exceptions import Forbidden
from projects.apis import ProjectScopedAPIView, RawJSONAPIView, validated, validated_query
from projects.selectors import project_get
from scoring import selectors, services
from scoring.models import Function, Rule
from scoring.scorers import builtin, llm
from scoring.serializers import (
    BTQLResultSerializer,
    BTQLSerializer,
    FetchResultSerializer,
    FetchSerializer,
    FunctionInvokeSerializer,
    FunctionListQuerySerializer,
    FunctionPatchSerializer,
    FunctionWriteSerializer,
    LLMEndpointSerializer,
    RuleListQuerySerializer,
    RulePatchSerializer,
    RuleSerializer,
    RuleTestSerializer,
    RuleWriteSerializer,
    RunListQuerySerializer,
    ScoreLogsSerializer,
    ScoringStateQuerySerializer,
)


class LogsFetchAPI(ProjectScopedAPIView):
    permissions = {"GET": "read", "HEAD": "read", "POST": "read"}

    @extend_schema(parameters=[FetchSerializer], responses={200: FetchResultSerializer})
    def get(self, request, project_id):
        return self._fetch(validated_query(FetchSerializer, request))

    @extend_schema(request=FetchSerializer, responses={200: FetchResultSerializer})
    def post(self, request, project_id):
        return self._fetch(validated(FetchSerializer, self.body(allow_empty=True)))

    def _fetch(self, params: dict) -> Response:
        events, cursor = selectors.logs_search(
            project=self.get_project(),
            filter_text=params.get("filter"),
            limit=params["limit"],
            cursor=params.get("cursor"),
        )
        return Response({"events": events, "cursor": cursor})


class BTQLAPI(RawJSONAPIView):
    @extend_schema(request=BTQLSerializer, responses={200: BTQLResultSerializer})
    def post(self, request):
        params = validated(BTQLSerializer, self.body())
        data, cursor = selectors.btql_run(principal=request.auth, query=params["query"])
        return Response({"data": data, "cursor": cursor})


# --- Online scoring rules -------------------------------------------------------------------


class RuleListCreateAPI(RawJSONAPIView):
    @extend_schema(
        operation_id="project_score_list",
        parameters=[RuleListQuerySerializer],
        responses={200: inline_serializer("RuleList", {"objects": RuleSerializer(many=True)})},
    )
    def get(self, request):
        params = validated_query(RuleListQuerySerializer, request)
        rules = selectors.rule_list(
            principal=request.auth, project_id=params.get("project_id"), name=params.get("project_score_name")
        )
        return Response({"objects": RuleSerializer(rules, many=True).data})

    @extend_schema(request=RuleWriteSerializer, responses={200: RuleSerializer})
    def post(self, request):
        """Create a rule. As in Braintrust, if the project has a rule of that name already, it
        is returned unchanged (use PATCH to change it)."""
        data = validated(RuleWriteSerializer, self.body())
        project = project_get(
            principal=request.auth,
            project_id=data["project_id"],
            object_type="project",
            permission="update",
            field="project_id",
        )
        rule = services.rule_get_or_create(
            run_as_user=request.auth.user,
            run_as_key=request.auth.key,
            project=project,
            name=data["name"],
            description=data.get("description") or "",
            online=data["config"]["online"],
        )
        return Response(RuleSerializer(rule).data)


class RuleDetailAPI(RawJSONAPIView):
    @extend_schema(responses={200: RuleSerializer})
    def get(self, request, rule_id):
        return Response(RuleSerializer(self._rule("read")).data)

    @extend_schema(request=RulePatchSerializer, responses={200: RuleSerializer})
    def patch(self, request, rule_id):
        data = validated(RulePatchSerializer, self.body())
        rule = services.rule_update(
            rule=self._rule("update"),
            editor=request.auth,
            name=data.get("name"),
            description=data.get("description"),
            online=data.get("config", {}).get("online"),
        )
        return Response(RuleSerializer(rule).data)

    @extend_schema(responses={200: RuleSerializer})
    def delete(self, request, rule_id):
        rule = self._rule("update")
        data = RuleSerializer(rule).data
        services.rule_delete(rule=rule)
        return Response(data)

    def _rule(self, permission: str) -> Rule:
        return selectors.rule_get(
            principal=self.request.auth, rule_id=self.kwargs["rule_id"], permission=permission
        )


class RuleTestAPI(RawJSONAPIView):
    @extend_schema(
        request=RuleTestSerializer,
        responses={200: inline_serializer("RuleTestResult", {"results": serializers.ListField()})},
    )
    def post(self, request):
        """Preview a rule on the most recent ended spans. Nothing is saved."""
        data = validated(RuleTestSerializer, self.body())
        project = project_get(
            principal=request.auth,
            project_id=data["project_id"],
            object_type="project_logs",
            permission="read",
            field="project_id",
        )
        results = services.rule_test(
            principal=request.auth, project=project, online=data["config"]["online"], limit=data["limit"]
        )
        return Response({"results": results})


class RuleStatsAPI(RawJSONAPIView):
    @extend_schema(responses={200: inline_serializer("RuleStats", {"matched": serializers.IntegerField()})})
    def get(self, request, rule_id):
        rule = selectors.rule_get(principal=request.auth, rule_id=rule_id, permission="read")
        return Response(selectors.rule_stats(rule=rule))


# --- Manual scoring and scoring state --------------------------------------------------------


class LogsScoreAPI(ProjectScopedAPIView):
    @extend_schema(
        request=ScoreLogsSerializer,
        responses={202: inline_serializer("ScoreLogsResult", {"runs": serializers.ListField()})},
    )
    def post(self, request, project_id):
        """Score logs by hand: `ids` (specific logs), or `filter` for the `limit` (default 50)
        most recent root spans that match ("Score past logs")."""
        project = self.get_project()
        data = validated(ScoreLogsSerializer, self.body())
        runs = services.logs_score(
            principal=request.auth,
            project=project,
            scorer_refs=data["scorers"],
            ids=data.get("ids"),
            filter_text=data.get("filter"),
            limit=data.get("limit"),
        )
        return Response({"runs": [selectors.run_summary(run) for run in runs]}, status=202)


class ScoringStateAPI(ProjectScopedAPIView):
    @extend_schema(
        parameters=[ScoringStateQuerySerializer],
        responses={
            200: inline_serializer(
                "ScoringState",
                {
                    "id": serializers.CharField(),
                    "rules": serializers.ListField(),
                    "manual_runs": serializers.ListField(),
                },
            )
        },
    )
    def get(self, request, project_id):
        """Why a span has, or has no, score: each rule's decision, its runs and their errors."""
        params = validated_query(ScoringStateQuerySerializer, request)
        return Response(selectors.scoring_state(project=self.get_project(), row_id=params["id"]))


class ScoringRunsAPI(RawJSONAPIView):
    @extend_schema(
        parameters=[RunListQuerySerializer],
        responses={200: inline_serializer("RunList", {"objects": serializers.ListField()})},
    )
    def get(self, request):
        params = validated_query(RunListQuerySerializer, request)
        runs = selectors.runs_get(principal=request.auth, run_ids=params["ids"])
        return Response({"objects": [selectors.run_summary(run) for run in runs]})


# --- Scorers ---------------------------------------------------------------------------------


class ScorerCatalogueAPI(RawJSONAPIView):
    @extend_schema(responses={200: inline_serializer("Scorers", {"objects": serializers.ListField()})})
    def get(self, request):
        """The built-in scorers: their names, the span fields they need, and whether they call an LLM."""
        return Response(
            {
                "objects": builtin.catalogue(),
                "llm_endpoint_configured": llm.endpoint_configured(request.auth.organization),
            }
        )


class FunctionListCreateAPI(RawJSONAPIView):
    @extend_schema(
        operation_id="function_list",
        parameters=[FunctionListQuerySerializer],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        params = validated_query(FunctionListQuerySerializer, request)
        functions = selectors.function_list(
            principal=request.auth, project_id=params.get("project_id"), slug=params.get("slug"),
            name=params.get("function_name"),
        )  # fmt: skip
        return Response({"objects": [selectors.function_event(f) for f in functions]})

    @extend_schema(request=FunctionWriteSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        """Create a scorer. As in Braintrust, a function with this slug in the project is
        returned unchanged (PATCH makes a new version)."""
        data = validated(FunctionWriteSerializer, self.body())
        project = project_get(
            principal=request.auth,
            project_id=data["project_id"],
            object_type="project",
            permission="update",
            field="project_id",
        )
        function = services.function_get_or_create(
            principal=request.auth, project=project, name=data["name"], slug=data["slug"],
            description=data.get("description") or "", function_data=data["function_data"],
            prompt_data=data.get("prompt_data"),
        )  # fmt: skip
        return Response(selectors.function_event(function))


class FunctionDetailAPI(RawJSONAPIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, function_id):
        return Response(selectors.function_event(self._function("read")))

    @extend_schema(request=FunctionPatchSerializer, responses={200: OpenApiTypes.OBJECT})
    def patch(self, request, function_id):
        data = validated(FunctionPatchSerializer, self.body())
        function = services.function_update(principal=request.auth, function=self._function("update"), **data)
        return Response(selectors.function_event(function))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, function_id):
        function = self._function("update")
        event = selectors.function_event(function)
        services.function_delete(function=function)
        return Response(event)

    def _function(self, permission: str) -> Function:
        return selectors.function_get(
            principal=self.request.auth, function_id=self.kwargs["function_id"], permission=permission
        )


class FunctionInvokeAPI(RawJSONAPIView):
    @extend_schema(request=FunctionInvokeSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, function_id):
        """Try a scorer on sample values, through the same sandbox or LLM call as live runs."""
        data = validated(FunctionInvokeSerializer, self.body(allow_empty=True))
        function = selectors.function_get(principal=request.auth, function_id=function_id, permission="read")
        version = data.pop("version", None)
        arguments = {name: data.get(name) for name in ("input", "output", "expected", "metadata")}
        return Response(
            services.function_invoke(
                principal=request.auth, function=function, arguments=arguments, version=version
            )
        )


class LLMEndpointAPI(RawJSONAPIView):
    """The organization's OpenAI-compatible endpoint for LLM-backed scorers. Owners only; the
    API key is stored encrypted and never returned."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        self._owner()
        return Response(self._event(selectors.llm_endpoint_get(organization=request.auth.organization)))

    @extend_schema(request=LLMEndpointSerializer, responses={200: OpenApiTypes.OBJECT})
    def put(self, request):
        self._owner()
        data = validated(LLMEndpointSerializer, self.body())
        endpoint = services.llm_endpoint_set(
            organization=request.auth.organization, base_url=data["base_url"], default_model=data["default_model"],
            api_key=data.get("api_key"),
        )  # fmt: skip
        return Response(self._event(endpoint))

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def delete(self, request):
        self._owner()
        services.llm_endpoint_delete(organization=request.auth.organization)
        return Response(self._event(None))

    def _owner(self) -> None:
        if not self.request.auth.is_owner:
            raise Forbidden("Only owners of the organization can see or set its LLM endpoint.")

    @staticmethod
    def _event(endpoint) -> dict:
        if endpoint is None:
            return {"configured": False}
        return {"configured": True, "base_url": endpoint.base_url, "default_model": endpoint.default_model,
                "api_key_set": bool(endpoint.api_key_encrypted)}  # fmt: skip
