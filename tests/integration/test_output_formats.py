"""``score molecules --output``: Parquet, CSV or SDF by suffix, written chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from typer.testing import CliRunner

from metascreen.pipelines.cli.main import app
from tiny_data import make_smiles

pytestmark = pytest.mark.integration
runner = CliRunner()


def _score(model: Path, support: Path, library: Path, output: Path) -> None:
    res = runner.invoke(
        app,
        [
            "score",
            "molecules",
            "--support",
            str(support),
            "--input",
            str(library),
            "--output",
            str(output),
            "--model",
            str(model),
            "--chunk-size",
            "7",  # several chunks: each is appended to the same file
        ],
    )
    assert res.exit_code == 0, res.output


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    rows = make_smiles(50, seed=3)
    pd.DataFrame(rows[:10], columns=["SMILES", "label"]).astype({"label": int}).to_csv(
        tmp_path / "support.csv", index=False
    )
    lib = [s for s, _ in rows[10:]]
    lib.insert(4, "C1CC")  # quarantined, not written
    pd.DataFrame({"id": [f"m{i}" for i in range(len(lib))], "SMILES": lib}).to_csv(
        tmp_path / "lib.csv", index=False
    )
    return tmp_path / "support.csv", tmp_path / "lib.csv"


def test_csv_sdf_and_parquet_outputs_round_trip(
    tiny_model: Path, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    support, library = inputs
    for suffix in ("parquet", "csv", "sdf"):
        _score(tiny_model, support, library, tmp_path / f"x.{suffix}")
        assert pd.read_csv(tmp_path / "x.quarantine.csv")["row"].tolist() == [4]
    ref = pd.read_parquet(tmp_path / "x.parquet")
    csv = pd.read_csv(tmp_path / "x.csv")
    assert len(ref) == len(csv) == 40
    assert csv["row"].tolist() == ref["row"].tolist() and csv["id"].tolist() == ref["id"].tolist()
    np.testing.assert_allclose(csv["score"], ref["score"], rtol=0, atol=1e-6)
    mols = list(Chem.SDMolSupplier(str(tmp_path / "x.sdf")))
    assert len(mols) == 40 and all(m is not None for m in mols)
    np.testing.assert_allclose(
        [float(m.GetProp("score")) for m in mols], ref["score"], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        [float(m.GetProp("logit")) for m in mols], ref["logit"], rtol=0, atol=1e-6
    )
    assert [m.GetProp("id") for m in mols] == ref["id"].tolist()
    assert [Chem.MolToSmiles(m) for m in mols] == ref["canonical_smiles"].tolist()
    assert not list(tmp_path.glob("*.partial"))


def test_sdf_input_keeps_its_properties_in_sdf_output(
    tiny_model: Path, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    support, _ = inputs
    with Chem.SDWriter(str(tmp_path / "lib.sdf")) as w:
        for i, (smi, _) in enumerate(make_smiles(20, seed=9)):
            mol = Chem.MolFromSmiles(smi)
            mol.SetProp("_Name", f"cpd-{i}")
            mol.SetProp("vendor_id", f"V{i:03d}")
            mol.SetProp("price", f"{i * 1.5:g}")
            w.write(mol)
    _score(tiny_model, support, tmp_path / "lib.sdf", tmp_path / "out.sdf")
    mols = list(Chem.SDMolSupplier(str(tmp_path / "out.sdf")))
    assert len(mols) == 20
    assert [m.GetProp("vendor_id") for m in mols] == [f"V{i:03d}" for i in range(20)]
    assert mols[3].GetProp("price") == "4.5"
    assert all(0.0 <= float(m.GetProp("score")) <= 1.0 for m in mols)


def test_unknown_output_suffix_is_refused_before_scoring(
    tiny_model: Path, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    support, library = inputs
    res = runner.invoke(
        app,
        [
            "score",
            "molecules",
            "--support",
            str(support),
            "--input",
            str(library),
            "--output",
            str(tmp_path / "x.xlsx"),
            "--model",
            str(tiny_model),
        ],
    )
    assert res.exit_code == 2
    assert "unsupported output type '.xlsx'" in res.output
    assert not list(tmp_path.glob("x*"))
