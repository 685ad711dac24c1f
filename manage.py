#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "geolocator.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:  # missing or bad settings: one readable line, no traceback
        sys.exit(f"Configuration error: {exc}")


if __name__ == "__main__":
    main()
