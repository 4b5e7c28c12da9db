"""``LocalStack`` stops every process it started, flow runs in sessions of their own included."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from metascreen.pipelines.stack import LocalStack

pytestmark = pytest.mark.unit

# A stand-in for the worker: it starts a grandchild in a new session (as Prefect starts a flow
# run), writes the grandchild's pid, then waits. ``ignore`` makes the grandchild ignore SIGTERM.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    code = "import signal, time\\n"
    if sys.argv[2] == "ignore":
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    code += "open(sys.argv[1], 'w').write('ready')\\nwhile True: time.sleep(0.1)\\n"
    ready = sys.argv[1] + ".ready"
    child = subprocess.Popen([sys.executable, "-c", code.replace("sys.argv[1]", repr(ready))],
                             start_new_session=True)
    open(sys.argv[1], "w").write(str(child.pid))
    while True:
        time.sleep(0.1)
    """
)


@pytest.mark.parametrize("child", ["obeys", "ignore"])
def test_terminate_reaches_children_in_their_own_session(tmp_path: Path, child: str) -> None:
    pid_file = tmp_path / "pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(pid_file), child], start_new_session=True
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and Path(f"{pid_file}.ready").exists()):
        assert time.monotonic() < deadline, "the stand-in worker did not start its child"
        time.sleep(0.05)
    grandchild = psutil.Process(int(pid_file.read_text()))
    try:
        assert grandchild.ppid() == parent.pid
        assert os.getsid(grandchild.pid) != os.getsid(parent.pid)  # out of the worker's group
        LocalStack._terminate(parent, grace=2)
        assert parent.poll() is not None
        _, alive = psutil.wait_procs([grandchild], timeout=5)
        assert not alive, f"pid {grandchild.pid} ({child}) survived the stack's stop"
    finally:  # leave nothing running, whatever failed
        for proc in (grandchild, psutil.Process(parent.pid) if parent.poll() is None else None):
            if proc is not None and proc.is_running():
                proc.kill()
