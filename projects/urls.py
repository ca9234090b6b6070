from django.urls import path

from projects import apis, views

urlpatterns = [
    path("", views.HomePage.as_view(), name="home"),
    path("api/apikey/login", apis.LoginAPI.as_view()),
    path("api/project/register", apis.ProjectRegisterAPI.as_view()),
    path("api/project", apis.ProjectLegacyGetAPI.as_view()),
    path("version", apis.VersionAPI.as_view()),
    path("logs3", apis.Logs3API.as_view()),
    path("v1/project", apis.ProjectListCreateAPI.as_view()),
    path("v1/project/<str:project_id>", apis.ProjectDetailAPI.as_view()),
    path("v1/project_logs/<str:project_id>/insert", apis.LogsInsertAPI.as_view()),
]
