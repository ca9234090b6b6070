from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "projects"
    verbose_name = "Organizations, projects and logs"

    def ready(self):
        from projects import (
            checks,  # noqa: F401 registers the system checks
            schema,  # noqa: F401 registers the OpenAPI authentication scheme
        )
