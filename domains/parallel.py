"""Forked worker pools that exit cleanly (numpy arrays cross the pipe, never tensors)."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from typing import Any

_PR_SET_PDEATHSIG = 1


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
    """
    pool = mp.get_context("fork").Pool(
        workers, initializer=_init, initargs=(initializer, initargs, os.getpid())
    )
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    else:
        pool.close()
        pool.join()
