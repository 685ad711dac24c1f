"""python manage.py serve [addrport]: the web server and a worker together, for `make run`.

Starts ``manage.py qcluster`` and ``manage.py runserver --noreload`` as child
processes in this command's process group. SIGTERM, SIGINT or SIGHUP (a
supervisor, ``timeout``, Ctrl-C, a closed terminal) stop both: each gets
SIGTERM, then SIGKILL if it has not exited within ``--grace`` seconds. When
either exits on its own, the other is stopped too, and the command exits
with the first one's status.
"""

import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Command(BaseCommand):
    help = "Run the development web server and a django-q2 worker; a stop signal stops both."
    requires_system_checks: list = []  # runserver checks, in its own process

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000", help="Where the web server listens.")
        parser.add_argument("--grace", type=float, default=20.0, help="Seconds a child gets to stop on SIGTERM.")

    def handle(self, *args, addrport, grace, **options):
        stop_requested: list[int] = []
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda number, frame: stop_requested.append(number))
        manage = [sys.executable, sys.argv[0]]
        children = {
            "worker": subprocess.Popen([*manage, "qcluster"]),
            "web server": subprocess.Popen([*manage, "runserver", "--noreload", addrport]),
        }
        status = 0
        while not stop_requested:
            exited = {name: child.returncode for name, child in children.items() if child.poll() is not None}
            if exited:
                name, status = next(iter(exited.items()))
                self.stderr.write(f"The {name} exited ({status}): stopping the rest.")
                break
            time.sleep(0.2)
        self.stop(children.values(), grace)
        if status:
            sys.exit(status)

    @staticmethod
    def stop(children, grace: float) -> None:
        running = [child for child in children if child.poll() is None]
        for child in running:
            child.terminate()
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
