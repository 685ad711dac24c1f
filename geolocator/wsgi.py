import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geolocator.settings")
application = get_wsgi_application()


def _refuse_bad_settings() -> None:
    """The system checks manage.py runs, run once here too: gunicorn does not start on invalid settings."""
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured

    serious = [message for message in checks.run_checks(include_deployment_checks=False) if message.is_serious()]
    if serious:
        raise ImproperlyConfigured("; ".join(f"{message.id}: {message.msg}" for message in serious))


_refuse_bad_settings()
