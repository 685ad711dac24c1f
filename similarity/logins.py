"""Which failed admin logins lock a login out (django-axes' AXES_LOCKOUT_PARAMETERS).

Failures always count per account and client network (clients.client_network):
DJANGO_LOGIN_FAILURE_LIMIT of them lock that account out from that network for
the cool-off time. That alone lets an attacker with many networks guess one
account's password without end, so failures also count per account across all
networks: once an account has DJANGO_LOGIN_ACCOUNT_FAILURE_LIMIT failures within
the cool-off, it is locked out from every network it has never signed in from.
The networks its owner signed in from (axes' access log, the last
KNOWN_NETWORK_DAYS days) keep only the per-network count, so an attacker
cannot lock a curator out from the curator's own network.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone

KNOWN_NETWORK_DAYS = 90
PER_NETWORK = ["username", "ip_address"]


def lockout_parameters(request_or_attempt, credentials=None) -> list:
    """The failures to count for this login: per account and network, and per account from an unknown network
    once the account has had too many failures everywhere."""
    if not isinstance(request_or_attempt, HttpRequest):
        return [PER_NETWORK]
    from axes.helpers import get_client_username

    from similarity.clients import client_network

    username = get_client_username(request_or_attempt, credentials)
    if not username:
        return [PER_NETWORK]
    if account_failures(username) < settings.GEOLOCATOR_LOGIN_ACCOUNT_FAILURE_LIMIT:
        return [PER_NETWORK]
    if signed_in_from(username, client_network(request_or_attempt)):
        return [PER_NETWORK]
    return [PER_NETWORK, "username"]


def account_failures(username: str) -> int:
    """The account's failed logins within the cool-off time, from every network."""
    from axes.models import AccessAttempt

    since = timezone.now() - settings.AXES_COOLOFF_TIME
    recent = AccessAttempt.objects.filter(username=username, attempt_time__gte=since)
    return recent.aggregate(total=Sum("failures_since_start"))["total"] or 0


def signed_in_from(username: str, network: str) -> bool:
    """Whether the account signed in successfully from ``network`` lately."""
    from axes.models import AccessLog

    since = timezone.now() - timedelta(days=KNOWN_NETWORK_DAYS)
    return AccessLog.objects.filter(username=username, ip_address=network, attempt_time__gte=since).exists()
