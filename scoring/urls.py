from django.urls import path

from scoring import apis

urlpatterns = [
    path("v1/project_logs/<str:project_id>/fetch", apis.LogsFetchAPI.as_view()),
    path("btql", apis.BTQLAPI.as_view()),
]
