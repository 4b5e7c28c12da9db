from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_flow_on_tiny_data(prefect_harness: None, tiny_fsmol: Path, tmp_path: Path) -> None:
    from metascreen.pipelines import flows

    out = flows.demo_flow(str(tmp_path / "demo"), steps=20, repeats=2, data_dir=str(tiny_fsmol))
    out = Path(out)
    for name in ("report.md", "report.json", "evaluation.png", "scores.parquet"):
        assert (out / name).exists(), name
    summary = json.loads((out / "report.json").read_text())
    assert summary["prepare"]["train"]["n_tasks"] == 6
    assert summary["prepare"]["train"]["n_invalid"] == 2
    assert set(summary["evaluation"]) >= {"demo-protonet", "rf", "knn"}
    sc = summary["scoring"]
    assert sc["n_input"] == sc["n_scored"] + sc["n_quarantined"]
    assert "ΔAUPRC@16" in (out / "report.md").read_text()


def test_prepare_flow_counts(prefect_harness: None, tiny_fsmol: Path) -> None:
    from metascreen.pipelines.flows import prepare_tasks_flow

    stats = prepare_tasks_flow(str(tiny_fsmol / "train"))
    assert stats["n_tasks"] == 6
    assert stats["n_invalid"] == 2
    assert any("CHEMBL9999" in k for k in stats["skipped_files"])


def test_evaluate_task_logic_without_orchestration(tiny_fsmol: Path) -> None:
    from metascreen.pipelines.flows import evaluate_task

    res = evaluate_task.fn(str(tiny_fsmol / "valid"), "knn", [8], 2, 0)
    assert res["8"]["n_tasks"] == 3
    assert -1 <= res["8"]["mean"] <= 1


def test_simulate_flow_publishes_curves(
    prefect_harness: None, tiny_fsmol: Path, tiny_policy: Path, tmp_path: Path
) -> None:
    from metascreen.pipelines.flows import simulate_flow

    png = tmp_path / "curves.png"
    out = simulate_flow(
        str(tiny_fsmol / "valid"),
        [str(tiny_policy), "random"],
        budget=8,
        repeats=2,
        active_fraction=1.0,
        plot=str(png),
    )
    assert set(out) == {"tiny-policy", "random"}
    assert out["random"]["n_tasks"] == 3 and png.exists()


def test_prepare_molecules_flow_and_deployment(prefect_harness: None, tmp_path: Path) -> None:
    import importlib

    import yaml

    from chembl_tables import fsmol_to_chembl
    from metascreen.pipelines.flows import prepare_molecules_flow

    sample = Path(__file__).resolve().parents[2] / "data" / "fsmol-sample" / "valid"
    targets = Path(__file__).resolve().parents[1] / "fixtures" / "fsmol_sample_targets.csv"
    fsmol_to_chembl(sorted(sample.glob("*.jsonl.gz"))[:3], targets).to_csv(
        tmp_path / "export.csv", sep=";", index=False
    )
    summary = prepare_molecules_flow(
        str(tmp_path / "export.csv"), str(tmp_path / "out"), split="none", min_size=1
    )
    assert summary["rows_in"] == summary["rows_kept"] + summary["rows_quarantined"]
    assert len(list((tmp_path / "out").glob("*.jsonl.gz"))) == summary["assays_kept"] == 3
    spec = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy" / "prefect.yaml").read_text()
    )
    dep = next(d for d in spec["deployments"] if d["name"] == "prepare-molecules")
    module, name = dep["entrypoint"].split(":")
    assert getattr(importlib.import_module(module), name) is prepare_molecules_flow
