"""System checks: settings that are invalid, contradictory or would undo a protection stop or warn at start-up.

manage.py commands (runserver, migrate, qcluster) run them; the WSGI application runs them when
gunicorn loads it. Values that do not parse at all are refused earlier, by geolocator/env.py.
"""

from django.conf import settings
from django.core.checks import Error, Warning, register


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


@register()
def media_in_a_bucket_are_served(app_configs, **kwargs):
    if not settings.GEOLOCATOR_SERVE_MEDIA and settings.MEDIA_ON_S3:
        return [
            Warning(
                "GEOLOCATOR_SERVE_MEDIA=0 with media in a bucket: photo URLs (/media/...) reach no one unless the web "
                "server in front fetches the private objects from the bucket itself.",
                hint="Let Django serve /media/ (GEOLOCATOR_SERVE_MEDIA=1; GEOLOCATOR_MEDIA_REDIRECT=1 sends the bytes "
                "straight from the bucket).",
                id="similarity.W003",
            )
        ]
    return []


@register()
def encoder_spec_is_valid(app_configs, **kwargs):
    """A mistyped SIMILARITY_ENCODER stops start-up, not the first lookup (nothing is loaded here)."""
    from similarity.runtime.encoders import EncoderUnavailable
    from similarity.runtime.registry import encoder_from_spec

    spec = (settings.SIMILARITY_ENCODER or "auto").strip()
    if spec == "auto":
        return []
    try:
        encoder_from_spec(spec)
    except EncoderUnavailable as exc:
        return [
            Error(
                str(exc),
                hint="Set SIMILARITY_ENCODER to auto, efficientnet_lite0@384 or "
                "open_clip:<model>/<pretrained tag or weights file>.",
                id="similarity.E001",
            )
        ]
    return []


@register()
def limits_agree(app_configs, **kwargs):
    """Settings that are each valid but contradict one another."""
    errors = []
    if settings.SIMILARITY_MAX_LOOKUP_PIXELS > settings.SIMILARITY_MAX_IMAGE_PIXELS:
        errors.append(
            Error(
                "SIMILARITY_MAX_LOOKUP_PIXELS is above SIMILARITY_MAX_IMAGE_PIXELS: lookups may not decode more than "
                "curated uploads.",
                id="similarity.E002",
            )
        )
    if settings.SIMILARITY_VERIFY_TOP_N < settings.SIMILARITY_DEFAULT_TOP_K and settings.SIMILARITY_VERIFY != "off":
        errors.append(
            Warning(
                "SIMILARITY_VERIFY_TOP_N is below the default top_k: only the first matches are verified.",
                id="similarity.W002",
            )
        )
    return errors
