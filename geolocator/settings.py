"""Settings for the geolocator service.

Everything that differs between a laptop and production comes from environment
variables with embedded defaults, so a newcomer needs no configuration at all:
SQLite in the data dir and django-q2's ORM broker.
"""

from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from geolocator.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_optional_float,
    env_path,
    env_rate,
    env_str,
    raw,
)
from geolocator.media_storage import media_storages
from similarity.database import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set; set it (or DJANGO_DEBUG=1 for local development).")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

# Production hardening (manage.py check --deploy is clean with DEBUG off).
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", True)
    if env_bool("DJANGO_BEHIND_TLS_PROXY", False):  # a proxy that sets X-Forwarded-Proto terminates TLS
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])

# The FAISS index, the model copies and (unless in a bucket) the media live here.
DATA_DIR = env_path("GEOLOCATOR_DATA_DIR", BASE_DIR / "var").resolve()
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
STORAGES, MEDIA_ON_S3 = media_storages()  # the data dir, or an S3-compatible bucket (geolocator/media_storage.py)
# Django serves /media/ by the access rules (0: a web server in front does); from a bucket, streamed or redirected.
GEOLOCATOR_SERVE_MEDIA = env_bool("GEOLOCATOR_SERVE_MEDIA", True)
GEOLOCATOR_MEDIA_REDIRECT = env_bool("GEOLOCATOR_MEDIA_REDIRECT", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "similarity",  # before staticfiles: its runserver (warm before ready) is the one manage.py runs
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_q",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # before anything keys on the client or reads the body (CSRF's check reads the form in its process_view)
    "similarity.web.middleware.ClientAddressMiddleware",
    "similarity.web.middleware.RequestBodyLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "similarity.web.middleware.DatabaseUnavailableMiddleware",
    "similarity.web.middleware.ServerTimingMiddleware",
    # last, as django-axes asks: locks out a client after repeated failed admin logins
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Who a client is: the connection's address, or, behind this many trusted proxies that append to
# X-Forwarded-For, the address the outermost one saw (similarity/clients.py). Never trust the
# header without a proxy: a client would pick its own identity and escape every limit.
GEOLOCATOR_NUM_PROXIES = env_int("DJANGO_NUM_PROXIES", 0, minimum=0)
# Per-client limits count per network: an IPv4 address, an IPv6 /64 (what one subscriber holds) by default.
GEOLOCATOR_CLIENT_IPV4_PREFIX = env_int("DJANGO_CLIENT_IPV4_PREFIX", 32, minimum=8, maximum=32)
GEOLOCATOR_CLIENT_IPV6_PREFIX = env_int("DJANGO_CLIENT_IPV6_PREFIX", 64, minimum=16, maximum=128)

# Failed admin logins (django-axes): after this many for one user name from one client network, that
# pair is locked out for the cool-off time; a success resets the count. After the account limit of
# failures from all networks together, the account is locked out from networks it never signed in
# from (similarity/logins.py).
AXES_FAILURE_LIMIT = env_int("DJANGO_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("DJANGO_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
GEOLOCATOR_LOGIN_ACCOUNT_FAILURE_LIMIT = env_int(
    "DJANGO_LOGIN_ACCOUNT_FAILURE_LIMIT", max(20, AXES_FAILURE_LIMIT), minimum=AXES_FAILURE_LIMIT
)
AXES_LOCKOUT_PARAMETERS = "similarity.logins.lockout_parameters"
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "similarity.clients.client_network"

# Content-Security-Policy on every response (django-csp): scripts and styles from this
# origin only, no inline code, so markup that reaches a page by mistake cannot run.
# Map tiles come from OpenStreetMap (data: for Leaflet's empty tile); the page previews the
# chosen photo as a blob: URL.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "blob:", "data:", "https://tile.openstreetmap.org"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "geolocator.urls"

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

WSGI_APPLICATION = "geolocator.wsgi.application"

# Bounded waits for the database (similarity/database.py): connecting, and each statement.
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
DATABASE_STATEMENT_TIMEOUT = env_int("DATABASE_STATEMENT_TIMEOUT", 30, minimum=0)
DATABASES = {
    "default": database_settings(
        raw("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'geolocator.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        connect_timeout=DATABASE_CONNECT_TIMEOUT,
        statement_timeout=DATABASE_STATEMENT_TIMEOUT,
    )
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"  # filled by `manage.py collectstatic` for production
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# WhiteNoise serves our static files (Leaflet included) from the app itself:
# the page works offline and needs no CDN. Finders let it work before collectstatic.
WHITENOISE_USE_FINDERS = True
# Leaflet's own files, shipped by the django-leaflet package. Only its static
# folder is used (as an app it would need GDAL), found without importing it.
_leaflet = find_spec("leaflet")
if _leaflet is None or not _leaflet.submodule_search_locations:
    raise ImproperlyConfigured(
        "django-leaflet is not installed (pip install -r requirements.txt): the map needs its files."
    )
STATICFILES_DIRS = [Path(_leaflet.submodule_search_locations[0]) / "static"]

# Uploads larger than this are refused by the API before any decoding.
SIMILARITY_MAX_UPLOAD_BYTES = env_int("SIMILARITY_MAX_UPLOAD_BYTES", 20 * 1024 * 1024, minimum=1024)
# Decompression-bomb guard: images with more pixels are refused before decoding.
SIMILARITY_MAX_IMAGE_PIXELS = env_int("SIMILARITY_MAX_IMAGE_PIXELS", 60_000_000, minimum=1)
# A lookup (anyone's photo) may decode to at most this many pixels: JPEGs decode at reduced
# scale, so they may claim up to SIMILARITY_MAX_IMAGE_PIXELS; PNG, WebP, GIF and HEIC decode in
# full, so a tiny file claiming 60 MP would otherwise cost a worker about a gigabyte.
SIMILARITY_MAX_LOOKUP_PIXELS = env_int("SIMILARITY_MAX_LOOKUP_PIXELS", 16_000_000, minimum=1)
# Decodes larger than this run on SIMILARITY_MAX_PARALLEL_LARGE_DECODES low-priority threads per
# process, so concurrent requests cannot stack up full-size buffers or starve ordinary lookups.
SIMILARITY_LARGE_DECODE_PIXELS = env_int("SIMILARITY_LARGE_DECODE_PIXELS", 4_000_000, minimum=1)
SIMILARITY_MAX_PARALLEL_LARGE_DECODES = env_int("SIMILARITY_MAX_PARALLEL_LARGE_DECODES", 1, minimum=1)
# Allocations from this size up are mapped and unmapped on their own, so freed image buffers go
# back to the system instead of staying in the process (glibc's mallopt; 0 leaves glibc's default).
SIMILARITY_MALLOC_MMAP_THRESHOLD = env_int("SIMILARITY_MALLOC_MMAP_THRESHOLD", 8 * 1024 * 1024, minimum=0)
# Free memory at the top of a heap stays in the process up to this size, so each lookup's few-megabyte
# buffers are reused instead of faulted in afresh (0 leaves glibc's default, 128 KiB once the above is set).
SIMILARITY_MALLOC_TRIM_THRESHOLD = env_int("SIMILARITY_MALLOC_TRIM_THRESHOLD", 16 * 1024 * 1024, minimum=0)
DATA_UPLOAD_MAX_MEMORY_SIZE = SIMILARITY_MAX_UPLOAD_BYTES + 1024 * 1024
# Query photos stay in memory (no temporary file) and are gone after the request.
FILE_UPLOAD_MAX_MEMORY_SIZE = SIMILARITY_MAX_UPLOAD_BYTES
# Whole request bodies outside lookups: a staff account's (a curator's bulk upload of many photos), and
# anyone else's (a login form); checked from the declared length before anything reads the body.
SIMILARITY_MAX_REQUEST_BYTES = env_int("SIMILARITY_MAX_REQUEST_BYTES", 512 * 1024 * 1024, minimum=1024)
SIMILARITY_MAX_FORM_BYTES = env_int("SIMILARITY_MAX_FORM_BYTES", 1024 * 1024, minimum=1024)
# Limits hold while a body streams in (similarity/web/uploads.py), before anything is stored.
FILE_UPLOAD_HANDLERS = [
    "similarity.web.uploads.BoundedUploadHandler",
    "similarity.web.uploads.MemoryFileUploadHandler",
    "similarity.web.uploads.TemporaryFileUploadHandler",
]

# What one client's proposals (its own, and those made after its lookups) may keep on disk: set in MiB, counted in KiB.
_mib, _period = env_rate("SIMILARITY_PROPOSAL_STORAGE_RATE", "200/day").split("/")
SIMILARITY_PROPOSAL_STORAGE_KIB_RATE = f"{int(_mib) * 1024}/{_period}"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["similarity.api.permissions.LookupAllowed"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "similarity.api.errors.json_exception_handler",
    "NUM_PROXIES": GEOLOCATOR_NUM_PROXIES,  # our throttles use clients.client_network; DRF's own agree
    # Budgets per client (similarity/api/throttles.py), counted in the database (models.RequestCounter).
    "DEFAULT_THROTTLE_RATES": {
        "lookup": env_rate("SIMILARITY_LOOKUP_RATE", "120/minute"),
        "lookup_large": env_rate("SIMILARITY_LARGE_LOOKUP_RATE", "10/minute"),
        "read": env_rate("SIMILARITY_READ_RATE", "600/minute"),
        "propose": env_rate("SIMILARITY_PROPOSAL_RATE", "30/hour"),
        "proposal_storage": SIMILARITY_PROPOSAL_STORAGE_KIB_RATE,
        "batch": env_rate("GEOLOCATOR_BATCH_RATE", "2000/day"),  # lookup units (api/pricing.py) of batch photos
    },
}

# Redis, when set, is django-q2's broker (Q_CLUSTER below); the per-client budgets are counted in the database.
REDIS_URL = raw("REDIS_URL")

SPECTACULAR_SETTINGS = {
    # request bodies as their own components: uploads typed as binary files, not URIs
    "COMPONENT_SPLIT_REQUEST": True,
    "TITLE": "geolocator",
    "DESCRIPTION": "Where was this photo taken? Nearest reference photos with known coordinates.",
    "VERSION": "1.0.0",
}

# --- Similarity search -------------------------------------------------------
# Which image encoder embeds photos: "auto", "efficientnet_lite0@384" (or its 256-px "efficientnet_lite0") or
# "open_clip:<model>/<pretrained tag or weights file>".
SIMILARITY_ENCODER = env_str("SIMILARITY_ENCODER", "auto")
# Where encoders run: auto (CUDA when present), cpu or cuda.
SIMILARITY_DEVICE = env_choice("SIMILARITY_DEVICE", "auto", ("auto", "cpu", "cuda"))
# What runs the image model on a CPU, and in what precision (similarity/runtime/choice.py): auto measures every
# runtime once per weights file and CPU and uses the fastest that keeps SIMILARITY_RUNTIME_MIN_COSINE to fp32.
SIMILARITY_PRECISION = env_choice("SIMILARITY_PRECISION", "auto", ("auto", "fp32", "bf16", "fp16"))
SIMILARITY_RUNTIME = env_choice("SIMILARITY_RUNTIME", "auto", ("auto", "torch", "onnx", "onnx-int8"))
SIMILARITY_RUNTIME_MIN_COSINE = env_float(
    "SIMILARITY_RUNTIME_MIN_COSINE",
    env_float("SIMILARITY_INT8_MIN_COSINE", 0.999, minimum=0, maximum=1),
    minimum=0,
    maximum=1,
)
# Decide as if the CPU had only these flags (e.g. "avx2" or "avx2,avx512f,avx512_vnni"):
# proves each branch of the runtime choice on any machine. Empty: this CPU's own.
SIMILARITY_CPU_FLAGS = env_str("SIMILARITY_CPU_FLAGS", "")
# The measured choices and the ONNX copies they use (one per weights file, CPU and settings).
SIMILARITY_MODEL_CACHE_DIR = env_path("SIMILARITY_MODEL_CACHE_DIR", DATA_DIR / "models")
# Let the JPEG decoder shrink big photos by powers of two while decoding (never below twice the model's input).
SIMILARITY_JPEG_DRAFT = env_bool("SIMILARITY_JPEG_DRAFT", True)
SIMILARITY_INDEX_DIR = DATA_DIR / "index"
# The worker publishes each FAISS snapshot to the bucket; hosts fetch it (similarity/search/shared_index.py).
SIMILARITY_INDEX_SHARED = env_bool("SIMILARITY_INDEX_SHARED", MEDIA_ON_S3)
SIMILARITY_INDEX_POLL_SECONDS = env_int("SIMILARITY_INDEX_POLL_SECONDS", 15, minimum=1)
# FAISS layout: auto = exact below SIMILARITY_EXACT_LIMIT vectors, inverted lists above (docs/configuration.md).
SIMILARITY_INDEX_TYPE = env_choice("SIMILARITY_INDEX_TYPE", "auto", ("auto", "flat", "ivf"))
SIMILARITY_EXACT_LIMIT = env_int("SIMILARITY_EXACT_LIMIT", 50000, minimum=0)
SIMILARITY_INDEX_STORAGE = env_choice("SIMILARITY_INDEX_STORAGE", "auto", ("auto", "float32", "fp16", "sq8", "pq"))
SIMILARITY_IVF_NPROBE = env_int("SIMILARITY_IVF_NPROBE", 32, minimum=1)
# Where vector searches run: faiss (the snapshot above) or milvus (a server shared by every host).
SIMILARITY_VECTOR_BACKEND = env_choice("SIMILARITY_VECTOR_BACKEND", "faiss", ("faiss", "milvus"))
SIMILARITY_MILVUS_URI = env_str("SIMILARITY_MILVUS_URI", "http://127.0.0.1:19530")
SIMILARITY_MILVUS_TOKEN = env_str("SIMILARITY_MILVUS_TOKEN", "")
SIMILARITY_MILVUS_DB = env_str("SIMILARITY_MILVUS_DB", "default")
SIMILARITY_BATCH_SIZE = env_int("SIMILARITY_BATCH_SIZE", 32, minimum=1, maximum=1024)
# Best similarity a match needs before its coordinates are reported, per encoder family (their scales differ).
SIMILARITY_THRESHOLDS = {
    "open_clip": env_float("SIMILARITY_THRESHOLD_CLIP", 0.75, minimum=-1, maximum=1),
    "efficientnet_lite0": env_float("SIMILARITY_THRESHOLD_EFFICIENTNET", 0.70, minimum=-1, maximum=1),
}
# Coordinate estimate (similarity/geometry/estimate.py): group radius, softmax temperature of the weights.
SIMILARITY_CLUSTER_RADIUS_M = env_float("SIMILARITY_CLUSTER_RADIUS_M", 50, minimum=1)
SIMILARITY_ESTIMATE_TEMPERATURE = env_float("SIMILARITY_ESTIMATE_TEMPERATURE", 0.01, minimum=1e-6)
# Geometric verification (similarity/geometry/verification.py, needs OpenCV): the top SIMILARITY_VERIFY_TOP_N
# matches are checked with local features; those with SIMILARITY_VERIFY_MIN_INLIERS or more move to
# the front. all (check every one), first (stop at the first verified: faster) or off. 20: bench/inlier_threshold.py.
SIMILARITY_VERIFY = env_choice("SIMILARITY_VERIFY", "all", ("all", "first", "off"))
SIMILARITY_VERIFY_TOP_N = env_int("SIMILARITY_VERIFY_TOP_N", 20, minimum=1, maximum=100)
SIMILARITY_VERIFY_MIN_INLIERS = env_int("SIMILARITY_VERIFY_MIN_INLIERS", 20, minimum=8)
# Verified lookups a worker process runs at once; no free slot within the queue time: 503 (similarity/api/heavy.py).
SIMILARITY_MAX_PARALLEL_VERIFICATIONS = env_int("SIMILARITY_MAX_PARALLEL_VERIFICATIONS", 2, minimum=1)
SIMILARITY_VERIFY_QUEUE_SECONDS = env_float("SIMILARITY_VERIFY_QUEUE_SECONDS", 10, minimum=0)
# Keep every lookup at least this confident as a candidate for review (unset: only proposed photos are kept).
SIMILARITY_SUGGEST_CONFIDENCE = env_optional_float("SIMILARITY_SUGGEST_CONFIDENCE", minimum=0, maximum=1)
# Uploading a photo this similar to an existing one warns the curator.
SIMILARITY_NEAR_DUPLICATE = env_float("SIMILARITY_NEAR_DUPLICATE", 0.97, minimum=0, maximum=1)
SIMILARITY_DEFAULT_TOP_K = 5
SIMILARITY_MAX_TOP_K = 50
# /api/stats/ counts the whole gallery: at most once per this many seconds per process (0: every call).
SIMILARITY_STATS_CACHE_SECONDS = env_float("SIMILARITY_STATS_CACHE_SECONDS", 30, minimum=0)
# Keep the photos people look up (in the media storage's queries/)? Off: they are gone after the request.
SIMILARITY_KEEP_QUERIES = env_bool("SIMILARITY_KEEP_QUERIES", False)
# Lookups (similar, stats, photo list) open to anyone, or only to logged-in users.
SIMILARITY_PUBLIC_LOOKUPS = env_bool("SIMILARITY_PUBLIC_LOOKUPS", True)

# Failed embeddings are retried with exponential backoff (base * 4**n seconds).
SIMILARITY_EMBED_MAX_ATTEMPTS = env_int("SIMILARITY_EMBED_MAX_ATTEMPTS", 3, minimum=1)
SIMILARITY_EMBED_RETRY_SECONDS = env_int("SIMILARITY_EMBED_RETRY_SECONDS", 30, minimum=1)
# The saved index is a snapshot; vectors stored since form a delta searched exactly beside it. A scheduled task
# rebuilds the snapshot when the delta (or the photos removed since) reaches this size, or is this many seconds old.
SIMILARITY_COMPACT_DELTA_SIZE = env_int("SIMILARITY_COMPACT_DELTA_SIZE", 500, minimum=1)
SIMILARITY_COMPACT_MAX_AGE_SECONDS = env_int("SIMILARITY_COMPACT_MAX_AGE_SECONDS", 600, minimum=1)
# Photos the periodic maintenance task embeds per run (those whose task was lost).
SIMILARITY_MAINTENANCE_BATCH = env_int("SIMILARITY_MAINTENANCE_BATCH", 256, minimum=1)

# --- Locate pipeline (docs/configuration.md: sources, priorities, coarse answers) -----------------------
GEOLOCATOR_FINAL_WITHIN_M = env_float("GEOLOCATOR_FINAL_WITHIN_M", 1000, minimum=0)
GEOLOCATOR_SOURCES = [
    {"path": "similarity.locate.sources.ExifGpsSource", "priority": 10},
    {"path": "similarity.locate.sources.ReferenceSimilaritySource", "priority": 50},
]
# Batches (POST /api/batches/, similarity/batches.py): photos, bytes and open batches a client may have.
GEOLOCATOR_BATCH_MAX_FILES = env_int("GEOLOCATOR_BATCH_MAX_FILES", 100, minimum=1, maximum=10_000)
GEOLOCATOR_BATCH_MAX_BYTES = env_int("GEOLOCATOR_BATCH_MAX_BYTES", 200 * 1024 * 1024, minimum=1024)
GEOLOCATOR_BATCH_OPEN_PER_CLIENT = env_int("GEOLOCATOR_BATCH_OPEN_PER_CLIENT", 2, minimum=1)
GEOLOCATOR_BATCH_KEEP_UPLOADS = env_bool("GEOLOCATOR_BATCH_KEEP_UPLOADS", False)  # else dropped once located
DATA_UPLOAD_MAX_NUMBER_FILES = GEOLOCATOR_BATCH_MAX_FILES + 1  # one more, so that ours names the limit first

# --- Background work (django-q2) ---------------------------------------------
# A task not acknowledged within Q_RETRY seconds (its worker died) is delivered again.
Q_CLUSTER = {
    "name": "geolocator",
    "workers": env_int("Q_WORKERS", 1, minimum=1),
    "timeout": env_int("Q_TIMEOUT", 300, minimum=1),
    "retry": env_int("Q_RETRY", 360, minimum=2),
    # a task that raised is not delivered again (embed_photo retries itself); one whose worker died is
    "ack_failures": True,
    "max_attempts": 3,
    "queue_limit": 50,
    "catch_up": False,
    "label": "Tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        # not propagated: open_clip's logging.warning() gives the root a handler, and lines would print twice
        "similarity": {
            "handlers": ["console"],
            "level": env_choice(
                "SIMILARITY_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ).upper(),
            "propagate": False,
        },
        # failed requests (with their tracebacks) and refused ones, which DEBUG=0 would otherwise log nowhere
        "django.request": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "django.security": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
