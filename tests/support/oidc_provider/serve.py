"""A real OpenID Connect provider on loopback, built from django-oauth-toolkit (DOT).

Run as its own process (``python -m tests.support.oidc_provider.serve CONFIG.json``) by
:class:`tests.support.oidc_provider.OidcProvider`: a small Django project with DOT's
OIDC mode (RS256 ID tokens, discovery, JWKS, userinfo, PKCE required), a plain
login form, and a test-only ``/_test/users`` endpoint to create or change users.
It prints ``{"port": N, "issuer": "..."}`` on one stdout line once it serves.

Nothing here is mocked: Fleetroom's allauth talks HTTP to this server exactly as
it would to Keycloak or Entra ID.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

HERE = Path(__file__).resolve().parent


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("provider: " + (format % args) + "\n")


def _configure(cfg: dict[str, Any], issuer: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from django.conf import settings

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    data_dir = Path(cfg["data_dir"])
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-provider-" + "p" * 50,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="tests.support.oidc_provider.urls",
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes",
                        "django.contrib.sessions", "oauth2_provider"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.middleware.csrf.CsrfViewMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": str(data_dir / "provider.sqlite3")}},
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "DIRS": [str(HERE / "templates")], "APP_DIRS": True,
                    "OPTIONS": {"context_processors": [
                        "django.template.context_processors.request",
                        "django.template.context_processors.csrf"]}}],
        LOGIN_URL="/login/",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        OAUTH2_PROVIDER={
            "OIDC_ENABLED": True,
            "OIDC_RSA_PRIVATE_KEY": pem,
            "OIDC_ISS_ENDPOINT": issuer,
            "PKCE_REQUIRED": True,
            "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
            "ALLOWED_SCHEMES": ["http", "https"],
            "SCOPES": {"openid": "OpenID Connect", "profile": "Profile", "email": "E-mail"},
            "OAUTH2_VALIDATOR_CLASS": "tests.support.oidc_provider.app.ClaimsValidator",
        },
    )


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    server = make_server("127.0.0.1", 0, lambda env, start: [], server_class=_ThreadingWSGIServer,
                         handler_class=_QuietHandler)
    port = server.server_port
    issuer = f"http://127.0.0.1:{port}/o"
    _configure(cfg, issuer)

    import django
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from oauth2_provider.models import Application

    for client in cfg["clients"]:
        Application.objects.create(
            name=client["client_id"], client_id=client["client_id"],
            client_secret=client["client_secret"],
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(client["redirect_uris"]),
            algorithm=Application.RS256_ALGORITHM, skip_authorization=True)
    server.set_app(WSGIHandler())
    print(json.dumps({"port": port, "issuer": issuer}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
