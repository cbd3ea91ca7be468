"""Django settings, read from the environment with embedded defaults.

A fresh clone runs with nothing set: SQLite in the project folder and the in-memory
channel layer. Production sets at least DJANGO_SECRET_KEY, JWT_SIGNING_KEY,
DJANGO_ALLOWED_HOSTS, DATABASE_URL and REDIS_URL.
"""

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from chatproject import keys
from chatproject.env import env_bool, env_int, env_list, env_rates
from chatproject.redis_settings import (  # noqa: F401 (Redis, the channel layer and the cache: settings Django reads)
    CACHES,
    CHANNEL_LAYERS,
    CHAT_CHANNEL_LAYER,
    CHAT_LAYER_HOSTS,
    REDIS_MAX_CONNECTIONS,
    REDIS_POOL_SIZE,
    REDIS_PREFIX,
    REDIS_SENTINEL_MASTERS,
    REDIS_SENTINELS,
    REDIS_URL,
    REDIS_URLS,
)

BASE_DIR = Path(__file__).resolve().parent.parent


DEBUG = env_bool("DJANGO_DEBUG", False)
if os.environ.get("PYTEST_VERSION"):
    # A test run signs with random keys of its own, which the servers it starts inherit.
    keys.setdefault_local_keys(os.environ)
# The development keys serve only with DEBUG on (`make run`); without DEBUG the server refuses
# to start on them, or on any weak key, rather than sign sessions and tokens anyone can forge.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "") or "django-insecure-dev-only-change-me-5v#p2!k"
JWT_SIGNING_KEY = os.environ.get("JWT_SIGNING_KEY", "") or "jwt-insecure-dev-only-change-me-q8r3w"
if not DEBUG:
    for _name in ("DJANGO_SECRET_KEY", "JWT_SIGNING_KEY"):
        if _problem := keys.key_problem(os.environ.get(_name, "")):
            raise ImproperlyConfigured(
                f"{_name} {_problem}: with DJANGO_DEBUG off the server needs a key of its own. Set {_name} to "
                f"the output of `{keys.HOW_TO_SET}`, or set DJANGO_DEBUG=true for development."
            )
    if SECRET_KEY == JWT_SIGNING_KEY:
        raise ImproperlyConfigured(
            "JWT_SIGNING_KEY equals DJANGO_SECRET_KEY: give each its own random value, so that "
            "a leak of one does not forge the other."
        )
# Never "*" by default: channels' origin check for cookie sessions trusts this list.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# Behind TLS (docs/deployment.md gives the production values). Off by default: `make run`, the
# tests and `make cluster` serve plain HTTP.
# The header a TLS-terminating proxy sets to `https` (nginx: X-Forwarded-Proto); trust it only
# when the proxy always overwrites it, as deploy/nginx/chat.conf does. It also tells the
# WebSocket origin check (chat/auth.py) that the page's origin is https.
_PROXY_SSL_HEADER = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https") if _PROXY_SSL_HEADER else None
)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Load balancers and scrapers reach each process directly over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)

# Content-Security-Policy (django-csp) on every response: scripts, styles, images and fonts from
# this origin only, so that nothing injected into a page runs. The pages keep no inline script,
# style or event handler (JSON data islands are not scripts); the API docs use Swagger UI's
# split view, whose start-up script is a separate URL. `'self'` in connect-src covers the
# page's own ws:/wss: origin (CSP Level 3).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "chat.middleware.valid_text_urls",
    "chat.middleware.StaticFiles",  # WhiteNoise
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After the session (it reads the language cookie), before CommonMiddleware (Django's order).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
ASGI_APPLICATION = "chatproject.asgi.application"

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

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and not DATABASES["default"]["CONN_MAX_AGE"]:
    # A pool instead of a connection per request: every `database_sync_to_async` call and
    # every ASGI request would otherwise open (and PostgreSQL fork) a new connection.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN", 2),
        "max_size": env_int("DATABASE_POOL_MAX", 20),
        "timeout": 10,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (daphne and the test runner) may write the same file.
    # IMMEDIATE takes the write lock at BEGIN, so a waiting writer waits out `timeout`
    # instead of failing at once when its read lock cannot be upgraded.
    # Opening a SQLite connection for every database call costs more than the call: keep it.
    if "DATABASE_CONN_MAX_AGE" not in os.environ:
        DATABASES["default"]["CONN_MAX_AGE"] = 60
    # WAL: readers never wait for the writer, and a commit costs one fsync instead of several.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20, transaction_mode="IMMEDIATE", init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
    )
    # The test database is a file (not in-memory) so that live tests' daphne processes can
    # open it; one per test run, so concurrent runs don't collide.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get(
            "SQLITE_TEST_NAME", os.path.join(tempfile.gettempdir(), f"chat-test-{os.getpid()}.sqlite3")
        )
    }
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# English and Simplified Chinese: the browser's Accept-Language picks one, the switcher
# (/i18n/setlang/) sets the `django_language` cookie, which WebSockets read too.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True

