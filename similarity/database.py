"""How long the service waits for its database: bounded, so a server that hangs costs seconds, not the instance.

* connecting: DATABASE_CONNECT_TIMEOUT (also given to libpq as ``connect_timeout``);
* statements: PostgreSQL's ``statement_timeout`` (DATABASE_STATEMENT_TIMEOUT),
  so the server cancels a runaway query itself;
* every wait for the server, connecting included: psycopg2's wait callback
  with a deadline a little past the statement timeout. A server that
  accepts and then never answers (a stopped process, a wedged proxy) would
  otherwise hold a request thread forever: after the deadline the
  connection is closed and the wait ends in OperationalError, which the
  service answers as any database outage (503).
"""

import select
import time

DEADLINE_MARGIN_SECONDS = 5


def make_wait_with_deadline(connect_seconds: float, seconds: float):
    """A psycopg2 wait callback that gives up on a connection after ``seconds`` without an answer
    (``connect_seconds`` while it is being established: in this non-blocking mode libpq leaves its
    own connect_timeout to the caller)."""
    from psycopg2 import OperationalError, extensions

    def wait(connection):
        seconds_here = connect_seconds if connection.status == extensions.STATUS_SETUP else seconds
        deadline = time.monotonic() + seconds_here
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                connection.close()  # mid-protocol: nothing more can be read from it
                raise OperationalError(f"the database did not answer within {seconds_here:.0f} s")
            if state == extensions.POLL_READ:
                select.select([connection.fileno()], [], [], remaining)
            elif state == extensions.POLL_WRITE:
                select.select([], [connection.fileno()], [], remaining)
            else:
                raise OperationalError(f"unexpected state from the database connection: {state}")

    return wait


def bound_waits(connect_timeout_seconds: float, statement_timeout_seconds: float) -> None:
    """Make every psycopg2 wait in this process end by its deadline (no-op without psycopg2)."""
    try:
        from psycopg2 import extensions
    except ImportError:
        return
    extensions.set_wait_callback(
        make_wait_with_deadline(connect_timeout_seconds, statement_timeout_seconds + DEADLINE_MARGIN_SECONDS)
    )
