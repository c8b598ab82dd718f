"""Django settings, derived entirely from :mod:`fleetroom.config`.

No setting is read from the environment here: config.py parses and validates
everything once, so a wrong value stops start-up with a clear message instead of
surfacing as a strange error at the first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from django.utils.translation import gettext_lazy as _

from fleetroom import config as _config

CONFIG = _config.load()
DATA_DIR: Path = CONFIG.data_dir
BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = CONFIG.secret_key
DEBUG = CONFIG.debug
ALLOWED_HOSTS = CONFIG.allowed_hosts
FLEETROOM_BASE_URL = CONFIG.base_url
FLEETROOM_AGENTS_URL = CONFIG.agents_url or CONFIG.base_url

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "huey.contrib.djhuey",
    "django_htmx",
    "ninja",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.usersessions",
    "axes",
    "fleetroom.core",
    "fleetroom.tenancy",
    "fleetroom.accounts",
    "fleetroom.fleet",
    "fleetroom.api",
    "fleetroom.agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under `fleetroom serve`
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "fleetroom.accounts.middleware.AbsoluteSessionTimeoutMiddleware",
    "fleetroom.accounts.middleware.MfaRequiredMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "fleetroom.core.middleware.SecurityHeadersMiddleware",
    "axes.middleware.AxesMiddleware",  # innermost: turns a lockout into the normal failure page
]

AUTH_USER_MODEL = "accounts.User"
ROOT_URLCONF = "fleetroom.urls"
WSGI_APPLICATION = "fleetroom.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "fleetroom.core.context_processors.navigation",
                "fleetroom.core.context_processors.language_switch",
            ],
        },
    },
]


def _database(cfg: _config.Config) -> dict[str, Any]:
    if cfg.database.url:
        u = urlparse(cfg.database.url)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": (u.path or "/fleetroom").lstrip("/"),
            "USER": unquote(u.username or ""),
            "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "",
            "PORT": str(u.port or ""),
            "CONN_MAX_AGE": cfg.database.conn_max_age,
            "CONN_HEALTH_CHECKS": True,
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": cfg.data_dir / "fleetroom.sqlite3",
        "OPTIONS": {
            # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at
            # BEGIN so two writers queue on busy_timeout instead of failing mid-way.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            # synchronous=FULL: a commit is on disk before it returns.  With WAL and
            # NORMAL a power cut may lose the last commits — batches the agent was
            # already told were stored, and has deleted.  Measured on a drain
            # (bench.agent_transport): no difference in throughput beyond noise.
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=FULL;"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA busy_timeout=20000;"
            ),
        },
    }


DATABASES = {"default": _database(CONFIG)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _huey(cfg: _config.Config) -> dict[str, Any]:
    common: dict[str, Any] = {
        "name": "fleetroom",
        "immediate": cfg.worker.immediate,
        # Polling: Huey backs off to 10 s while idle, so the first upload after a
        # quiet spell (a critical alert!) waited up to 10 s before normalisation.
        # At most 1 s instead; an idle poll is one indexed read of the queue.
        "consumer": {"workers": cfg.worker.workers, "worker_type": "thread",
                     "initial_delay": 0.05, "max_delay": 1.0},
    }
    if cfg.worker.backend == "redis":
        return {**common, "huey_class": "huey.RedisHuey", "url": cfg.worker.redis_url}
    if cfg.worker.backend == "postgres":
        db = DATABASES["default"]
        return {**common, "huey_class": "huey.PostgresHuey",
                "database": db["NAME"], "user": db["USER"], "password": db["PASSWORD"],
                "host": db["HOST"], "port": db["PORT"] or 5432}
    return {**common, "huey_class": "huey.SqliteHuey",
            "filename": str(cfg.data_dir / "huey.sqlite3")}


HUEY = _huey(CONFIG)


def _caches(cfg: _config.Config) -> dict[str, Any]:
    """One cache shared by all processes (login rate limits must count across workers)."""
    if cfg.cache.backend == "redis":
        return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                            "LOCATION": cfg.cache.redis_url}}
    return {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                        "LOCATION": "fleetroom_cache", "OPTIONS": {"MAX_ENTRIES": 50000}}}


CACHES = _caches(CONFIG)

# --- Fleet history ([fleet]; read through fleetroom.fleet.conf) ----------------------
FLEETROOM_FLEET_RAW_RETENTION_DAYS = CONFIG.fleet.raw_retention_days
FLEETROOM_FLEET_NOT_REPORTING_HOURS = CONFIG.fleet.not_reporting_hours
FLEETROOM_FLEET_MAX_FUTURE_SKEW_SECONDS = CONFIG.fleet.max_future_skew_seconds

# --- REST API ([api]; read through fleetroom.api.conf) --------------------------------
FLEETROOM_API_TOKEN_DEFAULT_DAYS = CONFIG.api.token_default_days
FLEETROOM_API_TOKEN_MAX_DAYS = CONFIG.api.token_max_days
FLEETROOM_API_MAX_TOKENS_PER_USER = CONFIG.api.max_tokens_per_user
FLEETROOM_API_RATE = CONFIG.api.rate
FLEETROOM_API_TOKEN_ISSUE_RATE = CONFIG.api.token_issue_rate

# --- Agent traffic ([agents]; read through fleetroom.agents.conf) --------------------
FLEETROOM_AGENTS: _config.AgentsConfig = CONFIG.agents

# --- Mail ([mail]); without a host, files in the data directory -----------------------
DEFAULT_FROM_EMAIL = CONFIG.mail.from_address
SERVER_EMAIL = CONFIG.mail.from_address
EMAIL_TIMEOUT = CONFIG.mail.timeout_seconds
if CONFIG.mail.host:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = CONFIG.mail.host
    EMAIL_PORT = CONFIG.mail.port
    EMAIL_HOST_USER = CONFIG.mail.user or ""
    EMAIL_HOST_PASSWORD = CONFIG.mail.password or ""
    EMAIL_USE_TLS = CONFIG.mail.security == "starttls"
    EMAIL_USE_SSL = CONFIG.mail.security == "tls"
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = DATA_DIR / "mail"

AUTH_PASSWORD_VALIDATORS: list[dict[str, Any]] = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 15}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "fleetroom.accounts.validators.ContextWordValidator"},
    {"NAME": "fleetroom.accounts.validators.MaximumLengthValidator"},
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

# --- Accounts: login, MFA and lockout (why each value: fleetroom/accounts/*.py) ---------
AUTHENTICATION_BACKENDS = [
    "fleetroom.accounts.lockout.LockoutBackend",  # first: refuses locked-out names
    "allauth.account.auth_backends.AuthenticationBackend",  # username or e-mail
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_ADAPTER = "fleetroom.accounts.adapters.AccountAdapter"  # signup closed
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"  # addresses are set by administrators
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_EMAIL_UNKNOWN_ACCOUNTS = False  # a reset for an unknown address sends nothing
ACCOUNT_EMAIL_NOTIFICATIONS = True  # mail the user when password or MFA change
ACCOUNT_SESSION_REMEMBER = False  # browser-session cookie; the idle limit applies server-side
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if CONFIG.security.https else "http"
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip"}  # per-name limits are axes' (below)
MFA_ADAPTER = "fleetroom.accounts.adapters.MFAAdapter"  # secrets encrypted at rest
MFA_FORMS = {
    "authenticate": "fleetroom.accounts.adapters.LockoutAwareAuthenticateForm",
    "reauthenticate": "fleetroom.accounts.adapters.LockoutAwareReauthenticateForm",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_PASSKEY_LOGIN_ENABLED = True
MFA_TOTP_ISSUER = "Fleetroom"
MFA_RECOVERY_CODES_SHOW_ONCE = True
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = CONFIG.debug  # http://localhost while developing
FLEETROOM_MFA_REQUIRED_FOR_ALL = CONFIG.security.mfa_required_for_all
USERSESSIONS_TRACK_ACTIVITY = False
AXES_FAILURE_LIMIT = CONFIG.security.lockout_failures
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "username"]
AXES_COOLOFF_TIME = "fleetroom.accounts.lockout.axes_cool_off"  # base × 2^(n-1), capped
FLEETROOM_LOCKOUT_COOLOFF_MAX_HOURS = 24
AXES_HANDLER = "fleetroom.accounts.lockout.LockoutHandler"
AXES_USERNAME_CALLABLE = "fleetroom.accounts.lockout.canonical_username"
AXES_CLIENT_IP_CALLABLE = "fleetroom.accounts.lockout.client_ip"
AXES_LOCKOUT_CALLABLE = "fleetroom.accounts.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True  # "consecutive" failures, as NIST counts them
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a lockout ends on time
AXES_DISABLE_ACCESS_LOG = True  # logins are in the audit log; no second IP history
AXES_VERBOSE = False  # no start-up banner on every CLI command

# --- SSO: LDAP bind and OpenID Connect (fleetroom/accounts/sso) -----------------------
# FLEETROOM_SSO, AUTHENTICATION_BACKENDS (+ the LDAP backend when [sso.ldap] is set),
# AUTH_LDAP_* and SOCIALACCOUNT_*: all derived from [sso] by one function, which the
# tests call too.
from fleetroom.accounts.sso.conf import django_settings as _sso_settings  # noqa: E402

FLEETROOM_SSO: _config.SsoConfig = CONFIG.sso  # read at login time (accounts.sso.services)
globals().update(_sso_settings(CONFIG.sso, backends=AUTHENTICATION_BACKENDS))
ACCOUNT_FORMS: dict[str, str] = {
    **globals().get("ACCOUNT_FORMS", {}),
    "set_password": "fleetroom.accounts.sso.forms.SsoAwareSetPasswordForm",
    "reset_password_from_key": "fleetroom.accounts.sso.forms.SsoAwareResetPasswordKeyForm",
}
# --- end SSO ---------------------------------------------------------------------------

LANGUAGE_CODE = CONFIG.language
LANGUAGES = [("de", _("German")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = CONFIG.time_zone
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
# `fleetroom serve` collects static files into the data directory and WhiteNoise serves
# them with far-future caching (hashed names) and pre-compressed variants.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- HTTPS and headers -----------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = CONFIG.security.session_idle_minutes * 60
SESSION_SAVE_EVERY_REQUEST = True  # idle timeout: each request extends the session
FLEETROOM_SESSION_ABSOLUTE_SECONDS = CONFIG.security.session_absolute_hours * 3600
CSRF_TRUSTED_ORIGINS = CONFIG.security.csrf_trusted_origins
if CONFIG.security.https:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = CONFIG.security.hsts_seconds
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
if CONFIG.security.trusted_proxies:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Configured here so run_huey does not add a second handler (every line twice).
        "huey": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