# Uploaded files (PROTOCOL.md, "Files"), through Django's storage API: the file system under
# MEDIA_ROOT by default; with CHAT_S3_BUCKET set, any S3-compatible store (django-storages), whose
# downloads are redirects to short-lived signed URLs. Never served from MEDIA_URL: every download
# is authorized by /api/uploads/<id>/ (docs/deployment.md, "Files").
MEDIA_ROOT = os.environ.get("MEDIA_ROOT", "") or str(BASE_DIR / "media")
CHAT_S3_BUCKET = os.environ.get("CHAT_S3_BUCKET", "")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if CHAT_S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": CHAT_S3_BUCKET,
            "endpoint_url": os.environ.get("CHAT_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("CHAT_S3_REGION") or None,
            "access_key": os.environ.get("CHAT_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("CHAT_S3_SECRET_ACCESS_KEY") or None,
            "location": os.environ.get("CHAT_S3_PREFIX", ""),
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": env_int("CHAT_S3_URL_SECONDS", 300),
            "file_overwrite": False,
        },
    }
# Behind nginx with the file system storage: downloads answer `X-Accel-Redirect: <prefix><name>`
# and nginx serves the bytes from an internal location (deploy/nginx/chat.conf); empty: daphne does.
CHAT_FILES_ACCEL_PREFIX = os.environ.get("CHAT_FILES_ACCEL_PREFIX", "")

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "chat.api.parsers.ChatJSONParser",
        "chat.api.parsers.ChatFormParser",
        "chat.api.parsers.ChatMultiPartParser",
    ],
    # Each counted per client address and, separately, per username (chat/throttles.py).
    "DEFAULT_THROTTLE_RATES": {
        "login": os.environ.get("CHAT_LOGIN_RATE", "10/min"),
        "register": os.environ.get("CHAT_REGISTER_RATE", "10/hour"),
    },
    "EXCEPTION_HANDLER": "chat.api.errors.exception_handler",
    # Throttles key on REMOTE_ADDR unless told how many proxies append to X-Forwarded-For.
    "NUM_PROXIES": env_int("DJANGO_NUM_PROXIES", 0),
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

# However often its refresh token is rotated, a sign-in ends this long after the password was given.
JWT_SESSION_MAX_DAYS = env_int("JWT_SESSION_MAX_DAYS", 30)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "UPDATE_LAST_LOGIN": False,
    # Tokens carry a digest of the password hash they were issued under (claim `hash_password`),
    # checked on every REST request and WebSocket handshake: changing the password ends them.
    "CHECK_REVOKE_TOKEN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat API",
    "DESCRIPTION": "Rooms, history and membership for the chat server. WebSocket frames: see docs/protocol.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge fetched from validator.swagger.io: the CSP allows images from this origin only.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "chat.api.schema.add_uploads"],
}

