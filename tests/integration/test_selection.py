"""Selection on a held-out slice of train tasks: ``train molecules --holdout-slice`` and friends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metascreen.pipelines.cli.main import app

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def slice_model(tiny_fsmol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sel") / "m"
    res = runner.invoke(
        app,
        [
            "train",
            "molecules",
            str(tiny_fsmol),
            "--learner",
            "multihead",
            "--gp-kernel",
            "per-task",
            "--descriptors",
            "fast",
            "--holdout-slice",
            "0.34",
            "--slice-seed",
            "1",
            "--steps",
            "12",
            "--tasks-per-step",
            "2",
            "--support-sizes",
            "8",
            "--eval-every",
            "6",
            "--hidden",
            "32",
            "--out-dim",
            "16",
            "--out",
            str(out),
            "--run-dir",
            str(out.parent / "run"),
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "selection ΔAUPRC@16" in res.output and "valid ΔAUPRC@16" in res.output
    return out


def test_holdout_slice_is_kept_out_of_training_and_recorded(
    slice_model: Path, tiny_fsmol: Path
) -> None:
    from metascreen.domains.molecules.load import find_task_files, slice_task_files

    meta = json.loads((slice_model / "metadata.json").read_text())
    held = slice_task_files(find_task_files(tiny_fsmol / "train"), 0.34, 1)
    sel = meta["selection"]
    assert sel["split"] == "train slice" and sel["slice_seed"] == 1
    assert sel["task_files"] == [f.name for f in held] and len(held) == 2
    # 7 train files: the empty one is skipped, the 2 held out are not trained on.
    nonempty = [f for f in find_task_files(tiny_fsmol / "train") if f.name != "CHEMBL9999.jsonl.gz"]
    assert meta["training_data"]["n_train_tasks"] == len(nonempty) - len(set(held) & set(nonempty))
    train = meta["metrics"]["train"]
    assert "best_train_slice_delta_auprc@16" in train
    assert meta["metrics"]["selection"]["16"]["n_tasks"] >= 1
    assert meta["metrics"]["valid"]  # valid read once, after training
    cpu = meta["trained_on"]
    assert cpu["device"] == "cpu" and cpu["bf16_autocast"] is False and cpu["torch_threads"] >= 1
    cfg = json.loads((slice_model / "config.json").read_text())
    assert cfg["learner"]["gp_kernel"] == "per-task"
    assert len(meta["featurizer"]["spec"]["params"]["descriptors"]) == 48


def test_evaluate_train_slice_equals_the_slice_folder(
    slice_model: Path, tiny_fsmol: Path, tmp_path: Path
) -> None:
    """``evaluate --train-slice F --slice-seed S`` scores exactly the slice's task files."""
    import shutil

    from metascreen.domains.molecules.load import find_task_files, slice_task_files

    folder = tmp_path / "slice"
    folder.mkdir()
    for f in slice_task_files(find_task_files(tiny_fsmol / "train"), 0.34, 1):
        shutil.copy(f, folder / f.name)
    args = ["--model", str(slice_model), "--support-size", "8", "--repeats", "2"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "molecules",
            str(tiny_fsmol / "train"),
            "--train-slice",
            "0.34",
            "--slice-seed",
            "1",
            *args,
            "--json",
            str(a),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "molecules", str(folder), *args, "--json", str(b)])
    assert res.exit_code == 0, res.output
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ja["per_task"] == jb["per_task"] and ja["train_slice"]["slice_seed"] == 1


def test_bench_model_writes_json_markdown_png(
    slice_model: Path, tiny_fsmol: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bm" / "report"
    res = runner.invoke(
        app,
        [
            "bench",
            "model",
            str(tiny_fsmol / "valid"),
            "--model",
            str(slice_model),
            "--model",
            "rf",
            "--support-sizes",
            "8,16",
            "--repeats",
            "2",
            "--featurize-n",
            "50",
            "--score-n",
            "0",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.with_suffix(".json").read_text())
    assert set(r["models"]) == {slice_model.name, "rf"}
    rf8 = r["models"]["rf"]["support"]["8"]
    assert rf8["n_tasks"] == 3 and abs(rf8["mean"] - sum(rf8["per_task"].values()) / 3) < 1e-9
    paired = r["paired_vs_first"]["against"]["rf"]["8"]
    lo, hi = paired["ci95"]
    assert lo <= paired["mean_difference"] <= hi
    assert paired["tasks_won"] + paired["tasks_lost"] <= 3
    assert r["featurize"]["n"] == 50 and r["featurize"]["ratio_featurize_to_parse_ecfp"] > 0
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| rf |" in out.with_suffix(".md").read_text()
