"""The run watchdog: a SIGKILLed command's processes are stopped, a finished one's are left alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from metascreen.pipelines import watchdog

pytestmark = pytest.mark.unit

# A stand-in for the command: tags itself and starts its watchdog as ``main()`` does, then starts a
# child in a session of its own (as Prefect starts its server or a flow run), which ignores SIGTERM
# when asked; writes "<watchdog pid> <child pid>" and waits, or exits when told to.
COMMAND = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from metascreen.pipelines import watchdog
    guard = watchdog.start()
    code = "import signal, time\\n"
    if sys.argv[2] == "ignore":
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    code += "while True: time.sleep(0.1)\\n"
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    open(sys.argv[1] + ".tmp", "w").write(f"{guard} {child.pid} {os.environ['METASCREEN_RUN_ID']}")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    if sys.argv[3] == "exit":
        child.terminate()
        child.wait()
        sys.exit(0)
    while True:
        time.sleep(0.1)
    """
)


def _start(tmp_path: Path, child: str, then: str) -> tuple[subprocess.Popen[bytes], list[str]]:
    pids = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", COMMAND, str(pids), child, then])
    deadline = time.monotonic() + 60
    while not pids.exists():
        assert time.monotonic() < deadline, "the stand-in command did not start"
        assert then == "exit" or proc.poll() is None
        time.sleep(0.05)
    return proc, pids.read_text().split()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("child", ["obeys", "ignore"])
def test_sigkill_of_the_command_stops_what_it_started(tmp_path: Path, child: str) -> None:
    proc, (guard, kid, run_id) = _start(tmp_path, child, "wait")
    try:
        assert os.getsid(int(guard)) not in (os.getsid(proc.pid), os.getsid(int(kid)))
        assert watchdog.tagged(run_id) == [int(kid)]  # the command itself predates its tag
        proc.kill()
        proc.wait(10)
        # SIGTERM, then SIGKILL after the grace period for one that ignores it
        assert _wait_gone([int(kid), int(guard)], watchdog.GRACE_S + 5) == []
    finally:
        for pid in (kid, guard):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def test_a_command_that_exits_leaves_its_watchdog_nothing_to_do(tmp_path: Path) -> None:
    proc, (guard, kid, run_id) = _start(tmp_path, "obeys", "exit")
    assert proc.wait(30) == 0
    assert _wait_gone([int(guard)], 5) == []  # it exits at once
    assert not _alive(int(kid))
    assert watchdog.tagged(run_id) == []


def test_tagged_matches_the_whole_entry_only(tmp_path: Path) -> None:
    env = {**os.environ, "METASCREEN_RUN_ID": "abc123"}
    code = "import time; time.sleep(30)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env={**env, "METASCREEN_RUN_ID": value})
        for value in ("abc123", "abc1234", "xabc123")
    ]
    try:
        deadline = time.monotonic() + 10
        while not (found := watchdog.tagged("abc123")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found == [procs[0].pid]
    finally:
        for p in procs:
            p.kill()
            p.wait()
