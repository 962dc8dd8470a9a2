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
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from verifier import Registry, RunningServer

EXIT_WATCHDOG_S = 30.0  # after the drain grace: how long stopping the server and closing may take
HEAP_TRIM_INTERVAL_S = 10.0  # how often ``verifier serve`` hands freed heap back to the system (``HeapTrimmer``)
MALLOC_ARENAS = 2  # glibc malloc arenas for the server process (``limit_malloc_arenas``)
_M_ARENA_MAX = -8  # glibc's mallopt parameter number for the arena count (malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> str:
    """At ``verifier serve`` start, before the gRPC server's threads exist: at most ``arenas`` glibc malloc
    arenas, as ``MALLOC_ARENA_MAX`` would set (glibc otherwise gives each thread that allocates under contention
    an arena of its own, up to 8 per core, and memory freed in one is not reused by another). An operator's own
    ``MALLOC_ARENA_MAX`` is left as it is; elsewhere than glibc nothing changes. Measured under reconnect storms:
    docs/results/load_hostile.md. Returns what was done, for the log."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):
        return f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']} from the environment"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None) if libc is not None else None
        if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
            return "malloc arenas not limited (not glibc)"
        if mallopt(_M_ARENA_MAX, int(arenas)) != 1:
            return "malloc arenas not limited (mallopt refused)"
    except OSError:
        return "malloc arenas not limited (no C library found)"
    return f"malloc arenas limited to {arenas}"


def _libc_trim() -> Callable[[], object] | None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    return (lambda: trim(0)) if trim is not None else None


class HeapTrimmer:
    """Every ``interval_s``, glibc's ``malloc_trim(0)`` on a daemon thread of its own: memory that grpc and TLS
    freed (a storm of connections opened and dropped) goes back to the system instead of staying in the
    allocator's free lists, where it made the server's resident set grow storm after storm (measured:
    docs/results/load_hostile.md). ``start`` returns False (and does nothing) where there is no glibc."""

    def __init__(self, interval_s: float = 10.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.trims = 0
        self._stop = threading.Event()
        self._trim = _libc_trim()

    def start(self) -> bool:
        if self._trim is None:
            return False
        threading.Thread(target=self._run, name="pawprint-heap-trim", daemon=True).start()
        return True

    def _run(self) -> None:
        assert self._trim is not None
        while not self._stop.wait(self.interval_s):
            self._trim()
            self.trims += 1

    def stop(self) -> None:
        self._stop.set()


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
