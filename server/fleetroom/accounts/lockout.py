"""Lockout after repeated failed logins, built on django-axes.

The rules (settings ``AXES_*`` point at the functions here):

* **What counts.**  Every failed password check (Django's ``user_login_failed``,
  which axes listens to) and every wrong second-factor code at login or
  re-authentication (:func:`record_failure`, called from :mod:`.receivers`).
* **Under which name.**  :func:`canonical_username`: the account's username
  whether the person typed the username or the e-mail address, so switching
  between the two does not double the attempts; a name that is no account is
  counted under what was typed, so it locks exactly like a real one and reveals
  nothing.
* **Which counters.**  The name together with the client address, and the name
  alone (``AXES_LOCKOUT_PARAMETERS``) — an attacker rotating addresses is
  stopped by the second.  Password spraying from one address across many names
  is throttled by allauth's per-address rate limit instead.
* **How long.**  :func:`cool_off_for`: ``lockout_cooloff_minutes`` × 2^(n−1) for the
  n-th lockout of that name within :data:`LOCKOUT_MEMORY` not lifted by an admin,
  capped at ``FLEETROOM_LOCKOUT_COOLOFF_MAX_HOURS`` (24) — an account is never locked
  for good.  Failures while locked are refused without being counted, so a
  lockout ends on time instead of being prolonged by each refused try.
* **What the client sees.**  Nothing different: a locked account gets the same
  page, status and message as a wrong password (:func:`lockout_response` returns
  the view's own failure response), and the refused check still computes one
  password hash so its timing matches (:class:`LockoutBackend`).

axes' stock handler cleans up *all* attempts older than the current request's
cool-off; with cool-offs that differ per name that would let one user's login
shorten another's lockout, so :class:`LockoutHandler` counts and cleans per name.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from fleetroom.accounts.models import LockoutEvent

if TYPE_CHECKING:
    from fleetroom.accounts.models import User

logger = logging.getLogger(__name__)

LOCKOUT_MEMORY = timedelta(days=7)
"""How long a lockout makes the next one longer.  A week keeps a persistent
attacker at the cap, while a user who locks themselves out now and then starts
again from the base cool-off."""

_NAMES_ATTR = "_fleetroom_login_names"


def base_cool_off() -> timedelta:
    """The first lockout's duration (``[security] lockout_cooloff_minutes``)."""
    return timedelta(minutes=settings.CONFIG.security.lockout_cooloff_minutes)


def max_cool_off() -> timedelta:
    """The longest any lockout lasts (``FLEETROOM_LOCKOUT_COOLOFF_MAX_HOURS``, 24)."""
    return timedelta(hours=getattr(settings, "FLEETROOM_LOCKOUT_COOLOFF_MAX_HOURS", 24))


def client_ip(request: HttpRequest) -> str | None:
    """The client address exactly as allauth's rate limits see it (same proxy rules)."""
    from allauth.account.adapter import get_adapter

    try:
        ip: str = get_adapter().get_client_ip(request)
    except PermissionDenied:
        return None
    return ip


def resolve_login_name(login: str, request: HttpRequest | None = None) -> str:
    """The canonical login name for what someone typed (see the module docstring)."""
    login = login.strip()
    cache: dict[str, str] | None = getattr(request, _NAMES_ATTR, None) if request else None
    if cache is not None and login in cache:
        return cache[login]
    user_model = get_user_model()
    match = (user_model.objects.filter(username__iexact=login).order_by("pk").first()
             or user_model.objects.filter(email__iexact=login).order_by("pk").first())
    # 255 is axes' column width; allauth's login field has no maximum length.
    name = match.get_username() if match is not None else login.casefold()[:255]
    if request is not None:
        if cache is None:
            cache = {}
            setattr(request, _NAMES_ATTR, cache)
        cache[login] = name
    return name


def canonical_username(request: HttpRequest | None,
                       credentials: dict[str, Any] | None = None) -> str | None:
    """``AXES_USERNAME_CALLABLE``: the name a login attempt is counted under."""
    raw: Any = None
    if credentials:
        raw = credentials.get("username") or credentials.get("email")
    if not raw and request is not None:
        data = getattr(request, "POST", None) or {}
        raw = data.get("login") or data.get("username")
    if not raw or not isinstance(raw, str):
        return None
    return resolve_login_name(raw, request)


