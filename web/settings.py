"""Django settings, from the environment (12-factor), read by messaging/runtime/config.py like the rest of the
stack's configuration: Django's own variables are its ``WebSettings``; EMAIL_DOMAIN, DATABASE_URL and the sandbox
decision come from its ``Config``.

DATABASE_URL selects the database. Without it: an embedded SQLite file (data/spacebeaver.sqlite3) in WAL
mode with a busy timeout and IMMEDIATE transactions, because several Ray worker processes write at once.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from messaging.runtime.config import Config, WebSettings, comma_list
from messaging.sandbox.stack import sandboxed

_web = WebSettings.from_env()  # lower-case: not a Django setting (the secret key is in it)
BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(_web.data_dir or BASE_DIR / "data")


def _sandboxed() -> bool:
    """The all-fakes sandbox (SANDBOX=1, or auto without any credential): the same decision as runbackend's. A
    configuration runbackend refuses counts as production here (runbackend names what is missing)."""
    try:
        return sandboxed(Config.from_env())
    except ValueError:
        return False


DEBUG = _web.django_debug
SANDBOX = _sandboxed()
# Production: neither the sandbox nor DJANGO_DEBUG. Then the built-in key is refused, and cookies, HSTS and the
# redirect to HTTPS are on (`manage.py check --deploy` is clean); TLS ends at the Ingress, which says so in
# X-Forwarded-Proto.
PRODUCTION = not (DEBUG or SANDBOX)
BUILTIN_SECRET_KEY = "insecure-dev-key-set-DJANGO_SECRET_KEY-in-production"
SECRET_KEY = _web.django_secret_key or BUILTIN_SECRET_KEY
if PRODUCTION and SECRET_KEY == BUILTIN_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set: outside the sandbox (SANDBOX) and without DJANGO_DEBUG the built-in "
        "development key is refused; set DJANGO_SECRET_KEY to a long random string"
    )
ALLOWED_HOSTS = comma_list(_web.django_allowed_hosts)
CSRF_TRUSTED_ORIGINS = comma_list(_web.django_csrf_trusted_origins)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "web.accounts",
    "web.delivery",
    "web.portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # the Ingress sets it (and strips a client's)
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # plain-HTTP health checks inside the cluster
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

ROOT_URLCONF = "web.urls"
WSGI_APPLICATION = "web.wsgi.application"
ASGI_APPLICATION = "web.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_config(url: str | None) -> dict:
    """The default database from DATABASE_URL; SQLite in WAL mode when unset."""
    if url:
        config = dj_database_url.parse(url)
    else:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        config = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA_DIR / "spacebeaver.sqlite3")}
    # Actors are long-lived: keep connections, but check them before reuse.
    config["CONN_MAX_AGE"] = 300
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["ENGINE"] = "web.db.sqlite3"  # Django's, with the writers of a process taking turns
        options = config.setdefault("OPTIONS", {})
        options.setdefault("timeout", 30)
        options.setdefault("transaction_mode", "IMMEDIATE")
        # synchronous=FULL: a commit is on disk before we ack (SMTP 250, Twilio 200, Hive rxack), also across
        # a power cut; intake writes in batches, so the fsync per commit is shared by many messages.
        options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        # Tests: a file (not :memory:), so that Ray worker processes see the same test database.
        if config["NAME"] != ":memory:":
            config.setdefault("TEST", {"NAME": str(Path(config["NAME"]).with_suffix(".test.sqlite3"))})
    return config


DATABASES = {"default": database_config(Config.setting("database_url"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"  # collectstatic target; whitenoise also serves straight from the apps
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

EMAIL_DOMAIN = Config.setting("email_domain")
# The portal's mail (address verification, password reset) goes out through our outbound relay (web/portal/mail.py).
EMAIL_BACKEND = "web.portal.mail.RelayEmailBackend"
DEFAULT_FROM_EMAIL = f"Space Beaver <noreply@{EMAIL_DOMAIN}>"
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _web.log_level},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # twilio logs every request's headers at INFO (ten lines per SMS); our own line says what was sent
        "twilio.http_client": {"level": "WARNING"},
    },
}
