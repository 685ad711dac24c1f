"""Typed environment variables for settings.py: a bad value stops start-up with one line naming it.

Each reader returns the default when the variable is unset or empty, else the
parsed value, and raises ``ImproperlyConfigured("NAME='value': expected ...")``
when the value does not parse or is out of range, so every process (manage.py,
gunicorn, qcluster) refuses to start on it instead of failing at the first
request. tests/test_settings.py finds every name read (here and elsewhere)
in the source and checks that the table of docs/configuration.md lists it.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def raw(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value is not None and value.strip() != "" else None


def _bad(name: str, value: str, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name}={value!r}: expected {expected}.")


def env_str(name: str, default: str) -> str:
    value = raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = raw(name)
    if value is None:
        return default
    if value.lower() in TRUE | FALSE:
        return value.lower() in TRUE
    raise _bad(name, value, "1/0, true/false, yes/no or on/off")


def _number(name: str, default, kind, minimum, maximum, expected: str):
    value = raw(name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise _bad(name, value, expected) from None
    if number != number or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = [f"{sign} {bound}" for sign, bound in ((">=", minimum), ("<=", maximum)) if bound is not None]
        raise _bad(name, value, " ".join([expected, " and ".join(bounds)]).strip())
    return number


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    return _number(name, default, int, minimum, maximum, "a whole number")


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    return _number(name, default, float, minimum, maximum, "a number")


def env_optional_float(name: str, *, minimum: float | None = None, maximum: float | None = None) -> float | None:
    return _number(name, None, float, minimum, maximum, "a number")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = raw(name)
    if value is None:
        return default
    if value.lower() not in choices:
        raise _bad(name, value, "one of " + ", ".join(choices))
    return value.lower()


def env_list(name: str, default: list[str]) -> list[str]:
    value = raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = raw(name)
    return Path(default if value is None else value)


def env_rate(name: str, default: str) -> str:
    """A throttle rate as DRF reads it: '<count>/<second|minute|hour|day>' (only the unit's first letter counts)."""
    value = raw(name)
    if value is None:
        return default
    count, _, period = value.partition("/")
    if not (count.isdigit() and int(count) > 0 and period[:1].lower() in {"s", "m", "h", "d"}):
        raise _bad(name, value, "a rate such as 120/minute (count per second, minute, hour or day)")
    return value
