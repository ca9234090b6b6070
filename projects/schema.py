"""OpenAPI: how drf-spectacular describes our API-key authentication (Swagger UI's Authorize)."""

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
