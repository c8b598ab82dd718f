"""URLs of the test provider: DOT under /o/, a login form, the test user endpoint."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from tests.support.oidc_provider import app

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("login/", auth_views.LoginView.as_view(template_name="login.html"), name="login"),
    path("_test/users", app.test_users),
]
