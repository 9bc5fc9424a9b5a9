"""Settings for every environment, read from the environment only (12-factor).

Nothing set gives the embedded default (SQLite, local-memory cache, in-memory channel layer, Celery eager)
so `make run` works on a bare machine; DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
Every variable read here is documented in README.md and .env.example.
"""

import ipaddress
from datetime import date
from pathlib import Path

import dj_database_url
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str
from core.redis import reconnect_once, reconnect_once_async

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DJANGO_DATA_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DJANGO_DEBUG", True)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Production (DJANGO_DEBUG=false) refuses to start without it: "
            "set it to a long random value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'."
        )
    # Development only: fixed so that sessions and tokens survive restarts and work across processes.
    SECRET_KEY = "django-insecure-development-key-never-used-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
ADMIN_URL = env_str("DJANGO_ADMIN_URL", "admin/").strip("/") + "/"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "csp",
    "channels",
    "ninja",
    "core",
    "fastpath",
    "accounts",
    "posts",
    "jobs",
    "webhooks",
    "chat",
]

# The speed layer (fastpath/, README: Performance): reads on the event loop's own database pool, fast response
# bodies, Django's middlewares run inline for /api/ requests, reused request threads, one socket write per
# response, lean Redis calls. Off, the service is stock Django + ninja + Channels + uvicorn, and passes the same
# suite. Each private API it overrides is pinned to the library versions it was written for (fastpath/guards.py).
FAST_PATH = env_bool("FAST_PATH", True)
# Validates every fast response body with pydantic as well and fails the request if they differ (the test suite).
FAST_PATH_CHECK_BODIES = env_bool("FAST_PATH_CHECK_BODIES", False)

# With FAST_PATH on, Django's middlewares run as the speed layer's subclasses (fastpath/middleware.py): for /api/
# requests their hooks run on the event loop (no thread hop per hook), with the same code and results.
_django_middleware = [
    "django.middleware.security.SecurityMiddleware",
    # Outside ContractMiddleware, so that the error bodies it answers with carry the header too.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "core.middleware.ContractMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
# Each of these runs as the fastpath.middleware class of the same name.
_inline_for_api = {
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
}
MIDDLEWARE = [
    f"fastpath.middleware.{path.rsplit('.', 1)[1]}" if FAST_PATH and path in _inline_for_api else path
    for path in _django_middleware
]
# Django's deploy checks look for three of these middlewares by their dotted path; the speed layer runs the same
# checks on its subclasses instead (fastpath/checks.py, ids "fastpath.security.W001", ...).
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"] if FAST_PATH else []

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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

# --- Database -------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
DB_POOL_MIN = env_int("DB_POOL_MIN", 2, minimum=0)
DB_POOL_MAX = env_int("DB_POOL_MAX", 10, minimum=1)
DB_POOL_TIMEOUT = env_int("DB_POOL_TIMEOUT", 10, minimum=1)
# Once PostgreSQL is known to be down (core/database.py), requests are answered 503 at once; one per this many
# seconds tries a fresh connection to see whether it is back.
DB_OUTAGE_PROBE_SECONDS = env_int("DB_OUTAGE_PROBE_SECONDS", 1, minimum=1)
# The hot reads run as prepared statements on the event loop's pool (fastpath/db.py). Off behind a pooler that cannot
# keep them (PgBouncer in transaction mode before 1.21, or without max_prepared_statements).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
if DB_POOL_MIN > DB_POOL_MAX:
    raise ImproperlyConfigured(f"DB_POOL_MIN ({DB_POOL_MIN}) must not exceed DB_POOL_MAX ({DB_POOL_MAX})")

if DATABASE_URL:
    _database = dj_database_url.parse(DATABASE_URL)
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    _database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA_DIR / "db.sqlite3")}

