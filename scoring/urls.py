from django.urls import path

from scoring import apis, views

urlpatterns = [
    path("v1/project_logs/<str:project_id>/fetch", apis.LogsFetchAPI.as_view()),
    path("v1/project_logs/<str:project_id>/score", apis.LogsScoreAPI.as_view()),
    path("v1/project_logs/<str:project_id>/scoring_state", apis.ScoringStateAPI.as_view()),
    path("btql", apis.BTQLAPI.as_view()),
    path("v1/project_score", apis.RuleListCreateAPI.as_view()),
    path("v1/project_score/test", apis.RuleTestAPI.as_view()),
    path("v1/project_score/<str:rule_id>", apis.RuleDetailAPI.as_view()),
    path("v1/project_score/<str:rule_id>/stats", apis.RuleStatsAPI.as_view()),
    path("v1/scoring_runs", apis.ScoringRunsAPI.as_view()),
    path("v1/scorers", apis.ScorerCatalogueAPI.as_view()),
    path("v1/function", apis.FunctionListCreateAPI.as_view()),
    path("v1/function/<str:function_id>", apis.FunctionDetailAPI.as_view()),
    path("v1/function/<str:function_id>/invoke", apis.FunctionInvokeAPI.as_view()),
    path("v1/llm_endpoint", apis.LLMEndpointAPI.as_view()),
    # The web UI's pages.
    path("projects/<uuid:project_id>/", views.LogsPage.as_view(), name="logs"),
    path("projects/<uuid:project_id>/logs/<path:row_id>/", views.TracePage.as_view(), name="trace"),
    path("projects/<uuid:project_id>/online-scoring/", views.RulesPage.as_view(), name="rules"),
    path(
        "projects/<uuid:project_id>/online-scoring/<uuid:rule_id>/errors/",
        views.RuleErrorsPage.as_view(),
        name="rule_errors",
    ),
    path("app/<str:organization>/object", views.SpanPermalink.as_view(), name="permalink"),
    path("projects/<uuid:project_id>/scorers/", views.ScorersPage.as_view(), name="scorers"),
    path("projects/<uuid:project_id>/monitor/", views.MonitorPage.as_view(), name="monitor"),
]
