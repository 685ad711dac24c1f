"""gunicorn settings: `gunicorn -c geolocator/gunicorn.conf.py geolocator.wsgi`.

Each worker loads the encoder and the index once, when it starts, so no
request ever pays for loading them. Workers are recycled after
GUNICORN_MAX_REQUESTS requests (with jitter, so they do not all restart at
once): a safety net, since decodes are bounded and freed memory goes back to
the system (similarity/gallery/images.py, similarity/memory.py). Every request is
logged to stdout.
"""

from geolocator.env import env_int, env_str

bind = env_str("GUNICORN_BIND", "127.0.0.1:8000")
workers = env_int("GUNICORN_WORKERS", 2, minimum=1)
threads = env_int("GUNICORN_THREADS", 4, minimum=1)
timeout = 120
max_requests = env_int("GUNICORN_MAX_REQUESTS", 2000, minimum=0)
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0
accesslog = env_str("GUNICORN_ACCESS_LOG", "-")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def post_worker_init(worker):
    from similarity.warmup import warm_up

    warm_up()
