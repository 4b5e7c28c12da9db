"""CLI surface of the operations commands: help, registry default for scoring, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from metascreen.pipelines.cli.main import app
from tiny_data import make_smiles

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_help_on_ops_commands() -> None:
    for args in (
        ["models"],
        ["models", "list"],
        ["models", "gate"],
        ["models", "retrain"],
        ["models", "quantize"],
        ["bench", "score"],
        ["serve"],
    ):
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0, (args, res.output)
        assert "Usage" in res.output


def test_score_defaults_to_the_registry_current_model(tiny_model: Path, tmp_path: Path) -> None:
    rows = make_smiles(40, seed=11)
    pd.DataFrame(rows[:10], columns=["SMILES", "label"]).to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame({"SMILES": [s for s, _ in rows[10:]]}).to_csv(tmp_path / "l.csv", index=False)
    reg = tmp_path / "reg"
    res = runner.invoke(app, ["models", "register", str(tiny_model), "--registry", str(reg)])
    assert res.exit_code == 0, res.output
    args = ["score", "molecules", "--support", str(tmp_path / "s.csv")]
    args += ["--input", str(tmp_path / "l.csv"), "--output", str(tmp_path / "o.parquet")]
    env = {"METASCREEN_REGISTRY": str(reg)}
    res = runner.invoke(app, args, env=env)  # registered but never promoted: no current
    assert res.exit_code == 2 and "no current version" in res.output, res.output
    runner.invoke(app, ["models", "promote", "molecules", "v0001", "--registry", str(reg)])
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 0 and "scored 30 / 30 rows" in res.output, res.output
    # a modified registered file is refused before any scoring
    (reg / "molecules" / "v0001" / "config.json").write_text("{}")
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 2 and "sha256 differs" in res.output and "Traceback" not in res.output


def test_unreachable_dask_scheduler_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    from metascreen.pipelines.stack import free_port

    (tmp_path / "s.csv").write_text("SMILES,label\nCCO,1\nCCN,0\n")
    (tmp_path / "l.csv").write_text("SMILES\nCCC\n")
    res = runner.invoke(
        app,
        ["score", "molecules", "--support", str(tmp_path / "s.csv"), "--input"]
        + [str(tmp_path / "l.csv"), "--output", str(tmp_path / "o.parquet"), "--model"]
        + [str(tiny_model), "--dask-address", f"tcp://127.0.0.1:{free_port()}"],
    )
    assert res.exit_code == 2 and "no Dask scheduler reachable" in res.output, res.output