if _database["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, aware of outages (core/postgresql/): answered at once while the database is known down.
    _database["ENGINE"] = "core.postgresql"
    # Django's native psycopg pool; persistent connections leak under ASGI (ticket #33497), so CONN_MAX_AGE=0.
    _database["CONN_MAX_AGE"] = 0
    _database["CONN_HEALTH_CHECKS"] = True
    _database["OPTIONS"] = {
        **_database.get("OPTIONS", {}),
        "connect_timeout": 5,
        "pool": {"min_size": DB_POOL_MIN, "max_size": DB_POOL_MAX, "timeout": DB_POOL_TIMEOUT},
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, Celery broker ----------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "app")
_redis_cache = "fastpath.cache.RedisCache" if FAST_PATH else "django_prometheus.cache.backends.redis.RedisCache"

if REDIS_URL:
    CACHES = {
        "default": {
            # django-redis, counting gets, hits and misses for /metrics (README, Observability); with FAST_PATH,
            # the same backend with its async reads and writes on the event loop (fastpath/cache.py).
            "BACKEND": _redis_cache,
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            # Short socket timeouts: a stuck Redis must fail a request quickly, not hang a worker thread.
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
                # A connection that died with a restarted Redis is replaced once, not reported (core/redis.py).
                "CONNECTION_POOL_KWARGS": {"retry": reconnect_once()},
            },
        }
    }
    # redis-py's default 5 s socket timeout equals the core layer's 5 s BZPOPMIN: a quiet channel would time out
    # reading. Reads may take as long as the blocking pop, plus margin. Its pool also refuses a 101st connection,
    # and a process whose hundreds of sockets join or leave at once needs more.
    _layer_hosts = [
        {
            "address": REDIS_URL,
            "socket_timeout": 15,
            "socket_connect_timeout": 5,
            "max_connections": 1000,
            "retry": reconnect_once_async(),
        }
    ]
    # "redis-pubsub" (one PUBLISH per group message, fanned out inside each process) is the default: in
    # bench/ws_fanout.py it delivers a 100-socket room at 50 msg/s with p99 29 ms where the core "redis" layer
    # (a sorted set per channel, one pop per message per socket) falls seconds behind (README, Chat).
    CHANNEL_LAYER = env_str("CHANNEL_LAYER", "redis-pubsub")
    if CHANNEL_LAYER == "redis-pubsub":
        _layer = {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": _layer_hosts, "prefix": f"{CACHE_KEY_PREFIX}:asgi"},
        }
    elif CHANNEL_LAYER == "redis":
        _layer = {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": _layer_hosts,
                "prefix": f"{CACHE_KEY_PREFIX}:asgi",
                # A consumer may fall this many messages behind before the layer drops for it; it then heals
                # the gap from the database with `after`. Stale messages are worthless after the expiry.
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000, minimum=10),
                "expiry": env_int("CHANNEL_LAYER_EXPIRY_SECONDS", 30, minimum=1),
            },
        }
    else:
        raise ImproperlyConfigured(f"CHANNEL_LAYER must be redis-pubsub or redis, got {CHANNEL_LAYER!r}")
    CHANNEL_LAYERS = {"default": _layer}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "memory://localhost/"
# Without a broker the embedded default runs tasks in-process, at the moment they are enqueued.
CELERY_TASK_ALWAYS_EAGER = not (env_str("CELERY_BROKER_URL") or REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged when it ends, not when it starts: a worker killed mid-task (OOM, SIGKILL, a lost node)
# leaves its message unacknowledged and the broker hands it to another worker once the visibility timeout passes.
# Every task is therefore written to be idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message reserved at a time per process: a long export does not hold others back behind it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 15 * 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", CELERY_TASK_SOFT_TIME_LIMIT + 60, minimum=2)
# Longer than the longest task: a message still being worked on must not be handed to a second worker.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 5 * 60, minimum=1)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_TIME_LIMIT must be longer than CELERY_TASK_SOFT_TIME_LIMIT.")
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must be longer than CELERY_TASK_TIME_LIMIT.")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Results live in the database (Job rows); no result backend to fill up.
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# How often beat sends again the messages of jobs nobody is working on (jobs_requeue_stalled).
JOB_SWEEP_SECONDS = env_int("JOB_SWEEP_SECONDS", 15, minimum=1)
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "purge-expired-token-families": {"task": "accounts.tasks.purge_expired_token_families", "schedule": 3600},
    "purge-finished-jobs": {"task": "posts.tasks.purge_finished_jobs", "schedule": 3600},
    "purge-expired-sessions": {"task": "accounts.tasks.purge_expired_sessions", "schedule": 24 * 3600},
    "requeue-stalled-jobs": {"task": "posts.tasks.requeue_stalled_jobs", "schedule": JOB_SWEEP_SECONDS},
}

