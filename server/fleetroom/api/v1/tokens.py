"""Issuing, listing and revoking one's own API tokens.

``POST /tokens`` is the one unauthenticated route: it takes a login, a password and
(for accounts with two-factor authentication) a code, and runs them through
:func:`fleetroom.accounts.services.authenticate_for_api_token` — the same lockout
after 5 failures and the same MFA rule as the web login.  It is rate-limited per
client address on top of that.  Listing and revoking need a token and only ever
touch the caller's own tokens (anyone else's is a 404).
"""

from __future__ import annotations

from typing import Annotated, Any

from django.http import Http404, HttpRequest
from django.utils.translation import gettext as _
from ninja import Path, Query, Router, Status
from pydantic import Field, StringConstraints

from fleetroom.accounts.services import ApiAuthenticationFailed, authenticate_for_api_token

from .. import conf, services
from ..errors import TokenIssueRefused
from ..models import ApiToken, TokenSource
from ..pagination import paginate
from ..schemas import ErrorOut, PageParams, TokenCreatedOut, TokenCreateIn, TokenOut, TokenPage
from ..throttling import RateLimit, by_address
from .common import ERRORS, acting_user

router = Router(tags=["tokens"])

KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{12}$"),
                  Field(description="The token's key id (the part after 'frt_').")]


def token_out(t: ApiToken) -> dict[str, Any]:
    """A token's public fields (never the secret or its hash)."""
    return {"id": t.pk, "key_id": t.key_id, "name": t.name, "created_via": t.created_via,
            "created_at": t.created_at, "expires_at": t.expires_at,
            "last_used_at": t.last_used_at, "state": t.state().value,
            "revoked_at": t.revoked_at, "revoked_reason": t.revoked_reason}


@router.post("/tokens", auth=None,
             throttle=[RateLimit("token_issue", conf.token_issue_rate, by_address)],
             response={201: TokenCreatedOut, 400: ErrorOut, 401: ErrorOut, 409: ErrorOut,
                       422: ErrorOut, 429: ErrorOut},
             operation_id="createToken", summary="Create an API token with your login")
def create_token(request: HttpRequest, body: TokenCreateIn) -> Status[TokenCreatedOut]:
    """Log in with your password (and a TOTP or recovery code when your account uses
    two-factor authentication) and receive a new token, shown this once.

    Wrong credentials answer 401 with ``code`` ``invalid_credentials`` — also for
    an unknown or locked account, which are not told apart.  After 5 failed
    attempts the account is locked for a while, exactly as at the web login.
    ``mfa_code_required`` asks for ``code``; ``mfa_setup_required`` and
    ``mfa_method_unsupported`` mean the token must be made in the web interface.
    """
    name = services.clean_name(body.name)
    days = services.clean_days(body.expires_in_days)
    try:
        user = authenticate_for_api_token(request, login=body.login, password=body.password,
                                          code=body.code or None)
    except ApiAuthenticationFailed as exc:
        services.record_issue_failure(request, login=body.login, code=exc.code)
        raise TokenIssueRefused(exc.code) from None
    issued = services.do_issue_token(user, name=name, days=days, created_via=TokenSource.API,
                                     request=request)
    return Status(201, TokenCreatedOut(**token_out(issued.token), token=issued.secret))


@router.get("/tokens", response={200: TokenPage, **ERRORS}, operation_id="listTokens",
            summary="Your API tokens")
def list_tokens(request: HttpRequest, page: Query[PageParams]) -> TokenPage:
    """Your tokens, newest first, including expired and revoked ones (never a secret)."""
    user = acting_user(request)
    qs = ApiToken.objects.filter(user_id=user.pk).order_by("-created_at", "-pk")
    total, rows = paginate(qs, page)
    return TokenPage(count=total, limit=page.limit, offset=page.offset,
                     items=[TokenOut(**token_out(t)) for t in rows])


@router.delete("/tokens/{key_id}", response={204: None, **ERRORS}, operation_id="revokeToken",
               summary="Revoke one of your API tokens")
def revoke_token(request: HttpRequest, key_id: Path[KeyId]) -> Status[None]:
    """Revoke the token with this key id (it may be the one making this request).

    Revoking a token that is already revoked or expired succeeds too.
    """
    user = acting_user(request)
    token = ApiToken.objects.filter(user_id=user.pk, key_id=key_id).first()
    if token is None:
        raise Http404(_("Not found."))
    services.do_revoke_token(token, acting_user=user, request=request)
    return Status(204, None)
