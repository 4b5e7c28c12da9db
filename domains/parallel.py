"""Forked worker pools that exit cleanly (numpy arrays cross the pipe, never tensors)."""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from typing import Any


def _init(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    # Workers forked inside a Prefect run inherit its SIGTERM handler, which turns the pool's own
    # shutdown into tracebacks; restore the default handler.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def fork_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[Pool]:
    """A ``fork`` pool closed and joined on normal exit, terminated on error."""
    pool = mp.get_context("fork").Pool(workers, initializer=_init, initargs=(initializer, initargs))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    else:
        pool.close()
        pool.join()