def recent_lockouts(username: str, *, now: datetime) -> int:
    """Un-lifted lockouts of ``username`` within :data:`LOCKOUT_MEMORY`."""
    return LockoutEvent.objects.filter(username=username, lifted_at__isnull=True,
                                       locked_at__gte=now - LOCKOUT_MEMORY).count()


def cool_off_for(username: str | None, *, now: datetime | None = None,
                 lockouts: int | None = None) -> timedelta:
    """How long failures of ``username`` are remembered (and a lockout lasts)."""
    if username is None:
        return base_cool_off()
    now = now or timezone.now()
    n = recent_lockouts(username, now=now) if lockouts is None else lockouts
    exponent = min(max(0, n - 1), 20)  # 2**20 × minutes is far past any cap
    return min(base_cool_off() * (1 << exponent), max_cool_off())


def axes_cool_off(request: HttpRequest | None = None) -> timedelta:
    """``AXES_COOLOFF_TIME``: axes asks with the request only, so find the name in it."""
    if request is None:
        return base_cool_off()
    username = canonical_username(request, getattr(request, "axes_credentials", None))
    return cool_off_for(username, now=getattr(request, "axes_attempt_time", None))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: answer a locked-out attempt like any failed one.

    The view already rendered its ordinary failure (the login form with "wrong
    username or password", the code form with "incorrect code"); returning it
    unchanged means a lockout cannot be told apart from a wrong password.
    """
    if original_response is not None:
        return original_response
    return HttpResponseRedirect(reverse("account_login"))


class LockoutHandler(AxesDatabaseHandler):  # type: ignore[misc]
    """axes' database handler, with the cool-off window computed per login name."""

    def get_user_attempts(self, request: HttpRequest,
                          credentials: dict[str, Any] | None = None) -> list[QuerySet[Any]]:
        """Attempts of this name (and name+address) within the name's own cool-off."""
        attempts_list: list[QuerySet[Any]] = self.filter_user_attempts(request, credentials)
        at: datetime = getattr(request, "axes_attempt_time", None) or timezone.now()
        username = get_client_username(request, credentials)
        threshold = at - cool_off_for(username, now=at)
        return [attempts.filter(attempt_time__gte=threshold) for attempts in attempts_list]

    def clean_expired_user_attempts(self, request: HttpRequest | None = None,
                                    credentials: dict[str, Any] | None = None) -> int:
        """Forget this name's attempts past its cool-off, and anyone's past the cap."""
        now = timezone.now()
        count, _ = AccessAttempt.objects.filter(attempt_time__lte=now - max_cool_off()).delete()
        if request is not None:
            username = get_client_username(request, credentials)
            if username:
                at: datetime = getattr(request, "axes_attempt_time", None) or now
                mine, _ = AccessAttempt.objects.filter(
                    username=username,
                    attempt_time__lt=at - cool_off_for(username, now=at)).delete()
                count += mine
        return int(count)


class LockoutBackend(AxesStandaloneBackend):  # type: ignore[misc]
    """axes' lockout check as the first authentication backend.

    When it refuses a locked name it hashes the offered password once, as the
    real check would, so response times do not tell "locked" from "wrong".
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> None:
        """Refuse locked names (raises, which makes Django report a failed login)."""
        try:
            super().authenticate(request, username=username, password=password, **kwargs)
        except AxesBackendPermissionDenied:
            if password:
                get_user_model()().set_password(password)
            raise


def is_locked(request: HttpRequest, username: str) -> bool:
    """True when ``username`` may not attempt a login from this request right now."""
    return not AxesProxyHandler.is_allowed(request, {"username": username})


def record_failure(request: HttpRequest, user: User, *, stage: str) -> None:
    """Count a failed second-factor attempt against the user's login name, exactly like
    a wrong password (axes and the audit log listen to ``user_login_failed``)."""
    user_login_failed.send(sender=__name__, request=request,
                           credentials={"username": user.get_username(), "stage": stage})


def abandon_pending_login(request: HttpRequest) -> None:
    """Drop a half-finished login (password done, second factor pending), so a locked
    name has to start again from the password — which is then refused."""
    from allauth.account.internal.stagekit import clear_login

    clear_login(request)
