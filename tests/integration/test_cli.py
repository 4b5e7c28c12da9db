from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metascreen.pipelines.cli.main import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def _fail(args: list[str], *needles: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, res.output
    return res.output


def test_help_on_every_command() -> None:
    for args in (
        [],
        ["train", "molecules"],
        ["evaluate", "molecules"],
        ["score", "molecules"],
        ["export"],
        ["demo"],
        ["prepare", "molecules"],
    ):
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0, (args, res.output)
        assert "Usage" in res.output


def test_bad_inputs_exit_cleanly(tmp_path: Path) -> None:
    _fail(
        ["evaluate", "molecules", str(tmp_path / "missing"), "--model", "knn"],
        "missing",
        "no such directory",
    )
    _fail(["evaluate", "molecules", str(tmp_path), "--model", "knn"], "no '*.jsonl.gz' task files")
    with gzip.open(tmp_path / "X1.jsonl.gz", "wt") as fh:
        fh.write(
            json.dumps({"SMILES": "CCO", "Property": "1.0"})
            + "\n"
            + json.dumps({"smiles": "CCN", "Property": "0.0"})
            + "\n"
        )
    _fail(
        ["evaluate", "molecules", str(tmp_path), "--model", "knn"], "X1.jsonl.gz line 2", "'SMILES'"
    )
    (tmp_path / "X1.jsonl.gz").unlink()
    with gzip.open(tmp_path / "X2.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"SMILES": "CCO", "Property": "2.5"}) + "\n")
    _fail(
        ["evaluate", "molecules", str(tmp_path), "--model", "knn"],
        "X2.jsonl.gz line 1",
        "'Property'",
        "not binary",
    )
    (tmp_path / "X2.jsonl.gz").write_bytes(
        gzip.compress(b'{"SMILES": "CCO", "Property": "1.0"}\n' * 500)[:-30]
    )
    _fail(["evaluate", "molecules", str(tmp_path), "--model", "knn"], "X2.jsonl.gz", "truncated")
    _fail(
        ["evaluate", "molecules", str(tmp_path), "--model", "nonexistent-model"],
        "nonexistent-model",
        "not found",
    )


def test_score_bad_inputs(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("SMILES,label\nCCO,1\nCCN,0\n")
    (tmp_path / "lib.csv").write_text("name\nfoo\n")
    _fail(
        [
            "score",
            "molecules",
            "--support",
            str(tmp_path / "s.csv"),
            "--input",
            str(tmp_path / "lib.csv"),
            "--output",
            str(tmp_path / "o.parquet"),
            "--model",
            str(tiny_model),
        ],
        "lib.csv",
        "no SMILES column",
    )
    (tmp_path / "s2.csv").write_text("SMILES,label\nCCO,1\nCCN,7\n")
    _fail(
        [
            "score",
            "molecules",
            "--support",
            str(tmp_path / "s2.csv"),
            "--input",
            str(tmp_path / "lib.csv"),
            "--output",
            str(tmp_path / "o.parquet"),
            "--model",
            str(tiny_model),
        ],
        "s2.csv row 2",
        "'label'",
    )
    meta = json.loads((tiny_model / "metadata.json").read_text())
    bad = tmp_path / "bad_model"
    bad.mkdir()
    for f in tiny_model.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    meta["featurizer"]["hash"] = "0" * 64
    (bad / "metadata.json").write_text(json.dumps(meta))
    (tmp_path / "lib2.csv").write_text("SMILES\nCCO\n")
    _fail(
        [
            "score",
            "molecules",
            "--support",
            str(tmp_path / "s.csv"),
            "--input",
            str(tmp_path / "lib2.csv"),
            "--output",
            str(tmp_path / "o.parquet"),
            "--model",
            str(bad),
        ],
        "featurizer hash",
    )


def test_evaluate_contract_json(tiny_model: Path, tiny_fsmol: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "molecules",
            str(tiny_fsmol / "valid"),
            "--model",
            str(tiny_model),
            "--support-size",
            "8",
            "--repeats",
            "3",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    for key in ("metric", "support_size", "n_tasks", "mean", "std", "per_task", "model", "seconds"):
        assert key in d
    assert d["metric"] == "delta_auprc" and d["support_size"] == 8 and d["n_tasks"] == 3
    assert set(d["per_task"]) == {"CHEMBL8000", "CHEMBL8001", "CHEMBL8002"}
    assert abs(d["mean"] - sum(d["per_task"].values()) / 3) < 1e-9


def test_export_roundtrip(tiny_model: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", str(tiny_model), "--out", str(tmp_path / "re")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "re" / "model.onnx").exists()
    _fail(["export", str(tiny_model), "--out", str(tmp_path / "re")], "exists")
