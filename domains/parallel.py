"""Forked worker pools that exit cleanly (numpy arrays cross the pipe, never tensors)."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from typing import Any

_PR_SET_PDEATHSIG = 1
logger = logging.getLogger(__name__)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker when its parent dies (even by SIGKILL), so a killed run
    never leaves orphaned workers; elsewhere the pool's own shutdown is all there is."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _init(initializer: Callable[..., None] | None, initargs: tuple[Any, ...], parent: int) -> None:
    # Workers forked inside a Prefect run (or under the CLI) inherit a SIGTERM handler that raises
    # in the parent's code; restore the default so that terminate() simply ends them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def fork_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[Pool]:
    """A ``fork`` pool closed and joined on normal exit, terminated on error or interruption.

    Workers also end when the parent process dies, however it dies (Linux ``PR_SET_PDEATHSIG``).
    A worker still alive ``SHUTDOWN_GRACE_S`` after the pool was closed or terminated is killed
    (``_shutdown``), so the parent never waits forever on one.
    """
    pool = mp.get_context("fork").Pool(
        workers, initializer=_init, initargs=(initializer, initargs, os.getpid())
    )
    try:
        yield pool
    except BaseException:
        _shutdown(pool, pool.terminate)
        raise
    else:
        _shutdown(pool, pool.close)


SHUTDOWN_GRACE_S = 15.0


def _shutdown(pool: Pool, stop: Callable[[], None], grace: float | None = None) -> None:
    """``stop()`` then join the pool, killing (SIGKILL) workers still alive after ``grace`` s.

    A process forked while other threads of the parent held a lock (Prefect's log and event
    threads, for one) can block on that lock forever, ignoring SIGTERM's default action until it
    reaches Python again; ``Pool.terminate`` and ``Pool.join`` then wait on it without a timeout.
    This happened once in the test suite (a pool forked inside a process that had run flows).
    """

    grace = SHUTDOWN_GRACE_S if grace is None else grace

    def finish() -> None:
        stop()
        pool.join()

    finisher = threading.Thread(target=finish, daemon=True)
    finisher.start()
    finisher.join(grace)
    while finisher.is_alive():
        stuck = [p for p in list(getattr(pool, "_pool", [])) if p.exitcode is None]
        for p in stuck:
            logger.warning("pool worker %s did not exit within %.0f s: killing it", p.pid, grace)
            p.kill()
        finisher.join(1.0)
