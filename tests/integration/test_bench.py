"""``metascreen bench score`` writes the contract JSON (tiny n; the real figures are in README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
from metascreen.pipelines.cli.main import app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (DEFAULT_MODEL_DIR / "metadata.json").exists(), reason="no shipped model"
    ),
]

KEYS = {
    "n",
    "score_mol_per_s",
    "featurize_mol_per_s",
    "ratio_score_to_featurize",
    "onnx_vs_torch",
    "peak_rss_mb",
    "seconds",
}


def test_bench_score_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metascreen.pipelines import bench

    real = bench.model_throughput
    monkeypatch.setattr(  # keep the timing loops short in the test
        bench,
        "model_throughput",
        lambda *a, **k: real(*a, **{**k, "rounds": 1, "min_seconds": 0.05}),
    )
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(
        app,
        ["bench", "score", "--n", "300", "--featurize-sample", "100", "--chunk-size", "50"]
        + ["--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert set(r) >= KEYS
    assert r["n"] == 300 and r["featurize_molecules"] == 100
    assert all(r[k] > 0 for k in KEYS)
    assert r["ratio_score_to_featurize"] == pytest.approx(
        r["score_mol_per_s"] / r["featurize_mol_per_s"], rel=1e-2
    )
    assert r["onnx_fp32_max_abs_logit_diff_vs_torch"] < 1e-3  # same model, two engines
    assert {"cpu_model", "cpu_flags", "int8_dot_product"} <= set(r)  # onnx_vs_torch hinges on them
    assert "| ratio scoring / featurization |" in out.with_suffix(".md").read_text()


def test_library_sampling_is_seeded_and_valid(tmp_path: Path) -> None:
    from metascreen.domains.molecules.featurize import parse_smiles
    from metascreen.pipelines.bench import smiles_pool, write_library

    pool = smiles_pool()
    assert len(pool) > 1000
    write_library(tmp_path / "a.csv", 500, pool, seed=3)
    write_library(tmp_path / "b.csv", 500, pool, seed=3)
    text = (tmp_path / "a.csv").read_text()
    assert text == (tmp_path / "b.csv").read_text()
    rows = text.splitlines()[1:]
    assert len(rows) == 500
    assert all(parse_smiles(r.split(",", 1)[1]) is not None for r in rows[:50])


FEATURIZE_KEYS = {
    "n",
    "featurize_mol_per_s",
    "parse_ecfp_mol_per_s",
    "ratio_featurize_to_parse_ecfp",
    "blocks",
}


def test_bench_featurize_contract(tmp_path: Path) -> None:
    out = tmp_path / "feat.json"
    sample = Path(__file__).resolve().parents[2] / "data" / "fsmol-sample" / "train"
    res = CliRunner().invoke(
        app,
        ["bench", "featurize", "--n", "30", "--data", str(sample), "--json", str(out)],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert set(r) >= FEATURIZE_KEYS
    assert r["n"] == 30
    assert r["featurize_mol_per_s"] > 0 and r["parse_ecfp_mol_per_s"] > 0
    assert r["ratio_featurize_to_parse_ecfp"] == pytest.approx(
        r["featurize_mol_per_s"] / r["parse_ecfp_mol_per_s"], rel=1e-2
    )
    names = [b["name"] for b in r["blocks"]]
    assert names[:3] == [
        "parse (MolFromSmiles)",
        "Morgan r=2 2048 bits",
        "Morgan r=2 2048 counts + log1p",
    ]
    # one block per descriptor family the shipped featurizer computes, and only those
    from metascreen.domains.molecules.descriptors import descriptor_family

    spec = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())["featurizer"]["spec"]
    families = {f"descriptors: {descriptor_family(n)}" for n in spec["params"]["descriptors"]}
    assert families <= set(names) and "descriptors: PEOE_VSA" in names
    assert ("descriptors: fragments (fr_*)" in names) == any(
        n.startswith("fr_") for n in spec["params"]["descriptors"]
    )
    assert all(b["us_per_mol"] >= 0 for b in r["blocks"])
    assert "| ratio featurize / parse+ECFP |" in out.with_suffix(".md").read_text()


def test_featurize_sample_is_seeded() -> None:
    from metascreen.pipelines.bench_featurize import BUNDLED_FSMOL_TRAIN, sample_smiles

    a = sample_smiles(BUNDLED_FSMOL_TRAIN, 50, seed=4)
    assert a == sample_smiles(BUNDLED_FSMOL_TRAIN, 50, seed=4)
    assert len(a) == len(set(a)) == 50
    assert a != sample_smiles(BUNDLED_FSMOL_TRAIN, 50, seed=5)
