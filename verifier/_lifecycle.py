"""The verifier server's process life cycle once it is listening: wait for SIGTERM or SIGINT, drain, stop,
close the registry and end the process.

``run_until_signalled`` is what ``pawprint verifier serve`` calls after ``start``; it never returns: the
process ends with ``os._exit`` once everything is durable, so that threads left behind (the gRPC server's
workers, a call that ignored cancellation) cannot keep it alive, and a faulthandler watchdog dumps every
thread's stack and exits 1 should anything hang on the way there.

It uses the verifier's public types only (``RunningServer``, ``Registry``), and at run time only their
methods: no owner agent, no CLI.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from verifier import Registry, RunningServer

EXIT_WATCHDOG_S = 30.0  # after the drain grace: how long stopping the server and closing may take


def run_until_signalled(running: RunningServer, registry: Registry, *, drain_grace_s: float,
                        logger: logging.Logger) -> NoReturn:
    """Serve until SIGTERM or SIGINT, then drain (up to ``drain_grace_s``), stop, close ``registry`` and
    end the process with status 0 (1 from the watchdog if stopping hangs). Call it on the main thread."""
    # The handler only appends to a list: it runs on the main thread between any two bytecodes, so it must
    # take no lock (an Event.set() there deadlocks when the signal lands while the main thread holds the
    # Event's own lock inside wait()).
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        while not received:
            time.sleep(0.2)  # a signal cuts the sleep short
        # Watchdog: should anything keep the process from ending (a call that ignores cancellation, a thread
        # that does not return), every thread's stack goes to stderr and the process exits 1, rather than
        # hanging under a supervisor that is waiting for it.
        faulthandler.dump_traceback_later(drain_grace_s + EXIT_WATCHDOG_S, exit=True)
        logger.info("shutting down: health NOT_SERVING, draining for up to %.0f s", drain_grace_s)
        drained = running.shutdown()
        logger.info("stopped (%s)", "drained" if drained else "in-flight calls cut off at the grace period")
    finally:
        # The handlers stay: a second SIGTERM while draining or closing is only recorded, and the command ends
        # with the process.
        running.server.stop(grace=0).wait(EXIT_WATCHDOG_S)
        registry.close()
    # Everything is durable now: the server has stopped and the registry is closed. Threads left behind (the
    # gRPC server's workers, a call that ignored cancellation) must not keep the process from ending, as the
    # interpreter's exit would by joining them: end here, saying how many there were.
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    logger.info("exiting; %d non-daemon threads not joined", len(others))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
