"""Who is asking: the client address every per-client limit is keyed on.

The address is the connection's (REMOTE_ADDR) unless the service runs behind
DJANGO_NUM_PROXIES trusted proxies, which append the address they saw to
X-Forwarded-For: then it is the entry that many places from the right, the
one the outermost trusted proxy wrote. Entries further left come from the
client and are never trusted, so a client cannot choose its own identity.
The lookup throttles (api/throttles.py) and the admin login lockout
(django-axes, AXES_CLIENT_IP_CALLABLE) both use this one function.
"""

from django.conf import settings


def client_ip(request) -> str:
    remote = request.META.get("REMOTE_ADDR", "") or ""
    proxies = settings.GEOLOCATOR_NUM_PROXIES
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not forwarded:
        return remote
    return forwarded[-min(proxies, len(forwarded))]
