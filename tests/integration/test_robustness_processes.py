"""Signals and concurrency with real processes: SIGTERM/SIGKILL during scoring, two runs on one
output, and registry commands racing each other. Each test takes a few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    """PIDs of ``proc``'s child processes once it has ``n`` of them (the forked featurizers)."""
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "scoring ended before its workers were seen"
        kids = parent.children(recursive=True)
        if len(kids) >= n:
            return [k.pid for k in kids]
        time.sleep(0.05)
    raise AssertionError(f"no {n} worker processes within {timeout}s")


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
