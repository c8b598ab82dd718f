"""Health check and the landing page."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and monitoring."""
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Landing page: the dashboard once logged in, otherwise a pointer to the login."""
    if request.user.is_authenticated:
        try:
            return redirect("fleet:dashboard")
        except NoReverseMatch:
            pass
    return render(request, "core/home.html")
