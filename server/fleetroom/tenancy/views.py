"""The administration pages: tenants and sites, users and memberships, custom roles,
access codes, the redeem form and the profile.

Rules every view here follows (and the tests in ``server/tests/test_admin_*.py`` check):

* Login required; every read of tenant data goes through the scoping choke point
  (:func:`~fleetroom.core.scoping.restrict` / ``.for_user``), with the permission the
  action needs — so an object outside the scope of *that action* is a 404, exactly
  like one that does not exist.  A list or "new" page for a permission the user holds
  nowhere is a 403: there is no object whose existence it could confirm.
* Every change is a POST (CSRF-checked by Django's middleware) that calls one service
  function; the service re-checks the permission and writes the audit event.  What a
  service refuses (escalation, duplicates, "you may not change this account") is shown
  on the page as a message, never as an error page.
* Secrets (a new access code, a set-password link) are rendered once, in the POST
  response, marked ``no-store``; they are never put into the session, a URL or a log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from allauth.mfa.models import Authenticator
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from fleetroom.accounts import services as account_services
from fleetroom.accounts.models import LockoutEvent, User
from fleetroom.accounts.sso.services import is_sso_managed
from fleetroom.core import audit
from fleetroom.core.scoping import (
    get_object_or_404_scoped,
    membership_permissions,
    restrict,
    scope,
)
from fleetroom.core.views_support import (
    flash_refusal,
    no_store,
    paginate,
    posted_data,
    refusal_messages,
    render_form_page,
    render_fragment_or_page,
    signed_in_user,
)
from fleetroom.tenancy import services
from fleetroom.tenancy.forms import (
    AccessCodeForm,
    DeactivateForm,
    MembershipChangeForm,
    MembershipGrantForm,
    RedeemForm,
    RevokeCodeForm,
    RoleForm,
    TenantMoveForm,
    TenantNameForm,
    UserCreateForm,
    membership_permission_labels,
    membership_role_label,
    path_labels,
    permission_labels,
)
from fleetroom.tenancy.models import (
    ALLOWED_PARENT,
    AccessCode,
    Membership,
    Role,
    Tenant,
    TenantKind,
)
from fleetroom.tenancy.permissions import Permission
from fleetroom.tenancy.selectors import live_memberships

P = Permission
PAGE_SIZE = 50
TREE_PAGE_SIZE = 200
MAX_INDENT = 8
"""Deeper nesting is drawn at this indentation (CSS classes ``indent-0`` … ``indent-8``)."""

KIND_PERMISSION: dict[str, Permission] = {
    TenantKind.OPERATOR: P.MANAGE_PLATFORM,
    TenantKind.DEALER: P.MANAGE_TENANTS,
    TenantKind.CUSTOMER: P.MANAGE_TENANTS,
    TenantKind.SITE: P.MANAGE_SITES,
    TenantKind.LOCATION: P.MANAGE_SITES,
}
"""The permission that manages a node of each kind (as the services require)."""

CHILD_KIND: dict[str, str] = {
    TenantKind.OPERATOR: TenantKind.DEALER,
    TenantKind.DEALER: TenantKind.CUSTOMER,
    TenantKind.CUSTOMER: TenantKind.SITE,
    TenantKind.SITE: TenantKind.LOCATION,
    TenantKind.LOCATION: TenantKind.LOCATION,
}
"""What can be created below a node of each kind (a location may nest in a location)."""

TREE_PERMISSIONS = (P.VIEW_FLEET, P.MANAGE_SITES, P.MANAGE_TENANTS)

NEW_CHILD_LABEL: dict[str, Any] = {
    TenantKind.DEALER: gettext_lazy("New dealer"),
    TenantKind.CUSTOMER: gettext_lazy("New customer"),
    TenantKind.SITE: gettext_lazy("New site"),
    TenantKind.LOCATION: gettext_lazy("New location"),
}
NEW_CHILD_TITLE: dict[str, Any] = {
    TenantKind.DEALER: gettext_lazy("New dealer below %(parent)s"),
    TenantKind.CUSTOMER: gettext_lazy("New customer of %(parent)s"),
    TenantKind.SITE: gettext_lazy("New site of %(parent)s"),
    TenantKind.LOCATION: gettext_lazy("New location in %(parent)s"),
}


# --- small helpers ----------------------------------------------------------------------------

def _require_somewhere(user: User, permission: Permission) -> None:
    """403 for a page about a permission the user holds nowhere (no object involved)."""
    if scope(user, permission).is_empty:
        raise PermissionDenied(_("You do not have permission to do this."))


def _form_error(form: forms.Form, exc: ValidationError | PermissionDenied,
                field_map: dict[str, str] | None = None) -> None:
    """Put a service refusal onto the form: on its field when the form has one."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        for raw_name, errs in exc.error_dict.items():
            name = (field_map or {}).get(raw_name, raw_name)
            form.add_error(name if name in form.fields else None,
                           [str(m) for e in errs for m in e.messages])
        return
    form.add_error(None, refusal_messages(exc))


