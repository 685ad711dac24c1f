"""Test settings: the real settings, with tasks run synchronously and a temporary data dir."""

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("GEOLOCATOR_DATA_DIR", tempfile.mkdtemp(prefix="geolocator-tests-"))

from geolocator.settings import *  # noqa: E402,F401,F403
from geolocator.settings import Q_CLUSTER  # noqa: E402

Q_CLUSTER = {**Q_CLUSTER, "sync": True}
# Tests pin the offline encoder so results do not depend on what weights a machine has.
SIMILARITY_ENCODER = "efficientnet_lite0@384"
# Geometric verification costs a quarter of a second per lookup: tests of it turn it on (tests/test_verification.py).
SIMILARITY_VERIFY = "off"
# PyTorch (fp32, or bf16 where measured faithful and faster) unless a test asks for ONNX Runtime
# copies (tests/test_runtimes.py): measuring them takes tens of seconds.
SIMILARITY_RUNTIME = "torch"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Statistics fresh on every call, as tests compare them before and after a change (tests/test_hardening_round2.py
# checks the cache itself).
SIMILARITY_STATS_CACHE_SECONDS = 0

# A file, not an in-memory database, so that a real worker process (tests/test_worker.py)
# can share the test database. On PostgreSQL the test database is shared anyway.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405

# The test client and the browser tests speak plain HTTP on localhost.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
# Generous enough for every test but the one about throttling.
REST_FRAMEWORK = {  # noqa: F405
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {
        "lookup": "10000/minute",
        "lookup_large": "10000/minute",
        "read": "10000/minute",
        "propose": "10000/minute",
        "proposal_storage": "10000000/minute",
        "batch": "10000000/minute",
    },
}
