"""Dask-distributed scoring: same output as one process; a killed run resumes without redoing chunks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from metascreen.models.serving.molecules import score_library
from tiny_data import make_smiles

pytestmark = pytest.mark.integration


def _inputs(tmp_path: Path, n: int) -> tuple[Path, Path]:
    rows = make_smiles(300, seed=7)  # the generator has a few hundred distinct molecules
    pd.DataFrame(rows[:12], columns=["SMILES", "label"]).astype({"label": int}).to_csv(
        tmp_path / "support.csv", index=False
    )
    lib = [rows[12 + i % 288][0] for i in range(n)]
    for i in range(0, len(lib), 97):  # invalid rows spread over many chunks
        lib[i] = "C1CC" if i % 2 else ""
    pd.DataFrame({"id": [f"m{i}" for i in range(len(lib))], "SMILES": lib}).to_csv(
        tmp_path / "lib.csv", index=False
    )
    return tmp_path / "support.csv", tmp_path / "lib.csv"


def _assert_same_as_single_process(
    tiny_model: Path, support: Path, library: Path, out: Path, tmp_path: Path
) -> None:
    ref = score_library(
        tiny_model, support, library, tmp_path / "ref.parquet", workers=1, progress=False
    )
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref.output))
    q_ref = pd.read_csv(ref.quarantine, keep_default_na=False)
    q_out = pd.read_csv(out.with_name(out.stem + ".quarantine.csv"), keep_default_na=False)
    pd.testing.assert_frame_equal(q_out, q_ref)
    rows = pd.read_parquet(out)["row"].tolist() + q_out["row"].tolist()
    assert sorted(rows) == list(range(len(pd.read_csv(library))))  # none missing, no duplicates


@pytest.mark.parametrize("engine", ["flow", "plain"])
def test_dask_scoring_matches_single_process(
    engine: str, request: pytest.FixtureRequest, tiny_model: Path, tmp_path: Path
) -> None:
    """The Prefect flow (deployments) and the plain Dask path (``score --workers``) alike."""
    from distributed import LocalCluster

    if engine == "flow":
        request.getfixturevalue("prefect_harness")
        from metascreen.pipelines.distributed import score_distributed
    else:
        from metascreen.pipelines.dask_scoring import score_on_dask as score_distributed

    support, library = _inputs(tmp_path, 400)
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        out = score_distributed(
            tiny_model,
            support,
            library,
            tmp_path / "dask.parquet",
            address=cluster.scheduler_address,
            chunk_size=37,
        )
    assert out["n_chunks"] == 11 and out["chunks_skipped"] == 0
    assert out["n_input"] == 400 == out["n_scored"] + out["n_quarantined"]
    assert not Path(out["work_dir"]).exists()  # removed once the output is complete
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dask.parquet", "dask.quarantine.csv", "lib.csv", "support.csv"
    ]  # fmt: skip
    _assert_same_as_single_process(
        tiny_model, support, library, tmp_path / "dask.parquet", tmp_path
    )


def test_killed_run_resumes_without_redoing_chunks(tiny_model: Path, tmp_path: Path) -> None:
    support, library = _inputs(tmp_path, 1600)
    out = tmp_path / "scores.parquet"
    cmd = [
        str(Path(sys.executable).parent / "metascreen"),
        "score",
        "molecules",
        "--support",
        str(support),
        "--input",
        str(library),
        "--output",
        str(out),
        "--model",
        str(tiny_model),
        "--workers",
        "2",
        "--chunk-size",
        "40",
    ]
    env = dict(os.environ)  # no Prefect API: score --workers runs plain Dask
    work_root = tmp_path / ".scores.parquet.work"
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        done: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            done = list(work_root.glob("*/chunk-*[0-9].parquet"))
            if len(done) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its Dask scheduler and workers
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists()
    finished = sorted(p.name for p in work_root.glob("*/chunk-*[0-9].parquet"))
    assert 5 <= len(finished) < 40, finished  # killed midway

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    m = re.search(r"resumed: (\d+) of (\d+) chunks were done", res.stdout)
    assert m, res.stdout
    assert int(m.group(1)) == len(finished) and int(m.group(2)) == 40
    assert not work_root.exists()  # the rerun removed the killed run's work folder
    _assert_same_as_single_process(tiny_model, support, library, out, tmp_path)
