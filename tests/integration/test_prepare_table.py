"""``metascreen prepare molecules TABLE --out DIR``: a ChEMBL-export-shaped table built from the
bundled FS-Mol sample goes in, FS-Mol's labels come back; messy rows are quarantined."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from chembl_tables import (
    BAD_ROWS,
    add_bad_rows,
    add_duplicates,
    compare_labels,
    fsmol_to_chembl,
    read_fsmol_rows,
    to_micromolar,
)
from metascreen.domains.molecules.load import load_fsmol_dir
from metascreen.pipelines.cli.main import app

pytestmark = pytest.mark.integration
runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "fsmol-sample"
TARGETS = Path(__file__).resolve().parents[1] / "fixtures" / "fsmol_sample_targets.csv"
FILES = sorted(SAMPLE.glob("*/*.jsonl.gz"))


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, sep=";", quoting=csv.QUOTE_ALL, index=False)  # as ChEMBL's web export
    return path


def _prepare(*args: str) -> None:
    res = runner.invoke(app, ["prepare", "molecules", *args])
    assert res.exit_code == 0, res.output


def _tasks(folder: Path) -> dict[str, pd.DataFrame]:
    return {
        f.name.removesuffix(".jsonl.gz"): pd.read_json(f, lines=True, dtype=str)
        for f in folder.glob("*.jsonl.gz")
    }


@pytest.fixture(scope="module")
def fsmol() -> pd.DataFrame:
    return read_fsmol_rows(FILES)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    df = fsmol_to_chembl(FILES, TARGETS)
    tmp = tmp_path_factory.mktemp("clean")
    _prepare(str(_write(df, tmp / "export.csv")), "--out", str(tmp / "out"), "--split", "none")
    return df, tmp / "out"


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    df = fsmol_to_chembl(FILES, TARGETS)
    conc = sorted(df.loc[df["Standard Units"] == "nM", "Assay ChEMBL ID"].unique())
    um, bad, dup = conc[:3], conc[3], conc[4]
    out = add_bad_rows(to_micromolar(df, um), bad)
    out, conflicting = add_duplicates(out, dup)
    tmp = tmp_path_factory.mktemp("messy")
    _prepare(str(_write(out, tmp / "export.csv")), "--out", str(tmp / "out"), "--split", "none")
    return {
        "df": out,
        "n_clean": len(df),
        "um": um,
        "dup": dup,
        "conflicting": conflicting,
        "out": tmp / "out",
    }


def test_round_trip_reproduces_fsmol_labels(clean: tuple, fsmol: pd.DataFrame) -> None:
    df, out = clean
    fig = compare_labels(_tasks(out), fsmol)
    assert fig["agreement"] >= 0.995, fig
    assert fig["keep_rate"] >= 0.98, fig
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["rows_in"] == len(df) == summary["rows_kept"] + summary["rows_quarantined"]
    q = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    assert len(q) == summary["rows_quarantined"]
    assert (q["reason"] != "").all()
    kept_rows = {int(r) for t in _tasks(out).values() for r in range(len(t))}
    assert kept_rows  # task files are FS-Mol's schema:
    first = next(iter(_tasks(out).values()))
    assert list(first.columns) == [
        "SMILES",
        "Property",
        "Assay_ID",
        "RegressionProperty",
        "LogRegressionProperty",
        "Relation",
        "AssayType",
    ]
    assert summary["assays_kept"] == len(_tasks(out)) == len(load_fsmol_dir(out).tasks)
    assert set(_tasks(out)) <= set(summary["thresholds"])  # dropped assays keep theirs too
    assert (out / "prepare.md").read_text().startswith("# prepare molecules")


def test_messy_copy_quarantines_bad_rows_and_conflicts(messy: dict, fsmol: pd.DataFrame) -> None:
    out, n = messy["out"], messy["n_clean"]
    summary = json.loads((out / "prepare.json").read_text())
    assert (
        summary["rows_in"] == len(messy["df"]) == summary["rows_kept"] + summary["rows_quarantined"]
    )
    q = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    reasons = dict(zip(q["row"].astype(int), q["reason"], strict=True))
    for k in range(len(BAD_ROWS)):  # every planted invalid row, with its reason
        assert reasons.get(n + k), (k, BAD_ROWS[k])
    dup_rows = q[q["Assay ChEMBL ID"] == messy["dup"]]
    conflicts = dup_rows[dup_rows["reason"].str.startswith("conflicting measurements")]
    assert sorted(set(conflicts["Smiles"])) == sorted(messy["conflicting"])
    assert len(conflicts) == 4  # each planted repeat and its original
    planted = q[q["row"].astype(int) >= n + len(BAD_ROWS)]
    assert planted["reason"].str.startswith("duplicate of row").sum() == 2  # agreeing repeats
    tasks = _tasks(out)
    from metascreen.domains.molecules.prepare import standardize_smiles

    kept = set(tasks[messy["dup"]]["SMILES"])
    assert not any(standardize_smiles(s)[0] in kept for s in messy["conflicting"])
    um = messy["um"]
    fig = compare_labels(
        {a: t for a, t in tasks.items() if a in um}, fsmol[fsmol["Assay_ID"].isin(um)]
    )
    assert fig["pairs_both_keep"] > 50 and fig["agreement"] >= 0.995, fig
    assert fig["keep_rate"] >= 0.98, fig


def test_target_split_groups_whole_targets(tmp_path: Path) -> None:
    df = fsmol_to_chembl(FILES, TARGETS)
    _prepare(str(_write(df, tmp_path / "t.csv")), "--out", str(tmp_path / "o"), "--seed", "1")
    target = dict(zip(df["Assay ChEMBL ID"], df["Target ChEMBL ID"], strict=False))
    seen: dict[str, str] = {}
    for split in ("train", "valid", "test"):
        files = list((tmp_path / "o" / split).glob("*.jsonl.gz"))
        assert files, split
        for f in files:
            t = target[f.name.removesuffix(".jsonl.gz")] or f.name
            assert seen.setdefault(t, split) == split
    summary = json.loads((tmp_path / "o" / "prepare.json").read_text())
    assert sum(v["assays"] for v in summary["splits"].values()) == summary["assays_kept"]


@pytest.mark.parametrize("suffix", [".tsv", ".parquet", ".xlsx"])
def test_other_formats_read_alike(tmp_path: Path, suffix: str) -> None:
    df = fsmol_to_chembl(FILES[:3], TARGETS)
    path = tmp_path / f"t{suffix}"
    if suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_excel(path, index=False)
    _prepare(str(path), "--out", str(tmp_path / "o"), "--split", "none", "--min-size", "1")
    _write(df, tmp_path / "ref.csv")
    _prepare(
        str(tmp_path / "ref.csv"),
        "--out",
        str(tmp_path / "r"),
        "--split",
        "none",
        "--min-size",
        "1",
    )
    a, b = _tasks(tmp_path / "o"), _tasks(tmp_path / "r")
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


def test_named_columns_of_another_table(tmp_path: Path) -> None:
    df = fsmol_to_chembl(FILES[:2], TARGETS).rename(
        columns={
            "Assay ChEMBL ID": "aid",
            "Smiles": "smi",
            "Standard Value": "v",
            "Standard Units": "u",
            "Standard Relation": "rel",
        }
    )
    df.to_csv(tmp_path / "mine.csv", index=False)
    _prepare(
        str(tmp_path / "mine.csv"),
        "--out",
        str(tmp_path / "o"),
        "--split",
        "none",
        "--assay-column",
        "aid",
        "--smiles-column",
        "smi",
        "--value-column",
        "v",
        "--units-column",
        "u",
        "--relation-column",
        "rel",
        "--min-size",
        "1",
    )
    assert len(_tasks(tmp_path / "o")) == 2


def _fails(args: list[str], *needles: str) -> None:
    res = runner.invoke(app, ["prepare", "molecules", *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    for n in needles:
        assert n in lines[0], res.output


def test_bad_tables_fail_cleanly_without_output(tmp_path: Path) -> None:
    df = fsmol_to_chembl(FILES[:1], TARGETS).drop(columns=["Standard Units"])
    df.to_csv(tmp_path / "nounits.csv", index=False)
    _fails([str(tmp_path / "nounits.csv"), "--out", str(tmp_path / "o")], "nounits.csv", "units")
    df.to_csv(tmp_path / "t.csv", index=False)
    _fails(
        [str(tmp_path / "t.csv"), "--out", str(tmp_path / "o"), "--units-column", "Unit"],
        "t.csv",
        "'Unit'",
    )
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    _fails([str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "o")], "bad.parquet")
    (tmp_path / "empty.csv").write_text("")
    _fails([str(tmp_path / "empty.csv"), "--out", str(tmp_path / "o")], "empty.csv")
    _fails([str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")], "missing.csv")
    _fails([str(tmp_path / "t.csv")], "--out")
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    ok = fsmol_to_chembl(FILES[:1], TARGETS)
    ok.to_csv(tmp_path / "ok.csv", index=False)
    _fails([str(tmp_path / "ok.csv"), "--out", str(tmp_path / "o")], "not empty")


def test_folder_argument_keeps_the_check() -> None:
    res = runner.invoke(app, ["prepare", "molecules", str(SAMPLE / "valid")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_tasks"] == 10


def test_python_api_prepare_tasks(tmp_path: Path) -> None:
    import metascreen

    df = fsmol_to_chembl(FILES[:4], TARGETS)
    res = metascreen.prepare_tasks(df, split="none", min_size=1, out=tmp_path / "o")
    assert res.summary["rows_in"] == len(df)
    assert res.summary["rows_kept"] == sum(len(t) for t in res.tasks.values())
    assert set(res.tasks) == set(_tasks(tmp_path / "o"))
    mine = df.rename(columns={"Assay ChEMBL ID": "aid", "Smiles": "smi"})
    res2 = metascreen.prepare_tasks(
        mine, {"assay": "aid", "smiles": "smi"}, split="none", min_size=1
    )
    assert res2.summary["rows_kept"] == res.summary["rows_kept"]
    from metascreen.domains.errors import SchemaError

    with pytest.raises(SchemaError, match="assay"):
        metascreen.prepare_tasks(mine)


def test_train_reads_a_prepared_folder(tmp_path: Path) -> None:
    """``train molecules DIR`` on prepare's train/ and valid/ (a few steps, tiny encoder)."""
    from metascreen.models.nn.encoders import EncoderConfig
    from metascreen.models.workflows.molecules import train_model
    from tiny_data import tiny_featurizer

    df = fsmol_to_chembl(FILES, TARGETS)
    _prepare(str(_write(df, tmp_path / "t.csv")), "--out", str(tmp_path / "tasks"))
    out = train_model(
        tmp_path / "tasks",
        tmp_path / "model",
        {"learner": "protonet", "encoder": EncoderConfig(hidden=(32,), out_dim=16).model_dump()},
        {"steps": 4, "tasks_per_step": 2, "eval_every": 4, "device": "cpu"},
        featurizer=tiny_featurizer(tmp_path / "tasks"),
        cache_dir=None,
        run_dir=tmp_path / "run",
        eval_support_sizes=(8,),
        eval_repeats=1,
        workers=1,
        progress=False,
    )
    meta = json.loads((Path(out) / "metadata.json").read_text())
    assert meta["metrics"]["valid"]["8"]["n_tasks"] >= 1


def test_out_with_a_folder_is_refused(tmp_path: Path) -> None:
    _fails([str(SAMPLE / "valid"), "--out", str(tmp_path / "o")], "--out", "task folder")
    _fails([str(tmp_path / "nowhere")], "nowhere")  # a missing folder: today's message
