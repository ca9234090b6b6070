"""JSON answers for requests that never reach a DRF view (unknown URLs, crashes)."""

from django.http import JsonResponse

from onlinescore.exceptions import error_body


def bad_request(request, exception=None):
    return JsonResponse(error_body("Bad request.", "bad_request"), status=400)


def permission_denied(request, exception=None):
    return JsonResponse(error_body("Permission denied.", "permission_denied"), status=403)


def not_found(request, exception=None):
    return JsonResponse(error_body(f"No endpoint at {request.path}.", "not_found"), status=404)


def server_error(request):
    return JsonResponse(error_body("Internal server error.", "server_error"), status=500)
