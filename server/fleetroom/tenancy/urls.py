"""Administration pages: sites, users and memberships, roles, access codes, profile.

Mounted at ``admin/`` (inside the language prefix; this is not Django's admin).
Every route is in the permissions matrix of ``server/tests/test_admin_matrix.py``,
which fails when a route here is missing from it.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from fleetroom.tenancy import views

app_name = "tenancy"

urlpatterns: list[URLPattern | URLResolver] = [
    path("sites/", views.site_list, name="site_list"),
    path("sites/<int:pk>/", views.tenant_detail, name="tenant_detail"),
    path("sites/<int:pk>/new/", views.tenant_create, name="tenant_create"),
    path("sites/<int:pk>/rename/", views.tenant_rename, name="tenant_rename"),
    path("sites/<int:pk>/move/", views.tenant_move, name="tenant_move"),
    path("sites/<int:pk>/deactivate/", views.tenant_deactivate, name="tenant_deactivate"),
    path("sites/<int:pk>/reactivate/", views.tenant_reactivate, name="tenant_reactivate"),
    path("users/", views.user_list, name="user_list"),
    path("users/new/", views.user_create, name="user_create"),
    path("users/<int:pk>/", views.user_detail, name="user_detail"),
    path("users/<int:pk>/grant/", views.membership_grant, name="membership_grant"),
    path("users/<int:pk>/unlock/", views.user_unlock, name="user_unlock"),
    path("users/<int:pk>/deactivate/", views.user_deactivate, name="user_deactivate"),
    path("users/<int:pk>/reactivate/", views.user_reactivate, name="user_reactivate"),
    path("users/<int:pk>/password-link/", views.user_password_link, name="user_password_link"),
    path("memberships/<int:pk>/", views.membership_change, name="membership_change"),
    path("memberships/<int:pk>/revoke/", views.membership_revoke, name="membership_revoke"),
    path("roles/", views.role_list, name="role_list"),
    path("roles/new/", views.role_create, name="role_create"),
    path("roles/<int:pk>/", views.role_edit, name="role_edit"),
    path("access-codes/", views.access_code_list, name="access_code_list"),
    path("access-codes/new/", views.access_code_create, name="access_code_create"),
    path("access-codes/<int:pk>/revoke/", views.access_code_revoke, name="access_code_revoke"),
    path("access-codes/redeem/", views.access_code_redeem, name="access_code_redeem"),
    path("profile/", views.profile, name="profile"),
]
