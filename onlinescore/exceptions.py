"""One error shape for the whole API: {"error": {"message", "code", ...details}}.

Domain code raises ApplicationError subclasses; DRF's own exceptions (authentication,
permission, parse errors, throttling) are rendered in the same shape by `exception_handler`.
"""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response


class ApplicationError(Exception):
    """Base of every error the domain raises on purpose. `details` are merged into the body."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class ValidationError(ApplicationError):
    """Bad input. `details` say where: `field`, and `index` for a row of a batch."""


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Forbidden(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"


class LengthRequired(ApplicationError):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    code = "length_required"


class PayloadTooLarge(ApplicationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


def error_body(message: str, code: str, **details: Any) -> dict:
    return {"error": {"message": message, "code": code, **details}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.message, exc.code, **exc.details), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a real bug: let Django log it and answer 500

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if isinstance(exc, drf_exceptions.ValidationError):
        field, message = _first_validation_error(exc.detail)
        body = error_body(message, "invalid", **({"field": field} if field else {}))
    else:
        body = error_body(
            str(exc.detail), exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        )
    return Response(body, status=exc.status_code, headers=headers)


def _first_validation_error(detail: Any, prefix: str = "") -> tuple[str, str]:
    """Flatten a serializer's nested errors to the first (dotted field path, message)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # an item of a list field
                path = f"{prefix}[{key}]"
            else:
                path = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            return _first_validation_error(value, path)
    if isinstance(detail, list) and detail:
        for i, item in enumerate(detail):
            if item:
                nested = isinstance(item, (dict, list))
                return _first_validation_error(item, f"{prefix}[{i}]" if nested else prefix)
    return prefix, str(detail)