# --- Jobs (exports) -------------------------------------------------------------------------------------
# Finished jobs and their files are deleted this long after they end.
JOB_RETENTION_SECONDS = env_int("JOB_RETENTION_SECONDS", 7 * 24 * 3600, minimum=60)
# A job still queued this long after the broker took its message is sent again: the broker may have lost it (a
# restart without persistence). A duplicate costs a message: it finds the job in hand and is dropped.
JOB_REQUEUE_AFTER_SECONDS = env_int("JOB_REQUEUE_AFTER_SECONDS", 45, minimum=10)
# A running job's worker renews its lease this often over (every third of it): a job whose lease has passed has
# lost its worker and is sent again by the sweep; a fresh one is in hand, and a duplicate message for it is dropped.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 30, minimum=1)
if JOB_LEASE_SECONDS >= CELERY_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured("JOB_LEASE_SECONDS must be shorter than CELERY_VISIBILITY_TIMEOUT.")
# Queued or running jobs one user may have at a time; more is refused with 429.
JOB_MAX_ACTIVE_PER_USER = env_int("JOB_MAX_ACTIVE_PER_USER", 3, minimum=1)
# Rows fetched per round trip while exporting (a server-side cursor: memory stays flat however many rows).
EXPORT_CHUNK_ROWS = env_int("EXPORT_CHUNK_ROWS", 2000, minimum=1)

# --- Webhooks (webhooks/services/; README, Webhooks) ----------------------------------------------------
# Loopback receivers are refused like private ones (SSRF); tests running a receiver on 127.0.0.1 turn this on.
WEBHOOK_ALLOW_LOOPBACK = env_bool("WEBHOOK_ALLOW_LOOPBACK", False)
# A receiver must accept the connection within the first and answer within the second; the whole exchange is cut
# off after both together, however slowly a receiver trickles bytes.
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env_int("WEBHOOK_CONNECT_TIMEOUT_SECONDS", 3, minimum=1)
WEBHOOK_READ_TIMEOUT_SECONDS = env_int("WEBHOOK_READ_TIMEOUT_SECONDS", 10, minimum=1)
# Requests per delivery, the first included; retries wait base * 2^(n-1) seconds (half of it jittered) up to the cap.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 10, minimum=1)
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 15 * 60, minimum=1)
# Per receiving host: this many failures in a row open the breaker for the cool-down, then one trial is let through.
WEBHOOK_BREAKER_THRESHOLD = env_int("WEBHOOK_BREAKER_THRESHOLD", 5, minimum=1)
WEBHOOK_BREAKER_COOLDOWN_SECONDS = env_int("WEBHOOK_BREAKER_COOLDOWN_SECONDS", 60, minimum=1)
# A delivery still not through this long after its event (kept waiting by an open breaker) is given up.
WEBHOOK_DELIVERY_MAX_AGE_SECONDS = env_int("WEBHOOK_DELIVERY_MAX_AGE_SECONDS", 24 * 3600, minimum=60)
# Every endpoint gets every published post: the cap bounds what one account can fan out.
WEBHOOK_MAX_ENDPOINTS_PER_USER = env_int("WEBHOOK_MAX_ENDPOINTS_PER_USER", 10, minimum=1)
# Retry timers live in the broker; a pending delivery whose message was lost is sent again by this periodic sweep.
CELERY_BEAT_SCHEDULE["requeue-stalled-webhook-deliveries"] = {
    "task": "posts.tasks.requeue_stalled_webhook_deliveries",
    "schedule": 300,
}

# --- Auth and passwords ---------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# JWT (RFC 8725): one pinned algorithm, every registered claim required, access and refresh never interchangeable.
JWT_SIGNING_KEY = env_str("JWT_SIGNING_KEY") or SECRET_KEY
JWT_ALGORITHM = "HS256"
JWT_ISSUER = env_str("JWT_ISSUER", "backend")
JWT_AUDIENCE = env_str("JWT_AUDIENCE", "backend-api")
JWT_ACCESS_TTL_SECONDS = env_int("JWT_ACCESS_TTL_SECONDS", 15 * 60, minimum=30)
JWT_REFRESH_TTL_SECONDS = env_int("JWT_REFRESH_TTL_SECONDS", 7 * 24 * 3600, minimum=60)
# Brute-force guard: this many failed logins per username and client address within the window -> 429.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5, minimum=1)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60, minimum=1)

