"""Answers for requests that never reach a view's own error handling (unknown URLs, refusals,
crashes): JSON for API clients, a page for browsers."""

from django.http import JsonResponse
from django.shortcuts import render

from onlinescore.exceptions import error_body


def _answer(request, status: int, message: str, code: str):
    # Browsers ask for HTML by name; SDKs and scripts send */* or application/json.
    if "text/html" in request.headers.get("Accept", ""):
        return render(request, "error.html", {"status": status, "message": message}, status=status)
    return JsonResponse(error_body(message, code), status=status)


def bad_request(request, exception=None):
    return _answer(request, 400, "Bad request.", "bad_request")


def permission_denied(request, exception=None):
    message = str(exception) if exception and str(exception) else "Permission denied."
    return _answer(request, 403, message, "permission_denied")


def not_found(request, exception=None):
    return _answer(request, 404, f"Nothing at {request.path}.", "not_found")


def server_error(request):
    # Plain JSON for everyone: rendering a page could fail again the same way.
    return JsonResponse(error_body("Internal server error.", "server_error"), status=500)
