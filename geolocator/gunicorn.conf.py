"""gunicorn settings: `gunicorn -c geolocator/gunicorn.conf.py geolocator.wsgi`.

Each worker loads the encoder and the index once, when it starts, so no
request ever pays for loading them.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 120


def post_worker_init(worker):
    from similarity.warmup import warm_up

    warm_up()
