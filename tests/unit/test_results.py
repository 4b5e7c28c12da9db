"""The results root, the artifact helpers outside a run, and the registry bootstrap of ``serve``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metascreen.pipelines import results


@pytest.mark.unit
def test_results_root_never_inside_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert results.results_root() == tmp_path.resolve() / "metascreen-results"
    monkeypatch.chdir(results.CODE_ROOT / "pipelines")  # a worker runs flows from the checkout
    assert results.results_root() == tmp_path / "home" / "metascreen-results"
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "env"))
    assert results.results_root() == tmp_path / "env"
    assert results.results_root(tmp_path / "param") == tmp_path / "param"
    assert results.under_results("a/b.csv") == tmp_path / "env" / "a" / "b.csv"
    assert results.under_results(tmp_path / "abs.csv") == tmp_path / "abs.csv"
    (tmp_path / "env" / "model").mkdir(parents=True)
    assert results.find_input("model") == str(tmp_path / "env" / "model")
    assert results.find_input("mf") == "mf"


@pytest.mark.unit
def test_top_rows_streams_every_format(tmp_path: Path) -> None:
    from metascreen.models.serving.writers import open_writer

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "row": np.arange(300),
            "SMILES": ["CCO"] * 300,
            "score": rng.random(300).astype(np.float32),
        }
    )
    want = df.nlargest(50, "score")["row"].tolist()
    for suffix in ("parquet", "csv", "sdf"):
        w = open_writer(tmp_path / f"s.{suffix}")
        for lo in range(0, 300, 70):
            w.write(df.iloc[lo : lo + 70])
        w.commit()
        top = results.top_rows(tmp_path / f"s.{suffix}", 50)
        assert [int(r) for r in top["row"]] == want, suffix
    # outside a flow run the publishers do nothing (no Prefect backend is started)
    results.publish_summary("x", {"rows_in": 1})
    results.publish_top("x", tmp_path / "s.csv")


@pytest.mark.integration
def test_serve_bootstraps_only_an_empty_registry(tmp_path: Path) -> None:
    from metascreen.models.registry.store import ModelRegistry
    from metascreen.pipelines.stack import bootstrap_registry

    assert bootstrap_registry(tmp_path / "reg") == "v0001"
    reg = ModelRegistry(tmp_path / "reg")
    assert reg.current_version() == "v0001"
    decisions = reg.decisions()
    assert [d["action"] for d in decisions] == ["bootstrap"] and decisions[0]["to"] == "v0001"
    assert bootstrap_registry(tmp_path / "reg") is None  # never touches a registry in use
    assert reg.versions() == ["v0001"] and len(reg.decisions()) == 1
    entry = json.loads((tmp_path / "reg" / "molecules" / "v0001" / "registry.json").read_text())
    assert "shipped" in entry["note"]
