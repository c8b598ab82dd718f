"""Web views of the API app: the token page, and JSON answers at the API's edges.

The token page is where people who sign in with a passkey or SSO (and so cannot
use ``POST /api/v1/tokens``) get a token.  Showing the new token is the one place
a secret is ever rendered, so that answer is never cached and the token is not
put in the session to survive a redirect: it is shown in the response to the
POST that created it, and then it is gone.  Creating a token needs a recent
login (allauth's re-authentication, as for changing MFA settings): a token
outlives the session, so a borrowed unlocked browser must not be enough to mint
one.
"""

from __future__ import annotations

from collections.abc import Callable

from allauth.account.decorators import reauthentication_required
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from fleetroom.core.views_support import signed_in_user

from . import conf, services
from .errors import JSON_CONTENT_TYPE, error_response
from .forms import TokenCreateForm
from .models import ApiToken, TokenSource

_View = Callable[..., HttpResponse]


def _reauthenticate_to_post(view: _View) -> _View:
    """allauth's ``reauthentication_required`` for POST only (listing needs no fresh login)."""
    wrapped: _View = reauthentication_required(view, allow_get=True)
    return wrapped


@require_GET
def api_root(request: HttpRequest) -> JsonResponse:
    """``/api/``: where the versions and the documentation are."""
    return JsonResponse({
        "versions": {"v1": request.build_absolute_uri("/api/v1/")},
        "docs": request.build_absolute_uri(reverse("api:openapi-view")),
        "openapi": request.build_absolute_uri(reverse("api:openapi-json")),
    }, content_type=JSON_CONTENT_TYPE)


def not_found(request: HttpRequest) -> HttpResponse:
    """Any other path below ``/api/``: a JSON 404 in the API's error shape."""
    return error_response(404, _("Not found."), "not_found")


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
@_reauthenticate_to_post
def token_list(request: HttpRequest) -> HttpResponse:
    """List one's own tokens; create one (the new token is shown on this answer only)."""
    user = signed_in_user(request)
    form = TokenCreateForm(request.POST or None)
    created: services.IssuedToken | None = None
    if request.method == "POST" and form.is_valid():
        try:
            created = services.do_issue_token(
                user, name=form.cleaned_data["name"], days=form.cleaned_data["days"],
                created_via=TokenSource.WEB, request=request)
        except services.TokenRequestInvalid as exc:
            form.add_error(None, str(exc.message))
        else:
            form = TokenCreateForm()
    tokens = list(ApiToken.objects.filter(user_id=user.pk).order_by("-created_at", "-pk"))
    return render(request, "api/tokens.html", {
        "form": form,
        "created": created,
        "tokens": tokens,
        "max_tokens": conf.max_tokens_per_user(),
        "docs_url": reverse("api:openapi-view"),
    })


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of one's own tokens (anyone else's is a 404)."""
    user = signed_in_user(request)
    token = ApiToken.objects.filter(user_id=user.pk, pk=token_id).first()
    if token is None:
        raise Http404(_("Not found."))
    if services.do_revoke_token(token, acting_user=user, request=request):
        messages.success(request, _("The token “%(name)s” has been revoked.")
                         % {"name": token.name})
    else:
        messages.info(request, _("The token “%(name)s” was already revoked.")
                      % {"name": token.name})
    return redirect("api_token_list")