# Chat limits. Load tests raise them through the environment; production keeps these.
CHAT_MAX_BODY = env_int("CHAT_MAX_BODY", 4000)
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 64 * 1024)
CHAT_RATE_PER_10S = env_int("CHAT_RATE_PER_10S", 20)
CHAT_FLOOD_CLOSE_AFTER = env_int("CHAT_FLOOD_CLOSE_AFTER", 10)
# Every other write a user can repeat has a budget per user, counted like messages (chat.limits).
CHAT_WRITE_RATES = env_rates(
    "CHAT_WRITE_RATES",
    {
        "join": "30/min",
        "leave": "30/min",
        "edit": "30/min",
        "delete": "30/min",
        "report": "10/min",
        "invite": "30/min",
        "room": "20/hour",
        "direct": "30/hour",
        "update": "20/min",
        "react": "60/min",
        "upload": "30/min",
    },
)
# A re-join this soon after leaving a room writes no new "joined"/"left" pair (chat.services).
CHAT_JOIN_LEAVE_QUIET_S = env_int("CHAT_JOIN_LEAVE_QUIET_S", 60)
CHAT_MAX_CONNECTIONS = env_int("CHAT_MAX_CONNECTIONS", 10000)
CHAT_MAX_CONNECTIONS_PER_USER = env_int("CHAT_MAX_CONNECTIONS_PER_USER", 20)
CHAT_HEARTBEAT_S = env_int("CHAT_HEARTBEAT_S", 15)
CHAT_LAYER_CHECK_S = float(os.environ.get("CHAT_LAYER_CHECK_S", "1"))
CHAT_MAX_SEND_BUFFER = env_int("CHAT_MAX_SEND_BUFFER", 1024 * 1024)
CHAT_REPLAY_LIMIT = env_int("CHAT_REPLAY_LIMIT", 500)
# Exports in progress: each holds a database connection and a thread for as long as its client reads.
CHAT_EXPORTS_PER_USER = env_int("CHAT_EXPORTS_PER_USER", 2)
CHAT_EXPORTS_PER_PROCESS = env_int("CHAT_EXPORTS_PER_PROCESS", 8)
# An HTTP response whose client has taken nothing for this long is dropped (see chat/realtime/daphne/).
CHAT_HTTP_SEND_TIMEOUT_S = float(os.environ.get("CHAT_HTTP_SEND_TIMEOUT_S", "60"))
# Larger request bodies are refused with 413 from their Content-Length, before they are read.
CHAT_MAX_REQUEST_BYTES = env_int("CHAT_MAX_REQUEST_BYTES", 1024 * 1024)
# An uploaded file's limit (its request may carry a little more: the multipart framing), checked
# while the body arrives (chat/uploads/limit.py, chat/realtime/daphne/).
CHAT_MAX_UPLOAD_BYTES = env_int("CHAT_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
# Images over this many pixels are refused before they are decoded (decompression bombs).
CHAT_MAX_IMAGE_PIXELS = env_int("CHAT_MAX_IMAGE_PIXELS", 40_000_000)
CHAT_THUMB_PX = env_int("CHAT_THUMB_PX", 480)  # a preview's longer side, at most
# Threads for the file work of uploads (parsing, decoding, storing), apart from the database thread.
CHAT_UPLOAD_THREADS = env_int("CHAT_UPLOAD_THREADS", 4)
CHAT_TYPING_INTERVAL_S = 2
CHAT_REGISTRATION_OPEN = env_bool("CHAT_REGISTRATION_OPEN", True)
# Who may read /metrics: these addresses or networks (compared with the TCP peer, so a proxy on
# the same machine must refuse /metrics itself, as deploy/nginx/chat.conf does), or any client
# sending `Authorization: Bearer <CHAT_METRICS_TOKEN>` when that is set.
CHAT_METRICS_ALLOW = env_list("CHAT_METRICS_ALLOW", "127.0.0.1,::1")
CHAT_METRICS_TOKEN = os.environ.get("CHAT_METRICS_TOKEN", "")
# How long one thread may hold the GIL while another waits for it (Python's default is 5 ms);
# see chatproject/asgi.py.
CHAT_SWITCH_INTERVAL_MS = float(os.environ.get("CHAT_SWITCH_INTERVAL_MS", "1"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
