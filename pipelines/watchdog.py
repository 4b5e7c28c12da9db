"""A killed ``metascreen`` leaves nothing running: the run's watchdog.

``start()`` (called by the console entry point before any command runs) tags the run: it sets
``METASCREEN_RUN_ID=<random hex>`` in ``os.environ``, so every process the command starts,
directly or through Prefect, Dask or a Prefect worker, inherits the tag in its environment —
Prefect's ephemeral API server, a Dask scheduler's nannies and workers, ``serve``'s server, worker
and the flow runs the worker starts in sessions of their own. It then starts this file as a
script (stdlib only, ``python -I -S``) in a session of its own, so neither Ctrl-C at the terminal
nor a signal to the command's process group reaches it.

The watchdog sleeps until the command's process has exited (a pidfd, else polling its parent
pid), however it exited. It then looks for processes whose environment (``/proc/PID/environ``)
carries the run's tag: after a normal exit, Ctrl-C or SIGTERM there are none (the command stops
what it started) and it exits at once; after a SIGKILL (the OOM killer, a time limit) it sends
them SIGTERM, SIGKILL after a grace period, and exits — within a few seconds.

What it cannot see: processes forked without ``exec`` after the tag was set (``/proc/PID/environ``
shows the environment a process was *executed* with). Those are the forked featurizer pools, which
carry the parent-death signal (``metascreen.domains.parallel``) instead.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

RUN_ID_ENV = "METASCREEN_RUN_ID"
GRACE_S = 3.0
"""Seconds between SIGTERM and SIGKILL for a leftover process."""
LIMIT_S = 8.0
"""The watchdog gives up (and exits) this long after the command ended."""


def start() -> int | None:
    """Tag this process's environment with a new run id and start the watchdog; its pid.

    None where there is no ``/proc`` (not Linux) or the watchdog could not be started (the
    command then runs unguarded, as before).
    """
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"):
        return None
    run_id = os.urandom(12).hex()
    os.environ[RUN_ID_ENV] = run_id  # a nested metascreen gets its own id and its own watchdog
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}  # never its own victim
    stderr = 2 if os.isatty(2) else None  # its one line only reaches a terminal
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    ]
    if stderr is None:
        actions.append((os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0))
    argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), run_id, str(os.getpid())]
    try:
        return os.posix_spawn(
            sys.executable,
            argv,
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGHUP),
        )
    except OSError:
        return None


def tagged(run_id: str, env_name: str = RUN_ID_ENV) -> list[int]:
    """Pids of the live (non-zombie) processes whose environment has ``env_name=run_id``."""
    needle = f"{env_name}={run_id}".encode()
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rpartition(b")")[2].split()[:1]
        except OSError:  # gone, or not ours to read
            continue
        if state != [b"Z"] and needle in environ.split(b"\0"):
            out.append(int(entry))
    return out


def wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` (this process's parent) has exited, however it exited."""
    if os.getppid() != pid:  # already gone (and this process re-parented)
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd (old kernel): poll for re-parenting
        while os.getppid() == pid:
            time.sleep(0.2)
        return
    try:
        select.select([fd], [], [])  # readable once the process has exited
    finally:
        os.close(fd)


def reap(run_id: str, grace: float = GRACE_S, limit: float = LIMIT_S) -> list[int]:
    """SIGTERM every process tagged ``run_id``, SIGKILL those alive ``grace`` s later; the pids.

    Scans again until none is left (a dying Dask nanny may restart its worker) or ``limit`` s.
    """
    first_seen: dict[int, float] = {}
    start = time.monotonic()
    while time.monotonic() - start < limit:
        pids = tagged(run_id)
        if not pids:
            break
        now = time.monotonic()
        for pid in pids:
            if pid not in first_seen:
                first_seen[pid] = now
                sig = signal.SIGTERM
            elif now - first_seen[pid] >= grace:
                sig = signal.SIGKILL
            else:
                continue
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, sig)
        time.sleep(0.1)
    return sorted(first_seen)


def main(argv: list[str]) -> int:
    """``watchdog.py RUN_ID PARENT_PID``: wait for the parent to exit, then reap its run."""
    run_id, parent = argv[0], int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    wait_for_exit(parent)
    pids = reap(run_id)
    if pids:
        sys.stderr.write(
            f"metascreen: pid {parent} ended without stopping what it started; "
            f"stopped {len(pids)} leftover processes ({', '.join(map(str, pids))})\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
