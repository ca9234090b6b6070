"""JSON answers for requests that never reach a DRF view (unknown URLs, crashes)."""

from django.http import JsonResponse

from onlinescore.exceptions import error_body


def not_found(request, exception=None):
    return JsonResponse(error_body(f"No endpoint at {request.path}.", "not_found"), status=404)


def server_error(request):
    return JsonResponse(error_body("Internal server error.", "server_error"), status=500)