# --- Chat ---------------------------------------------------------------------------------------------
CHAT_TICKET_TTL_SECONDS = 30
# A connection that stops heartbeating (its process crashed) drops out of presence after this long.
CHAT_PRESENCE_TTL_SECONDS = env_int("CHAT_PRESENCE_TTL_SECONDS", 30, minimum=2)
CHAT_HEARTBEAT_SECONDS = env_int("CHAT_HEARTBEAT_SECONDS", 10, minimum=1)
# Per connection: a token bucket of this many messages per second, with this burst.
CHAT_MESSAGE_RATE = env_int("CHAT_MESSAGE_RATE", 5, minimum=1)
CHAT_MESSAGE_BURST = env_int("CHAT_MESSAGE_BURST", 10, minimum=1)
CHAT_TYPING_INTERVAL_SECONDS = 1.0

# --- Email ----------------------------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH") or str(DATA_DIR / "mail")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "no-reply@localhost")

# --- HTTP -----------------------------------------------------------------------------------------------
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
# Graceful shutdown (manage.py serve): serve with /ready = 503 this long after SIGTERM, then give in-flight
# requests this long to finish. Kubernetes' terminationGracePeriodSeconds must cover both.
SHUTDOWN_DRAIN_SECONDS = env_int("SHUTDOWN_DRAIN_SECONDS", 5, minimum=0)
SHUTDOWN_GRACE_SECONDS = env_int("SHUTDOWN_GRACE_SECONDS", 20, minimum=1)
WEBSOCKET_MAX_MESSAGE_BYTES = 1024 * 1024
READY_CHECK_TIMEOUT_SECONDS = env_int("READY_CHECK_TIMEOUT_MS", 2000, minimum=50) / 1000
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
# The day /api/v1 stops being served, announced in its Sunset header.
API_V1_SUNSET = date.fromisoformat(env_str("API_V1_SUNSET", "2027-12-31"))
# How many reverse proxies in front of us append to X-Forwarded-For; 0 trusts none and uses the peer address.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Location", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]

# Production hardening: `manage.py check --deploy --fail-level WARNING` passes with DJANGO_DEBUG=false.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# Probes and scrapes arrive over plain HTTP from inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
X_FRAME_OPTIONS = "DENY"
# django-csp, on every response. The pages (admin, chat, the API docs) load scripts and styles from this origin
# only and have no inline script or style; the chat page's socket and API calls go to this origin too.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp_constants.SELF],
        "script-src": [csp_constants.SELF],
        "style-src": [csp_constants.SELF],
        # Swagger UI and the admin draw some icons from data: URIs.
        "img-src": [csp_constants.SELF, "data:"],
        "connect-src": [csp_constants.SELF],
        "object-src": [csp_constants.NONE],
        "base-uri": [csp_constants.SELF],
        "form-action": [csp_constants.SELF],
        "frame-ancestors": [csp_constants.NONE],
    }
}

# --- i18n, static, media --------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles")
# Export files: the web processes serve what the workers write, so in production both mount the same volume.
MEDIA_ROOT = Path(env_str("DJANGO_MEDIA_ROOT") or DATA_DIR / "media")
MEDIA_URL = "/media/"

# --- Logging --------------------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
LOG_FORMAT = env_str("LOG_FORMAT", "json").lower()
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or console, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_context": {"()": "core.logging.RequestContextFilter"},
        "redact_secrets": {"()": "core.logging.RedactSecretsFilter"},
        "service_unavailable": {"()": "core.logging.ServiceUnavailableFilter"},
    },
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "console": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_context", "redact_secrets"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Replace Django's default console and mail_admins handlers: everything goes through the root handler.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        # Django logs every 4xx/5xx here; our own handlers log the ones that matter with more context.
        "django.request": {"level": "ERROR", "filters": ["service_unavailable"]},
        "django.server": {"level": "WARNING"},
    },
}

