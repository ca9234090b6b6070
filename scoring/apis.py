"""The logs API: fetch with a BTQL filter, and POST /btql."""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from projects.apis import ProjectScopedAPIView, RawJSONAPIView, validated
from scoring import selectors
from scoring.serializers import BTQLResultSerializer, BTQLSerializer, FetchResultSerializer, FetchSerializer


class LogsFetchAPI(ProjectScopedAPIView):
    permissions = {"GET": "read", "HEAD": "read", "POST": "read"}

    @extend_schema(parameters=[FetchSerializer], responses={200: FetchResultSerializer})
    def get(self, request, project_id):
        return self._fetch(validated(FetchSerializer, request.query_params.dict()))

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
