"""Forked worker pools: a worker that will not exit never keeps the parent waiting forever."""

from __future__ import annotations

import signal
import time

import pytest

from metascreen.domains import parallel

pytestmark = pytest.mark.unit


def _deaf_to_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a worker blocked outside Python would be


def _square(x: int) -> int:
    return x * x


def test_a_worker_that_ignores_terminate_is_killed_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parallel, "SHUTDOWN_GRACE_S", 1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="downstream"):
        _fail_inside_a_busy_pool()
    assert time.monotonic() - start < 10  # not the task's 60 s, nor forever


def _fail_inside_a_busy_pool() -> None:
    with parallel.fork_pool(1, _deaf_to_sigterm) as pool:
        pool.apply_async(time.sleep, (60,))
        time.sleep(0.3)  # the worker is busy in its task
        raise RuntimeError("downstream failure")


def test_a_normal_pool_closes_and_returns_results() -> None:
    with parallel.fork_pool(2) as pool:
        assert list(pool.imap(_square, range(5))) == [0, 1, 4, 9, 16]
