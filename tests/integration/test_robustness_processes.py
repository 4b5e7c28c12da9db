"""Signals and concurrency with real processes: SIGTERM/SIGKILL during scoring, two runs on one
output, and registry commands racing each other. Each test takes a few seconds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "data" / "library" / "support.csv"
LIBRARY = REPO / "data" / "library" / "library.csv"
MODEL = REPO / "data" / "artifacts" / "molecules-default-int8"
CLI = [sys.executable, "-m", "metascreen.pipelines.cli.main"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("METASCREEN_REGISTRY", None)
    env["METASCREEN_NO_PROGRESS"] = "1"
    return env


def _library(path: Path, copies: int) -> int:
    df = pd.read_csv(LIBRARY)
    pd.concat([df] * copies, ignore_index=True).to_csv(path, index=False)
    return len(df) * copies


def _score_cmd(lib: Path, out: Path, *extra: str) -> list[str]:
    return [
        *CLI, "score", "molecules", "--support", str(SUPPORT), "--input", str(lib),
        "--output", str(out), "--model", str(MODEL), "--chunk-size", "128", *extra,
    ]  # fmt: skip


def _wait_for_workers(proc: subprocess.Popen[bytes], n: int, timeout: float = 60) -> list[int]:
    """PIDs of ``proc``'s child processes once it has ``n`` of them (the forked featurizers; the
    run's watchdog, in a session of its own, does not count)."""
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "scoring ended before its workers were seen"
        sid = _sid(proc.pid)
        kids = [
            k for k in parent.children(recursive=True) if sid is not None and _sid(k.pid) == sid
        ]
        if len(kids) >= n:
            return [k.pid for k in kids]
        time.sleep(0.05)
    raise AssertionError(f"no {n} worker processes within {timeout}s")


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _gone(pids: list[int], timeout: float = 15) -> list[int]:
    """The pids still alive (zombies count as gone) after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            break
        time.sleep(0.1)
    return alive


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or "partial" in p.name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_scoring_ends_its_workers_and_leaves_nothing(
    sig: signal.Signals, tmp_path: Path
) -> None:
    lib = tmp_path / "lib.csv"
    _library(lib, 20)  # ~60k rows: tens of seconds of scoring, so the signal lands mid-run
    out = tmp_path / "out" / "scores.parquet"
    proc = subprocess.Popen(
        _score_cmd(lib, out),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT;
        # the run under test is a foreground command, so give it the default disposition back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        workers = _wait_for_workers(proc, 2)
        time.sleep(0.5)  # let the pool get busy
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err.decode()
    assert b"Traceback" not in err, err.decode()
    assert _gone(workers) == [], "featurizer workers outlived the interrupted run"
    assert not out.exists()
    assert _partials(out.parent) == []
    assert not out.with_name("scores.quarantine.csv").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_dask_scoring_exits_cleanly_and_keeps_its_work(
    sig: signal.Signals, tmp_path: Path
) -> None:
    """``--workers 2`` (a Dask LocalCluster, no Prefect): SIGTERM/Ctrl-C exit 143/130 without a
    traceback, stop every process of the run and remove the partial outputs; the work folder
    stays for the rerun to resume."""
    env, tag = _tagged_env(tmp_path)
    lib = tmp_path / "lib.csv"
    _library(lib, 20)
    out = tmp_path / "out" / "scores.parquet"
    work = out.parent / ".scores.parquet.work"
    proc = subprocess.Popen(
        _score_cmd(lib, out, "--chunk-size", "512", "--workers", "2"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a foreground shell
    )
    try:
        _wait_until(
            lambda: len(list(work.glob("*/chunk-*[0-9].parquet"))) >= 3, proc, "3 chunks", 180
        )
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        left = _alive_after(tag, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_tagged(tag)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err.decode()
    assert b"Traceback" not in err, err.decode()
    assert left == []
    assert _only_outputs(out.parent) == [".scores.parquet.work"]


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to clean up: the workers' parent-death signal ends them at once.

    Chunks are large (30,000 rows, ~10 s per worker even with the fast featurizer), so without
    it each worker would go on featurizing its chunk well past the 4 s allowed below before
    noticing that nobody reads its results.
    """
    lib = tmp_path / "lib.csv"
    _library(lib, 20)
    out = tmp_path / "scores.parquet"
    proc = subprocess.Popen(
        _score_cmd(lib, out, "--chunk-size", "30000"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        workers = _wait_for_workers(proc, 2)
        time.sleep(0.5)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _gone(workers, timeout=4) == [], "orphaned featurizer workers"
    assert not out.exists()  # only a hidden temporary file can remain after SIGKILL


# A killed run leaves nothing running, a finished one nothing but its outputs. The test tags the
# run's environment with a value of its own and finds the run's processes by it: every process
# the run starts, directly or not, forked or executed, in its session or another, inherits it.
TAG = "METASCREEN_TEST_RUN_TAG"


def _tagged_env(tmp_path: Path) -> tuple[dict[str, str], str]:
    """A run environment tagged ``TAG=<fresh hex>``, with private Prefect home and temp folder."""
    tag = uuid.uuid4().hex
    env = _env()
    env[TAG] = tag
    env.pop("PREFECT_API_URL", None)  # flows start Prefect's temporary server, as for a user
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env, tag


def _tagged(tag: str) -> list[psutil.Process]:
    """The live (not zombie) processes whose environment carries the tag."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get(TAG) == tag and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def _describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
    return out


def _alive_after(tag: str, seconds: float) -> list[str]:
    """The tagged processes still alive after waiting up to ``seconds`` for them to go."""
    deadline = time.monotonic() + seconds
    while (left := _tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return _describe(left)


def _kill_tagged(tag: str) -> None:
    """Test clean-up: whatever failed, leave nothing of the run running."""
    for p in _tagged(tag):
        with contextlib.suppress(psutil.Error):
            p.kill()


def _tagged_server_listening(tag: str) -> bool:
    for p in _tagged(tag):
        with contextlib.suppress(psutil.Error):
            if any(c.status == psutil.CONN_LISTEN for c in p.net_connections(kind="inet")):
                return True
    return False


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before {what}"
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


def _kill_case(case: str, tmp_path: Path) -> tuple[list[str], Callable[[], bool] | None, str]:
    """The command of a case, the condition that says it is mid-run, and what that condition is."""
    if case in ("score", "score-workers"):
        lib = tmp_path / "lib.csv"
        _library(lib, 20)
        out = tmp_path / "out" / "scores.parquet"
        if case == "score":
            return _score_cmd(lib, out, "--chunk-size", "30000"), None, "forked featurizers"
        work = out.parent / ".scores.parquet.work"
        cmd = _score_cmd(lib, out, "--chunk-size", "512", "--workers", "2")
        return cmd, lambda: len(list(work.glob("*/chunk-*[0-9].parquet"))) >= 3, "3 chunks done"
    if case == "flow":  # any --flow command: Prefect's temporary API server
        cmd = [*CLI, "evaluate", "molecules", str(REPO / "data" / "fsmol-sample" / "valid")]
        cmd += ["--model", "rf", "--repeats", "50", "--flow"]
        return cmd, None, "a listening server of the run"
    assert case == "serve"  # a Prefect server, a work pool and a worker
    log = tmp_path / "run.out"
    cmd = [*CLI, "serve", "--port", str(_free_port()), "--home", str(tmp_path / "server-home")]
    cmd += ["--no-deploy", "--results", str(tmp_path / "results")]
    return cmd, lambda: b"prefect server:" in log.read_bytes(), "the stack started"


def _free_port() -> int:
    from metascreen.pipelines.stack import free_port

    return free_port()


@pytest.mark.parametrize("case", ["score", "score-workers", "flow", "serve"])
def test_sigkill_leaves_no_process_of_the_run_alive(case: str, tmp_path: Path) -> None:
    """``kill -9`` of the command (as the OOM killer or a time limit would): 10 s later no process
    the run started is alive — forked featurizers, Dask's nannies and workers, Prefect's temporary
    server, serve's server and worker."""
    env, tag = _tagged_env(tmp_path)
    cmd, ready, what = _kill_case(case, tmp_path)
    with open(tmp_path / "run.out", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        if case == "score":
            _wait_for_workers(proc, 2)
        elif case == "flow":
            _wait_until(lambda: _tagged_server_listening(tag), proc, what, 180)
        else:
            assert ready is not None
            _wait_until(ready, proc, what, 180)
        assert len(_tagged(tag)) >= 2, _describe(_tagged(tag))  # it had started others
        proc.kill()
        proc.wait(30)
        left = _alive_after(tag, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_tagged(tag)
    assert left == [], f"alive 10 s after kill -9 of {case}: {left}"


def _only_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# onnxruntime(-gpu 1.31)'s native library writes one 51-byte ``.ses`` file into the temp folder
# when it loads, rewriting the same file on every load (a session id; not ours to remove).
ONNXRUNTIME_TEMP = {".ses"}


def _temp_files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in ONNXRUNTIME_TEMP
    )


@pytest.mark.parametrize("workers", [None, 2])
def test_finished_run_leaves_only_its_outputs(workers: int | None, tmp_path: Path) -> None:
    """No hidden work folder or lock beside the output, nothing in the temp folder, nothing
    running."""
    env, tag = _tagged_env(tmp_path)
    lib = tmp_path / "lib.csv"
    _library(lib, 1)
    out = tmp_path / "out" / "scores.parquet"
    extra = ["--workers", str(workers)] if workers else []
    try:
        res = subprocess.run(
            _score_cmd(lib, out, "--chunk-size", "512", *extra),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        left = _alive_after(tag, 5)
    finally:
        _kill_tagged(tag)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _only_outputs(out.parent) == ["scores.parquet", "scores.quarantine.csv"]
    assert _temp_files(tmp_path / "tmp") == []
    assert left == []


def test_two_scoring_runs_on_one_output(tmp_path: Path) -> None:
    """Both complete the same correct file, or the second refuses clearly; never a torn file."""
    lib = tmp_path / "lib.csv"
    n_rows = 400
    lib.write_text("".join(LIBRARY.read_text().splitlines(keepends=True)[: n_rows + 1]))
    out = tmp_path / "scores.parquet"
    procs = [
        subprocess.Popen(
            _score_cmd(lib, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for rc, err in results:
        assert "Traceback" not in err, err
        if rc == 2:
            assert err.strip().startswith("error: ") and "another metascreen run" in err, err
    scored = pd.read_parquet(out)
    q = tmp_path / "scores.quarantine.csv"
    n_q = len(pd.read_csv(q)) if q.exists() else 0
    assert len(scored) + n_q == n_rows
    assert scored["row"].is_unique
    assert _partials(tmp_path) == []


_RACER = """
import random, sys
from metascreen.models.registry.store import ModelRegistry
reg, n, seed = ModelRegistry(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
done = 0
for _ in range(n):
    if rng.random() < 0.6:
        reg.promote("molecules", rng.choice(reg.versions("molecules")), reason=f"racer {seed}")
    else:
        reg.rollback("molecules")
    done += 1
print(done)
"""


def test_concurrent_registry_commands_keep_current_and_decisions_consistent(
    tmp_path: Path,
) -> None:
    from metascreen.models.registry.store import ModelRegistry

    reg_dir = tmp_path / "reg"
    reg = ModelRegistry(reg_dir)
    for _ in range(3):
        reg.register(MODEL)
    reg.promote("molecules", "v0001")
    reg.promote("molecules", "v0002")
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(reg_dir), "12", str(seed)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for seed in range(4)
    ]
    cli = [
        subprocess.Popen(
            [*CLI, *args, "--registry", str(reg_dir)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for args in (
            ["models", "register", str(MODEL), "--promote"],
            ["models", "register", str(MODEL)],
            ["models", "promote", "molecules", "v0003"],
            ["models", "rollback"],
            ["models", "promote", "molecules", "v0001"],
        )
    ]
    switches = 0
    for p in racers:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()
        switches += int(out.decode().strip())
    for p in cli:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, (out.decode(), err.decode())
        assert b"Traceback" not in err
    switches += 4  # the CLI's --promote, promote, rollback, promote

    versions = reg.versions("molecules")
    assert versions == [f"v{i:04d}" for i in range(1, 6)]  # contiguous, none lost or doubled
    for v in versions:
        assert (reg_dir / "molecules" / v / "registry.json").exists()
    current = reg.current_version("molecules")
    assert current in versions
    reg.resolve("molecules")  # the current version verifies
    lines = (reg_dir / "molecules" / "decisions.jsonl").read_text().splitlines()
    decisions = [json.loads(line) for line in lines]  # every line complete JSON
    assert len(decisions) == 2 + switches
    for before, after in zip(decisions, decisions[1:], strict=False):
        assert after["from"] == before["to"], (before, after)  # the log is the pointer's history
    assert decisions[-1]["to"] == current
    assert not [p.name for p in (reg_dir / "molecules").iterdir() if p.name.startswith(".")]


def _listening_ports(ignore_owners_other_than: str) -> set[tuple[str, int]]:
    """Listening TCP ports, less those held by processes that are neither tagged with
    ``ignore_owners_other_than`` nor descendants of this test (other users of the machine)."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    mine |= {p.pid for p in _tagged(ignore_owners_other_than)}
    ports = set()
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and (c.pid is None or c.pid in mine):
            ports.add((c.laddr.ip, c.laddr.port))
    return ports


def _footprint(tag: str, temp: Path) -> dict[str, object]:
    me = psutil.Process()
    return {
        "tagged processes": _describe(_tagged(tag)),
        "child processes": sorted(p.pid for p in me.children(recursive=True)),
        "open fds": me.num_fds(),
        "listening ports": sorted(_listening_ports(tag)),
        "temp files": _temp_files(temp),
    }


def _shm() -> set[str]:
    """POSIX shared memory and semaphores (``/dev/shm``; multiprocessing's ``sem.mp-*``)."""
    shm = Path("/dev/shm")
    return {p.name for p in shm.iterdir()} if shm.is_dir() else set()


def _check_exact(out: Path, n_rows: int) -> None:
    """Every input row once: scored or quarantined, none lost, none twice."""
    scored = pd.read_parquet(out)["row"].tolist()
    q = out.with_name(out.stem + ".quarantine.csv")
    quarantined = pd.read_csv(q)["row"].tolist() if q.exists() else []
    assert sorted(scored + quarantined) == list(range(n_rows))


@pytest.mark.slow
def test_soak_runs_and_killed_reruns_leave_the_machine_as_they_found_it(tmp_path: Path) -> None:
    """20 scoring runs in a row (one process and ``--workers 2`` in turn), then 5 ``--workers 2``
    runs each SIGKILLed mid-run and rerun: each rerun resumes and is exact, each run leaves only
    its outputs, and afterwards no process of theirs is alive and this process's children and open
    descriptors, the listening ports, the temp folder and /dev/shm are as before (~8 min on two
    busy cores)."""
    env, tag = _tagged_env(tmp_path)
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    n_small, n_big = _library(small, 1), _library(big, 10)
    out = tmp_path / "out" / "scores.parquet"
    outputs = ["scores.parquet", "scores.quarantine.csv"]
    before, shm_before = _footprint(tag, tmp_path / "tmp"), _shm()
    try:
        for i in range(20):
            extra = ["--workers", "2"] if i % 2 else []
            res = subprocess.run(
                _score_cmd(small, out, "--chunk-size", "512", *extra),
                env=env, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert res.returncode == 0, (i, res.stderr[-3000:])
            _check_exact(out, n_small)
            assert _only_outputs(out.parent) == outputs, i
            assert _alive_after(tag, 5) == [], i
        work = out.parent / ".scores.parquet.work"
        cmd = _score_cmd(big, out, "--chunk-size", "512", "--workers", "2")
        for i in range(5):
            proc = subprocess.Popen(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                _wait_until(
                    lambda: len(list(work.glob("*/chunk-*[0-9].parquet"))) >= 3,
                    proc, "3 chunks done", 180,
                )  # fmt: skip
            finally:
                proc.kill()
                proc.wait(30)
            assert _alive_after(tag, 10) == [], i
            done = len(list(work.glob("*/chunk-*[0-9].parquet")))
            res = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            assert res.returncode == 0, (i, res.stderr[-3000:])
            assert f"resumed: {done} of " in res.stdout, (i, done, res.stdout)
            _check_exact(out, n_big)
            assert _only_outputs(out.parent) == outputs, i
            assert _alive_after(tag, 5) == [], i
    finally:
        _kill_tagged(tag)
    assert _footprint(tag, tmp_path / "tmp") == before
    new_shm = _shm() - shm_before
    if new_shm:  # other users' semaphores come and go: only those that stay count
        time.sleep(5)
        new_shm &= _shm()
    assert not new_shm