# --- Posts, caching and rate limiting (posts app, core/ratelimit.py, core/cache.py) ----------------------------
# Post details, the first pages of public lists and users' public profiles are cached in Redis and replaced on every
# write (README, Caching). False: every read goes to the database (writes still replace what other processes may
# have cached).
RESPONSE_CACHE = env_bool("RESPONSE_CACHE", True)
USERS_PROFILE_CACHE_SECONDS = env_int("USERS_PROFILE_CACHE_SECONDS", 300, minimum=1)
POSTS_DETAIL_CACHE_SECONDS = env_int("POSTS_DETAIL_CACHE_SECONDS", 300, minimum=1)
POSTS_LIST_CACHE_SECONDS = env_int("POSTS_LIST_CACHE_SECONDS", 60, minimum=1)
POSTS_LIST_CACHE_PAGES = env_int("POSTS_LIST_CACHE_PAGES", 3, minimum=0)
# The v1 total is counted exactly up to this many posts; a larger one is counted once and cached for a while.
POSTS_EXACT_COUNT_LIMIT = env_int("POSTS_EXACT_COUNT_LIMIT", 10_000, minimum=1)
POSTS_COUNT_CACHE_SECONDS = env_int("POSTS_COUNT_CACHE_SECONDS", 30, minimum=1)

# Per client (user id when authenticated, else address) and group of endpoints; see README, Rate limiting.
RATE_LIMIT_REDIS_URL = env_str("RATE_LIMIT_REDIS_URL") or REDIS_URL
RATE_LIMIT_POLICIES = {
    # Every GET: a sliding window. Without Redis: in-process limits.
    "read": {
        "algorithm": "sliding_window",
        "limit": env_int("RATE_LIMIT_READ_LIMIT", 100, minimum=1),
        "window": env_int("RATE_LIMIT_READ_WINDOW_SECONDS", 60, minimum=1),
    },
    # Every other method: a token bucket, steady rate with room for bursts. Without Redis: in-process limits.
    "write": {
        "algorithm": "token_bucket",
        "rate": env_int("RATE_LIMIT_WRITE_RATE", 10, minimum=1),
        "burst": env_int("RATE_LIMIT_WRITE_BURST", 20, minimum=1),
    },
    # /auth/register, /auth/token, /auth/refresh: credentials are at stake, so without Redis they refuse (503).
    "auth": {
        "algorithm": "sliding_window",
        "limit": env_int("RATE_LIMIT_AUTH_LIMIT", 20, minimum=1),
        "window": env_int("RATE_LIMIT_AUTH_WINDOW_SECONDS", 60, minimum=1),
        "fail_closed": True,
    },
}

# --- Chat in the browser (chat/urls.py): Django session login for the rooms and room pages -------------------
LOGIN_URL = "chat:login"
LOGIN_REDIRECT_URL = "chat:rooms"
LOGOUT_REDIRECT_URL = "chat:login"

# --- Observability (core/tracing.py, core/metrics.py; README, Observability) -----------------------------------
# Tracing is configured by the standard OTEL_* variables alone (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...).
# /metrics answers clients in these networks that did not come through a proxy, or anyone with the token.
try:
    METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network(network, strict=False)
        for network in env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
    ]
except ValueError as exc:
    raise ImproperlyConfigured(
        f"METRICS_ALLOWED_NETWORKS must be comma-separated networks (CIDR) or addresses, "
        f"got {env_str('METRICS_ALLOWED_NETWORKS')!r}: {exc}"
    ) from None
METRICS_TOKEN = env_str("METRICS_TOKEN")
# django-prometheus' request and query latency histograms (+Inf is added): its default buckets start at 10 ms,
# above nearly every query and most API requests here.
PROMETHEUS_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A Celery worker serves its own metrics (task outcomes and durations) on this port; 0 serves none.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0)
WORKER_METRICS_HOST = env_str("WORKER_METRICS_HOST", "0.0.0.0")
# Multiprocess metrics (README, Observability): the variable is read by prometheus_client itself; the directory
# must exist before the first metric is made, and should start empty.
if env_str("PROMETHEUS_MULTIPROC_DIR"):
    Path(env_str("PROMETHEUS_MULTIPROC_DIR")).mkdir(parents=True, exist_ok=True)