def _covers(user: User, permission: Permission, tenant: Tenant) -> bool:
    """``permission`` held on ``tenant`` (also when the tenant is deactivated)."""
    return any(tenant.path.startswith(p) for p in scope(user, permission).prefixes)


def _sites_follow_tenant(form: forms.Form, url: str) -> None:
    """Progressive enhancement: picking a tenant reloads the site checkboxes for it.

    htmx GETs the form page with ``?tenant=<id>`` and swaps in only the sites
    field; without script the full list is shown and the service checks the pick.
    """
    form.fields["tenant"].widget.attrs.update({
        "hx-get": url, "hx-trigger": "change", "hx-include": "this",
        "hx-target": "#field-sites", "hx-select": "#field-sites", "hx-swap": "outerHTML",
    })


# --- tenants and sites ------------------------------------------------------------------------

def _tree_queryset(user: User) -> QuerySet[Tenant]:
    """Every node the user may see on the sites pages.

    Viewers see live nodes; managers also see the deactivated ones they could
    switch back on.
    """
    qs = restrict(Tenant.objects.all(), user, P.VIEW_FLEET)
    for perm in (P.MANAGE_SITES, P.MANAGE_TENANTS):
        qs = qs | restrict(Tenant.objects.all(), user, perm, include_inactive=True)
    return qs.distinct()


def _managed_tenant(user: User, pk: int, *, include_inactive: bool = False) -> Tenant:
    """The node ``pk`` if the user holds the permission that manages its kind, else 404."""
    for perm in (P.MANAGE_SITES, P.MANAGE_TENANTS, P.MANAGE_PLATFORM):
        kinds = [k for k, p in KIND_PERMISSION.items() if p == perm]
        node = restrict(Tenant.objects.filter(pk=pk, kind__in=kinds), user, perm,
                        include_inactive=include_inactive).first()
        if node is not None:
            return node
    raise Http404


@login_required
@require_http_methods(["GET", "HEAD"])
def site_list(request: HttpRequest) -> HttpResponse:
    """The tenant tree within the user's scope, or a flat search result."""
    user = signed_in_user(request)
    if all(scope(user, p).is_empty for p in TREE_PERMISSIONS):
        raise PermissionDenied(_("You do not have permission to do this."))
    nodes = list(_tree_queryset(user).order_by("path"))
    labels = path_labels(nodes)
    visible = {t.pk for t in nodes}
    query = request.GET.get("q", "").strip()
    if query:
        needle = query.casefold()
        nodes = [t for t in nodes if needle in t.name.casefold()]
    rows = [{"tenant": t, "label": labels[t.pk] if query else t.name,
             "indent": 0 if query else min(sum(1 for a in t.ancestor_ids if a in visible),
                                           MAX_INDENT)}
            for t in nodes]
    page = paginate(request, rows, TREE_PAGE_SIZE)
    return render_fragment_or_page(
        request, {"page": page, "q": query}, page="tenancy/site_list.html",
        fragment="tenancy/_site_rows.html", target="site-rows")


