"""Small helpers that every app's HTML views share.

Who is asking (:func:`signed_in_user`), what a form was sent (:func:`posted_data`),
paging (:func:`paginate`), a page showing a secret kept out of every cache
(:func:`no_store`), the project's one-form page (:func:`render_form_page`), a
service's refusal shown as a message (:func:`refusal_messages`,
:func:`flash_refusal`), and htmx: one URL answering the full page or a fragment
(:func:`render_fragment_or_page`, :func:`fragment_requested`, :func:`vary_on_htmx`)
and a ``login_required`` that an htmx swap cannot hide (:func:`login_required`).

Why one module: these were copied into each app's views, and the copies must
behave alike — the same ``Cache-Control`` on a secret, the same ``Vary`` on a
fragment URL, the same 403 for a request without a user.  Where the apps really do
differ (page sizes; the tenancy lists answering a fragment to any htmx request and
sending no ``Vary``), the difference is a parameter at the call site, not a copy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, QueryDict
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.translation import gettext as _
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from fleetroom.accounts.models import User

_T = TypeVar("_T")
_V = TypeVar("_V", bound=Callable[..., HttpResponseBase])

NO_STORE: Final = "no-store, no-cache, must-revalidate, private, max-age=0"
"""``Cache-Control`` of a response that shows a secret (a new token, code or link)."""

HTMX_VARY: Final = ("HX-Request", "HX-Target", "HX-History-Restore-Request")
"""The request headers that choose between a fragment and the full page."""

FORM_TEMPLATE: Final = "tenancy/form.html"
"""The project's generic one-form page (it posts back to the URL that rendered it)."""


class HtmxHttpRequest(HttpRequest):
    """An ``HttpRequest`` as django-htmx's middleware leaves it (for type checking)."""

    htmx: HtmxDetails


# --- who is asking, what was sent ----------------------------------------------------------


def login_required(view: _V) -> _V:
    """Django's ``login_required``, but an htmx request is told to load the login page
    as a whole page (``HX-Redirect``) instead of swapping it into a table."""

    @functools.wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            here = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(here).url)
        return redirect_to_login(request.get_full_path())

    return wrapper  # type: ignore[return-value]


def signed_in_user(request: HttpRequest) -> User:
    """The logged-in user, typed as ours.

    Every caller is behind a ``login_required``; an anonymous request reaching it
    anyway (a view that forgot the decorator) is refused with a 403 rather than
    served as nobody.  Inactive accounts never get here: the authentication
    backend does not load them, so they are anonymous.
    """
    user = request.user
    if not isinstance(user, User):  # pragma: no cover - login_required ran first
        raise PermissionDenied
    return user


def posted_data(request: HttpRequest) -> QueryDict | None:
    """The form data of a POST (even an empty one, which is a valid confirmation), else
    ``None`` — so a GET renders an unbound form and a POST a bound one."""
    return request.POST if request.method == "POST" else None


def paginate(request: HttpRequest, items: Sequence[_T] | QuerySet[Any, _T],
             per_page: int) -> Page[_T]:
    """The page named by ``?page=`` (the first for a missing or malformed number, the
    last for one past the end), ``per_page`` rows long."""
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def no_store(response: HttpResponse) -> HttpResponse:
    """Keep a page that shows a secret out of every cache and the browser's history store."""
    add_never_cache_headers(response)
    response["Cache-Control"] = NO_STORE
    return response


# --- forms and refusals --------------------------------------------------------------------


def render_form_page(request: HttpRequest, form: forms.Form, *, title: str, submit: str,
                     back: str, intro: str = "", danger: bool = False,
                     status: int = 200) -> HttpResponse:
    """The project's one-form page: ``form`` under ``title``, a ``submit`` button, a
    link ``back``; ``danger`` styles the button for an action that cannot be undone."""
    return render(request, FORM_TEMPLATE, {
        "form": form, "title": title, "submit": submit, "back": back, "intro": intro,
        "danger": danger}, status=status)


def refusal_messages(exc: ValidationError | PermissionDenied) -> list[str]:
    """The user-facing messages of a service refusal (a bare 403 gets a generic one)."""
    if isinstance(exc, ValidationError):
        return [str(m) for m in exc.messages]
    return [str(exc) or _("You do not have permission to do this.")]


def flash_refusal(request: HttpRequest, exc: ValidationError | PermissionDenied) -> None:
    """Show a service refusal as error messages on the next page (never an error page)."""
    for text in refusal_messages(exc):
        messages.error(request, text)


# --- htmx: one URL, a fragment or the full page --------------------------------------------


def is_htmx(request: HttpRequest) -> bool:
    """Any htmx request (``HX-Request: true``), history restores included."""
    return bool(getattr(request, "htmx", False))


def fragment_requested(request: HttpRequest, target: str) -> bool:
    """True for an htmx request that swaps ``target`` (not a history restore, which
    needs the full page)."""
    htmx = getattr(request, "htmx", None)
    if not htmx:
        return False
    return bool(htmx.target == target and not htmx.history_restore_request)


def vary_on_htmx(response: HttpResponse) -> HttpResponse:
    """Full page and fragment share a URL: caches must key on the htmx headers."""
    patch_vary_headers(response, HTMX_VARY)
    return response


def render_fragment_or_page(request: HttpRequest, context: dict[str, Any], *, page: str,
                            fragment: str, target: str | None,
                            vary: bool = True) -> HttpResponse:
    """Render ``fragment`` for an htmx swap, else the full ``page`` (same context).

    ``target``: the fragment is rendered for an htmx request that swaps the element
    with this id and is not a history restore.  ``None`` renders it for *any* htmx
    request, history restores included (what the tenancy lists have always done).
    ``vary`` adds :data:`HTMX_VARY` to ``Vary``; the tenancy lists pass ``False``,
    as they have never sent it.
    """
    wanted = is_htmx(request) if target is None else fragment_requested(request, target)
    response = render(request, fragment if wanted else page, context)
    return vary_on_htmx(response) if vary else response
