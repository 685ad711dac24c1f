"""Who is asking: the client address, and the network every per-client limit is keyed on.

The address is the connection's (REMOTE_ADDR) unless the service runs behind
DJANGO_NUM_PROXIES trusted proxies, which append the address they saw to
X-Forwarded-For: then it is the entry that many places from the right, the
one the outermost trusted proxy wrote. Entries further left come from the
client and are never trusted, so a client cannot choose its own identity.
A forwarded value that is not an IP address is refused
(:class:`UnreadableClientAddress`, a 400 from web/middleware.py), never
stored or used as a key.

Limits count per *network*, not per address: one IPv6 subscriber usually
holds a whole /64 and could otherwise take a fresh budget per address. A
client's network (IPv4 /32 and IPv6 /64 by default; DJANGO_CLIENT_IPV4_PREFIX,
DJANGO_CLIENT_IPV6_PREFIX) is named by its first address, itself a valid IP,
so it fits the database's address columns. The lookup budgets
(api/throttles.py) and the admin login lockout (django-axes,
AXES_CLIENT_IP_CALLABLE) both key on :func:`client_network`.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings

NO_ADDRESS = ipaddress.ip_address("0.0.0.0")  # a connection without one (a Unix socket): one client
MAX_ADDRESS_LENGTH = 64  # an IPv6 address with a zone is at most about 50 characters


class UnreadableClientAddress(ValueError):
    """The address a trusted proxy forwarded is not an IP address; the message says so (without echoing it)."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> IPAddress | None:
    if len(text) > MAX_ADDRESS_LENGTH:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # a zone names the server's interface: dropped
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(request) -> IPAddress:
    """The client's address (see the module's docstring); UnreadableClientAddress for a forwarded non-address."""
    remote = _parse((request.META.get("REMOTE_ADDR") or "").strip()) or NO_ADDRESS
    proxies = settings.GEOLOCATOR_NUM_PROXIES
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not forwarded:
        return remote
    address = _parse(forwarded[-min(proxies, len(forwarded))])
    if address is None:
        raise UnreadableClientAddress("The X-Forwarded-For header does not hold a valid client IP address.")
    return address


def network_of(address: IPAddress) -> str:
    """The first address of ``address``'s network at the configured prefix length, as text."""
    prefix = settings.GEOLOCATOR_CLIENT_IPV4_PREFIX if address.version == 4 else settings.GEOLOCATOR_CLIENT_IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def client_ip(request) -> str:
    """The client's address as text (what a proposal records)."""
    return str(client_address(request))


def client_network(request) -> str:
    """The client's network, the identity every per-client limit counts on (computed once per request)."""
    cached = getattr(request, "_client_network", None)
    if cached is None:
        cached = request._client_network = network_of(client_address(request))
    return cached
