"""OpenAPI: how drf-spectacular describes our authentication (Swagger UI's Authorize)."""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "projects.auth.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An onlinescore API key: `Authorization: Bearer os_...`",
        }


class SessionAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "projects.auth.SessionAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "The web UI's signed-in session, with `X-CSRFToken` on writes and "
            "`X-Organization` naming the organization to act in.",
        }
