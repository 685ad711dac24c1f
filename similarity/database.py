"""The database connection's settings, and how long the service waits for its database: bounded, so a server
that hangs costs seconds, not the instance.

Three layers, each enforced where it can be (settings.py passes the first two to libpq):

* PostgreSQL cancels a statement after DATABASE_STATEMENT_TIMEOUT (``options=-c statement_timeout``)
  and ends a session left idle inside a transaction;
* libpq gives up connecting after DATABASE_CONNECT_TIMEOUT, and the kernel drops a connection
  whose peer is gone: TCP keepalives probe an idle one, ``tcp_user_timeout`` bounds how long
  sent data may stay unacknowledged;
* neither helps when the peer is there but silent (a frozen proxy acknowledges every byte and
  forwards none): psycopg2's wait callback gives each wait for the server a deadline, the
  statement timeout plus DEADLINE_MARGIN_SECONDS (the connect timeout while connecting).

At the deadline the callback only raises OperationalError. It must not close the
connection itself: psycopg2 runs a statement's wait while holding the connection's
lock, and ``close()`` takes that lock, so a close from inside the wait blocks that
thread for good (and every thread that needs the connection after it). On an error
from the callback psycopg2 closes the connection itself, under the lock it holds;
Django then drops it and the next request connects afresh.

One request must not pay for both bounds in a row: Django's health check finds the
silent connection after the statement bound and at once connects again, which would
add the connect timeout. So once an established connection has gone silent, the
process does not try to connect for the next connect timeout's worth of seconds (an
immediate OperationalError instead): a request waits at most the longer of the two
bounds, and the service tries again by itself seconds later.
"""

import select
import time
from pathlib import Path

DEADLINE_MARGIN_SECONDS = 2


def make_wait_with_deadline(connect_seconds: float, seconds: float | None):
    """A psycopg2 wait callback that gives up after ``seconds`` without an answer (None: never), or
    ``connect_seconds`` while the connection is being established (in this non-blocking mode libpq leaves
    its own connect_timeout to the caller)."""
    from psycopg2 import OperationalError, extensions

    silent_until = 0.0  # time.monotonic() before which this process does not try to connect

    def wait(connection):
        nonlocal silent_until
        connecting = connection.status == extensions.STATUS_SETUP
        if connecting and time.monotonic() < silent_until:
            raise OperationalError("the database went silent moments ago; not connecting again yet")
        seconds_here = connect_seconds if connecting else seconds
        deadline = time.monotonic() + seconds_here if seconds_here is not None else None
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            remaining = deadline - time.monotonic() if deadline is not None else None
            if remaining is not None and remaining <= 0:
                if not connecting:
                    silent_until = time.monotonic() + connect_seconds
                # only raise: psycopg2 closes the connection on this error (see the module's docstring)
                raise OperationalError(f"the database did not answer within {seconds_here:.0f} s")
            if state == extensions.POLL_READ:
                select.select([connection.fileno()], [], [], remaining)
            elif state == extensions.POLL_WRITE:
                select.select([], [connection.fileno()], [], remaining)
            else:
                raise OperationalError(f"unexpected state from the database connection: {state}")

    return wait


def wait_bound_seconds(statement_timeout_seconds: float) -> float | None:
    """The longest a request thread waits for one answer from an established connection (None: no bound,
    when DATABASE_STATEMENT_TIMEOUT is 0)."""
    return statement_timeout_seconds + DEADLINE_MARGIN_SECONDS if statement_timeout_seconds else None


def bound_waits(connect_timeout_seconds: float, statement_timeout_seconds: float) -> None:
    """Make every psycopg2 wait in this process end by its deadline (no-op without psycopg2)."""
    try:
        from psycopg2 import extensions
    except ImportError:
        return
    extensions.set_wait_callback(
        make_wait_with_deadline(connect_timeout_seconds, wait_bound_seconds(statement_timeout_seconds))
    )


def libpq_options(connect_timeout_seconds: int, statement_timeout_seconds: int) -> dict:
    """Connection parameters that let PostgreSQL and the kernel end waits on their own."""
    bound = wait_bound_seconds(statement_timeout_seconds)
    bound_ms = int(bound * 1000) if bound is not None else 0  # 0 turns the timeouts off, as in PostgreSQL
    server_settings = [f"-c statement_timeout={statement_timeout_seconds * 1000}"]
    if bound_ms:
        server_settings.append(f"-c idle_in_transaction_session_timeout={max(60_000, 2 * bound_ms)}")
    return {
        "connect_timeout": connect_timeout_seconds,
        "options": " ".join(server_settings),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": bound_ms,
    }


def database_settings(url: str, *, conn_max_age: int, connect_timeout: int, statement_timeout: int) -> dict:
    """settings.DATABASES["default"] for ``url``: PostgreSQL with the bounded waits above; SQLite as one file
    that the web server and the worker share."""
    import dj_database_url

    database: dict = dict(dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=True))
    options = database.setdefault("OPTIONS", {})
    if database["ENGINE"] == "django.db.backends.postgresql":
        options.update(libpq_options(connect_timeout, statement_timeout))
    elif database["ENGINE"] == "django.db.backends.sqlite3":
        Path(database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # Wait for locks instead of failing. In WAL mode, readers and the one writer do not block each other,
        # and a commit syncs one file, not two (synchronous stays FULL: a committed change survives a power cut).
        options.update(timeout=20, init_command="PRAGMA journal_mode=WAL;")
        database["CONN_MAX_AGE"] = 0
    return database
