"""System checks: settings that would undo a protection are reported at start-up (manage.py check)."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def media_follow_the_lookup_policy(app_configs, **kwargs):
    if not settings.GEOLOCATOR_SERVE_MEDIA and not settings.SIMILARITY_PUBLIC_LOOKUPS:
        return [
            Warning(
                "GEOLOCATOR_SERVE_MEDIA=0 with SIMILARITY_PUBLIC_LOOKUPS=0: the web server in front serves the "
                "photos without asking who is looking.",
                hint="Let Django serve /media/ (GEOLOCATOR_SERVE_MEDIA=1), or require a login for /media/ at the web server.",
                id="similarity.W001",
            )
        ]
    return []