@login_required
@require_http_methods(["GET", "HEAD"])
def tenant_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One node: where it sits, what is below it, who has access, and what may be done."""
    user = signed_in_user(request)
    visible_qs = _tree_queryset(user)
    tenant = visible_qs.filter(pk=pk).first()
    if tenant is None:
        raise Http404
    ancestors = list(visible_qs.filter(pk__in=tenant.ancestor_ids).order_by("depth"))
    children = list(visible_qs.filter(parent=tenant).order_by("name"))
    perm = KIND_PERMISSION[tenant.kind]
    child_kind = CHILD_KIND[tenant.kind]
    members: list[Membership] = []
    if _covers(user, P.MANAGE_USERS, tenant):
        members = list(Membership.objects.for_user(user, P.MANAGE_USERS)
                       .filter(tenant=tenant).select_related("user", "custom_role")
                       .order_by("user__username"))
    can_manage = _covers(user, perm, tenant)
    context = {
        "tenant": tenant,
        "ancestors": ancestors,
        "children": children,
        "members": [{"m": m, "role": membership_role_label(m)} for m in members],
        "can_manage": can_manage,
        "can_move": can_manage and tenant.parent_id is not None,
        "can_deactivate": can_manage and tenant.parent_id is not None and tenant.is_active,
        "can_reactivate": can_manage and not tenant.is_active,
        "can_add_child": tenant.active_in_tree
        and _covers(user, KIND_PERMISSION[child_kind], tenant),
        "new_child_label": NEW_CHILD_LABEL[child_kind],
    }
    return render(request, "tenancy/tenant_detail.html", context)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def tenant_create(request: HttpRequest, pk: int) -> HttpResponse:
    """A new child of the node ``pk`` (dealer, customer, site or location by the parent's kind).

    Needs manage_tenants (dealers, customers) or manage_sites (sites, locations) on
    the parent; without it the parent is a 404.
    """
    user = signed_in_user(request)
    parent: Tenant | None = None
    for parent_kind, kind in CHILD_KIND.items():
        parent = restrict(Tenant.objects.filter(pk=pk, kind=parent_kind), user,
                          KIND_PERMISSION[kind]).first()
        if parent is not None:
            break
    if parent is None:
        raise Http404
    child_kind = CHILD_KIND[parent.kind]
    form = TenantNameForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            node = services.do_create_tenant(parent, child_kind, form.cleaned_data["name"],
                                             user, request=request)
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("“%(name)s” was created.") % {"name": node.name})
            return redirect("tenancy:tenant_detail", pk=node.pk)
    return render_form_page(request, form,
                            title=str(NEW_CHILD_TITLE[child_kind]) % {"parent": parent.name},
                            submit=_("Create"),
                            back=reverse("tenancy:tenant_detail", args=[parent.pk]),
                            status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def tenant_rename(request: HttpRequest, pk: int) -> HttpResponse:
    """Rename a node the user manages."""
    user = signed_in_user(request)
    tenant = _managed_tenant(user, pk)
    form = TenantNameForm(posted_data(request), initial={"name": tenant.name})
    if request.method == "POST" and form.is_valid():
        try:
            services.do_rename(tenant, form.cleaned_data["name"], user, request=request)
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("The name was changed."))
            return redirect("tenancy:tenant_detail", pk=tenant.pk)
    return render_form_page(request, form, title=_("Rename %(name)s") % {"name": tenant.name},
                            submit=_("Save"), back=reverse("tenancy:tenant_detail", args=[pk]),
                            status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def tenant_move(request: HttpRequest, pk: int) -> HttpResponse:
    """Hang a node (and its subtree) under another parent the user manages."""
    user = signed_in_user(request)
    tenant = _managed_tenant(user, pk)
    if tenant.parent_id is None:
        raise Http404
    perm = KIND_PERMISSION[tenant.kind]
    parent_kinds = [ALLOWED_PARENT[tenant.kind]]
    if tenant.kind == TenantKind.LOCATION:
        parent_kinds.append(TenantKind.LOCATION)
    parents = (restrict(Tenant.objects.filter(kind__in=parent_kinds), user, perm)
               .exclude(path__startswith=tenant.path).exclude(pk=tenant.parent_id)
               .order_by("path"))
    form = TenantMoveForm(posted_data(request), parents=parents)
    if request.method == "POST" and form.is_valid():
        try:
            services.do_move(tenant, form.cleaned_data["parent"], user, request=request)
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("“%(name)s” was moved.") % {"name": tenant.name})
            return redirect("tenancy:tenant_detail", pk=tenant.pk)
    return render_form_page(request, form, title=_("Move %(name)s") % {"name": tenant.name},
                            intro=_("Everything below it moves along. Access granted on its "
                                    "old parent no longer covers it."),
                            submit=_("Move"), back=reverse("tenancy:tenant_detail", args=[pk]),
                            status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def tenant_deactivate(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a node and its subtree off (confirmation page on GET)."""
    user = signed_in_user(request)
    tenant = _managed_tenant(user, pk)
    form = DeactivateForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.do_deactivate(tenant, user, reason=form.cleaned_data["reason"],
                                   request=request)
        except (ValidationError, PermissionDenied) as exc:
            flash_refusal(request, exc)
        else:
            messages.success(request, _("“%(name)s” was deactivated.") % {"name": tenant.name})
        return redirect("tenancy:tenant_detail", pk=tenant.pk)
    return render_form_page(request, form, title=_("Deactivate %(name)s") % {"name": tenant.name},
                            intro=_("It and everything below it disappear for everyone. Nothing "
                                    "is deleted; it can be reactivated."),
                            submit=_("Deactivate"), danger=True,
                            back=reverse("tenancy:tenant_detail", args=[pk]))


@login_required
@require_POST
def tenant_reactivate(request: HttpRequest, pk: int) -> HttpResponse:
    """Switch a deactivated node back on (the service checks the parent)."""
    user = signed_in_user(request)
    tenant = _managed_tenant(user, pk, include_inactive=True)
    try:
        services.do_reactivate(tenant, user, request=request)
    except (ValidationError, PermissionDenied) as exc:
        flash_refusal(request, exc)
    else:
        messages.success(request, _("“%(name)s” was reactivated.") % {"name": tenant.name})
    return redirect("tenancy:tenant_detail", pk=tenant.pk)


# --- users and memberships --------------------------------------------------------------------

def _scoped_memberships(user: User) -> QuerySet[Membership]:
    """Memberships the user may manage (manage_users on their tenant)."""
    return Membership.objects.for_user(user, P.MANAGE_USERS)


def _scoped_user(user: User, pk: int) -> User:
    """A person holding at least one membership the user may manage, else 404."""
    target = User.objects.filter(
        pk=pk, pk__in=_scoped_memberships(user).values("user_id")).first()
    if target is None:
        raise Http404
    return target


def _login_locks(usernames: Iterable[str]) -> set[str]:
    now = timezone.now()
    return set(LockoutEvent.objects.filter(username__in=list(usernames), lifted_at__isnull=True,
                                           locked_until__gt=now)
               .values_list("username", flat=True))


def _mfa_users(ids: Iterable[int]) -> set[int]:
    return set(Authenticator.objects.filter(
        user_id__in=list(ids),
        type__in=[Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN])
        .values_list("user_id", flat=True))


def _membership_rows(memberships: Iterable[Membership]) -> list[dict[str, Any]]:
    now = timezone.now()
    return [{"m": m, "role": membership_role_label(m),
             "permissions": membership_permission_labels(m),
             "sites": list(m.sites.all()) if m.site_restricted else [],
             "expired": m.expires_at is not None and m.expires_at <= now}
            for m in memberships]


@login_required
@require_http_methods(["GET", "HEAD"])
def user_list(request: HttpRequest) -> HttpResponse:
    """People with memberships the user manages, with only those memberships shown."""
    user = signed_in_user(request)
    _require_somewhere(user, P.MANAGE_USERS)
    scoped = _scoped_memberships(user)
    people = User.objects.filter(pk__in=scoped.values("user_id")).order_by("username")
    query = request.GET.get("q", "").strip()
    if query:
        people = people.filter(Q(username__icontains=query) | Q(email__icontains=query)
                               | Q(first_name__icontains=query)
                               | Q(last_name__icontains=query))
    people = people.prefetch_related(Prefetch(
        "memberships", to_attr="scoped_memberships",
        queryset=scoped.select_related("tenant", "custom_role").order_by("tenant__path")))
    page = paginate(request, people, PAGE_SIZE)
    members: list[User] = list(page.object_list)
    locked = _login_locks(u.username for u in members)
    mfa = _mfa_users(u.pk for u in members)
    rows = [{"u": u, "locked": u.username in locked, "mfa": u.pk in mfa,
             "memberships": [{"m": m, "role": membership_role_label(m)}
                             for m in getattr(u, "scoped_memberships", [])]}
            for u in members]
    return render_fragment_or_page(
        request, {"page": page, "rows": rows, "q": query}, page="tenancy/user_list.html",
        fragment="tenancy/_user_rows.html", target="user-rows")


def _base_url() -> str:
    return str(getattr(settings, "FLEETROOM_BASE_URL", "")).rstrip("/")


def _link_context(link_path: str) -> dict[str, Any]:
    hours = int(getattr(settings, "PASSWORD_RESET_TIMEOUT", 259200)) // 3600
    return {"link": f"{_base_url()}{link_path}", "valid_days": max(1, hours // 24)}


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def user_create(request: HttpRequest) -> HttpResponse:
    """A new account with its first membership; shows the set-password link once."""
    user = signed_in_user(request)
    _require_somewhere(user, P.MANAGE_USERS)
    form = UserCreateForm(posted_data(request), user=user,
                          initial={"tenant": request.GET.get("tenant")})
    _sites_follow_tenant(form, reverse("tenancy:user_create"))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            created, _m = services.do_create_user(
                username=data["username"], email=data["email"],
                display_name=data["display_name"], tenant=data["tenant"], acting_user=user,
                sites=list(data["sites"]) or None, expires_at=data["expires_at"],
                request=request, **form.role_source(data["role"]))
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc, {"first_name": "display_name"})
        else:
            try:
                link = services.do_issue_password_link(created, acting_user=user,
                                                       request=request)
            except (ValidationError, PermissionDenied):
                link = ""
            context = {"target": created, **(_link_context(link) if link else {}),
                       "created": True}
            return no_store(render(request, "tenancy/password_link.html", context))
    return render(request, "tenancy/user_create.html", {"form": form},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD"])
def user_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One person: the memberships the user manages, account state, and actions."""
    user = signed_in_user(request)
    target = _scoped_user(user, pk)
    memberships = (_scoped_memberships(user).filter(user=target)
                   .select_related("tenant", "custom_role__tenant", "via_access_code")
                   .prefetch_related("sites").order_by("tenant__path"))
    login_lock = (LockoutEvent.objects.filter(username=target.username, lifted_at__isnull=True,
                                              locked_until__gt=timezone.now())
                  .order_by("-locked_until").first())
    code_locked = bool(services.access_code_lockout_keys(target))
    grant_form = MembershipGrantForm(user=user)
    _sites_follow_tenant(grant_form, reverse("tenancy:membership_grant", args=[target.pk]))
    context = {
        "target": target,
        "memberships": _membership_rows(memberships),
        "login_lock": login_lock,
        "code_locked": code_locked,
        "mfa": bool(_mfa_users([target.pk])),
        "has_password": target.has_usable_password(),
        "sso": is_sso_managed(target),
        "is_self": target.pk == user.pk,
        "grant_form": grant_form,
    }
    return render(request, "tenancy/user_detail.html", context)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def membership_grant(request: HttpRequest, pk: int) -> HttpResponse:
    """Give a person in scope another membership (never more than the admin holds)."""
    user = signed_in_user(request)
    target = _scoped_user(user, pk)
    form = MembershipGrantForm(posted_data(request), user=user,
                               initial={"tenant": request.GET.get("tenant")})
    _sites_follow_tenant(form, reverse("tenancy:membership_grant", args=[target.pk]))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.do_grant_membership(
                target, data["tenant"], acting_user=user, sites=list(data["sites"]) or None,
                expires_at=data["expires_at"], request=request,
                **form.role_source(data["role"]))
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("Access was granted."))
            return redirect("tenancy:user_detail", pk=target.pk)
    return render_form_page(request, form,
                            title=_("Grant access to %(name)s") % {"name": target.get_username()},
                            submit=_("Grant"), back=reverse("tenancy:user_detail", args=[pk]),
                            status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def membership_change(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a membership's role, sites or end (the service refuses escalation)."""
    user = signed_in_user(request)
    membership = get_object_or_404_scoped(
        Membership.objects.select_related("tenant", "user", "custom_role"), user,
        P.MANAGE_USERS, pk=pk)
    form = MembershipChangeForm(posted_data(request), user=user, membership=membership)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.do_change_membership(
                membership, acting_user=user, sites=list(data["sites"]) or None,
                expires_at=data["expires_at"], request=request,
                **form.role_source(data["role"] or ""))
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("The access was changed."))
            return redirect("tenancy:user_detail", pk=membership.user_id)
    return render_form_page(
        request, form,
        title=_("Access of %(name)s to %(tenant)s") % {"name": membership.user.get_username(),
                                                        "tenant": membership.tenant.name},
        intro=_("Current role: %(role)s") % {"role": membership_role_label(membership)},
        submit=_("Save"), back=reverse("tenancy:user_detail", args=[membership.user_id]),
        status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def membership_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """End a membership (confirmation page on GET)."""
    user = signed_in_user(request)
    membership = get_object_or_404_scoped(
        Membership.objects.select_related("tenant", "user"), user, P.MANAGE_USERS, pk=pk)
    back = reverse("tenancy:user_detail", args=[membership.user_id])
    form = forms.Form(posted_data(request))
    if request.method == "POST":
        try:
            services.do_revoke_membership(membership, acting_user=user, request=request)
        except (ValidationError, PermissionDenied) as exc:
            flash_refusal(request, exc)
            return redirect(back)
        messages.success(request, _("The access was ended."))
        if Membership.objects.for_user(user, P.MANAGE_USERS).filter(
                user_id=membership.user_id).exists():
            return redirect(back)
        return redirect("tenancy:user_list")
    return render_form_page(
        request, form,
        title=_("End the access of %(name)s to %(tenant)s") % {
            "name": membership.user.get_username(), "tenant": membership.tenant.name},
        submit=_("End access"), danger=True, back=back)


def _account_action(request: HttpRequest, pk: int,
                    action: Callable[[User, User], None], success: str) -> HttpResponse:
    user = signed_in_user(request)
    target = _scoped_user(user, pk)
    try:
        action(target, user)
    except (ValidationError, PermissionDenied) as exc:
        flash_refusal(request, exc)
    else:
        messages.success(request, success)
    return redirect("tenancy:user_detail", pk=target.pk)


@login_required
@require_POST
def user_unlock(request: HttpRequest, pk: int) -> HttpResponse:
    """Lift a sign-in lockout and an access-code lockout of a person in scope."""
    def unlock(target: User, actor: User) -> None:
        account_services.do_unlock(target, acting_user=actor, request=request)
        services.do_lift_access_code_lockout(target, acting_user=actor, request=request)
    return _account_action(request, pk, unlock, _("The account was unlocked."))


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def user_deactivate(request: HttpRequest, pk: int) -> HttpResponse:
    """Deactivate an account: no sign-in, sessions and tokens end (confirmation on GET)."""
    user = signed_in_user(request)
    target = _scoped_user(user, pk)
    form = DeactivateForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        if target.pk == user.pk:
            messages.error(request, _("You cannot deactivate your own account."))
            return redirect("tenancy:user_detail", pk=target.pk)
        reason = form.cleaned_data["reason"] or "admin"

        def deactivate(t: User, actor: User) -> None:
            account_services.do_deactivate_user(t, reason=reason, acting_user=actor,
                                                request=request)
        return _account_action(request, pk, deactivate, _("The account was deactivated."))
    return render_form_page(
        request, form, title=_("Deactivate %(name)s") % {"name": target.get_username()},
        intro=_("The person can no longer sign in; their sessions and API tokens end. "
                "Their access is kept and returns on reactivation."),
        submit=_("Deactivate"), danger=True,
        back=reverse("tenancy:user_detail", args=[pk]))


@login_required
@require_POST
def user_reactivate(request: HttpRequest, pk: int) -> HttpResponse:
    """Re-enable a deactivated account."""
    def reactivate(target: User, actor: User) -> None:
        account_services.do_reactivate_user(target, acting_user=actor, request=request)
    return _account_action(request, pk, reactivate, _("The account was reactivated."))


@login_required
@require_POST
def user_password_link(request: HttpRequest, pk: int) -> HttpResponse:
    """Issue a new one-time set-password link and show it once."""
    user = signed_in_user(request)
    target = _scoped_user(user, pk)
    try:
        link = services.do_issue_password_link(target, acting_user=user, request=request)
    except (ValidationError, PermissionDenied) as exc:
        flash_refusal(request, exc)
        return redirect("tenancy:user_detail", pk=target.pk)
    return no_store(render(request, "tenancy/password_link.html",
                           {"target": target, "created": False, **_link_context(link)}))


# --- custom roles -----------------------------------------------------------------------------

@login_required
@require_http_methods(["GET", "HEAD"])
def role_list(request: HttpRequest) -> HttpResponse:
    """Custom roles on tenants where the user manages users."""
    user = signed_in_user(request)
    _require_somewhere(user, P.MANAGE_USERS)
    roles = (Role.objects.for_user(user, P.MANAGE_USERS).select_related("tenant")
             .order_by("tenant__path", "name"))
    rows = [{"r": r, "permissions": permission_labels(r.permissions)} for r in roles]
    return render(request, "tenancy/role_list.html", {"rows": rows})


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def role_create(request: HttpRequest) -> HttpResponse:
    """A new custom role, with only permissions the user holds."""
    user = signed_in_user(request)
    _require_somewhere(user, P.MANAGE_USERS)
    form = RoleForm(posted_data(request), user=user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.do_create_role(data["tenant"], data["name"], data["permissions"],
                                    acting_user=user, request=request)
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("The role was created."))
            return redirect("tenancy:role_list")
    return render_form_page(request, form, title=_("New role"), submit=_("Create"),
                            back=reverse("tenancy:role_list"), status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def role_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Rename a custom role or change its permissions (affects everyone holding it)."""
    user = signed_in_user(request)
    role = get_object_or_404_scoped(Role.objects.select_related("tenant"), user,
                                    P.MANAGE_USERS, pk=pk)
    form = RoleForm(posted_data(request), user=user, role=role)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.do_change_role(role, acting_user=user, name=data["name"],
                                    permissions=data["permissions"], request=request)
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            messages.success(request, _("The role was changed."))
            return redirect("tenancy:role_list")
    return render_form_page(request, form, title=_("Role %(name)s") % {"name": role.name},
                            intro=_("Changes apply at once to everyone who has this role."),
                            submit=_("Save"), back=reverse("tenancy:role_list"),
                            status=400 if form.errors else 200)


# --- access codes -----------------------------------------------------------------------------

def _code_status(code: AccessCode) -> tuple[str, str]:
    """(css class, label) of a code's state."""
    if code.revoked_at is not None:
        return "error", _("Revoked")
    if code.expires_at <= timezone.now():
        return "not_reporting", _("Expired")
    if code.use_count >= code.max_uses:
        return "not_reporting", _("Used up")
    return "ok", _("Active")


@login_required
@require_http_methods(["GET", "HEAD"])
def access_code_list(request: HttpRequest) -> HttpResponse:
    """Codes on tenants where the user manages access codes (never the code itself)."""
    user = signed_in_user(request)
    _require_somewhere(user, P.MANAGE_ACCESS_CODES)
    codes = (AccessCode.objects.for_user(user, P.MANAGE_ACCESS_CODES)
             .select_related("tenant", "created_by").prefetch_related("sites")
             .order_by("-created_at", "-pk"))
    page = paginate(request, codes, PAGE_SIZE)
    rows = []
    for c in page.object_list:
        css, label = _code_status(c)
        rows.append({"c": c, "status_class": css, "status": label,
                     "permissions": permission_labels(c.permissions),
                     "sites": list(c.sites.all()) if c.site_restricted else [],
                     "can_revoke": c.revoked_at is None})
    return render(request, "tenancy/access_code_list.html", {"page": page, "rows": rows})


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def access_code_create(request: HttpRequest) -> HttpResponse:
    """A new code; the response to the POST is the only place the code is ever shown."""
    user = signed_in_user(request)
    _require_somewhere(user, P.MANAGE_ACCESS_CODES)
    form = AccessCodeForm(posted_data(request), user=user,
                          initial={"tenant": request.GET.get("tenant")})
    _sites_follow_tenant(form, reverse("tenancy:access_code_create"))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            code, text = services.do_create_access_code(
                user, data["tenant"], data["permissions"], list(data["sites"]) or None,
                data["expires_at"], data["max_uses"], label=data["label"],
                membership_expires_at=data["membership_expires_at"], request=request)
        except (ValidationError, PermissionDenied) as exc:
            _form_error(form, exc)
        else:
            return no_store(render(request, "tenancy/access_code_created.html", {
                "code": code, "text": text, "permissions": permission_labels(code.permissions),
                "sites": list(code.sites.all())}))
    return render(request, "tenancy/access_code_create.html", {"form": form},
                  status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def access_code_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop a code working; optionally end the access it granted (confirmation on GET)."""
    user = signed_in_user(request)
    code = get_object_or_404_scoped(AccessCode.objects.select_related("tenant"), user,
                                    P.MANAGE_ACCESS_CODES, pk=pk)
    form = RevokeCodeForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.do_revoke_access_code(
                code, acting_user=user, request=request,
                revoke_memberships=form.cleaned_data["revoke_memberships"])
        except (ValidationError, PermissionDenied) as exc:
            flash_refusal(request, exc)
        else:
            messages.success(request, _("The code was revoked."))
        return redirect("tenancy:access_code_list")
    label = code.label or code.lookup_id
    return render_form_page(request, form, title=_("Revoke code %(label)s") % {"label": label},
                            intro=_("Nobody can redeem it any more."), submit=_("Revoke"),
                            danger=True, back=reverse("tenancy:access_code_list"))


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def access_code_redeem(request: HttpRequest) -> HttpResponse:
    """Any signed-in person turns a code into access.  One message for every bad code."""
    user = signed_in_user(request)
    form = RedeemForm(posted_data(request))
    if request.method == "POST" and form.is_valid():
        try:
            membership = services.do_redeem_access_code(user, form.cleaned_data["code"],
                                                        audit.client_ip(request))
        except ValidationError as exc:
            form.add_error("code", [str(m) for m in exc.messages])
        else:
            messages.success(request, _("You now have access to %(tenant)s.")
                             % {"tenant": membership.tenant.name})
            return redirect("tenancy:profile")
    return render(request, "tenancy/redeem.html", {"form": form},
                  status=400 if form.errors else 200)


# --- profile ----------------------------------------------------------------------------------

@login_required
@require_http_methods(["GET", "HEAD"])
def profile(request: HttpRequest) -> HttpResponse:
    """The user's own account: memberships and what they allow, language, security links."""
    user = signed_in_user(request)
    memberships = list(live_memberships(user)
                       .select_related("custom_role__tenant", "via_access_code")
                       .prefetch_related("sites"))
    rows = _membership_rows(memberships)
    for row in rows:
        row["effective"] = bool(membership_permissions(row["m"]))
    context = {
        "rows": rows,
        "mfa": bool(_mfa_users([user.pk])),
        "has_password": user.has_usable_password(),
    }
    return render(request, "tenancy/profile.html", context)

