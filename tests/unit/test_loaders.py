from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from metascreen.domains.errors import InputError, SchemaError
from metascreen.domains.molecules.featurize import MoleculeFeaturizer, canonicalize, parse_smiles
from metascreen.domains.molecules.load import (
    iter_table_chunks,
    load_fsmol_dir,
    load_table_tasks,
    read_fsmol_file,
)
from tiny_data import make_smiles, write_task

pytestmark = pytest.mark.unit


def test_fsmol_dir_counts_invalid_and_skips_empty(
    tiny_fsmol: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ts = load_fsmol_dir(tiny_fsmol / "train")
    assert len(ts.tasks) == 6
    assert ts.n_invalid == 2  # "C1CC" and "" in the first task
    assert any("CHEMBL9999" in k for k in ts.skipped)
    assert "CHEMBL9999" in caplog.text
    assert ts.n_rows == 6 * 48
    assert all(canonicalize(s) == s for s in ts.items[:20])


def test_skipped_task_files_are_one_warning_with_counts(
    tiny_fsmol: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="metascreen.domains.molecules.load"):
        ts = load_fsmol_dir(tiny_fsmol / "train", min_size=49)  # every task has 48 rows
    assert len(ts.tasks) == 0 and len(ts.skipped) == 7
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    summary = [m for m in warnings if "skipped" in m]
    assert len(summary) == 1, warnings
    assert "skipped 7 task files" in summary[0] and "and 2 more" in summary[0]
    assert "6 fewer valid rows than the minimum, 1 empty task file" in summary[0]
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert sum(m.startswith("skipping ") for m in debug) == 7  # each file, with its reason


def test_validity_is_rdkit_default_sanitisation() -> None:
    assert parse_smiles("") is None and parse_smiles("   ") is None
    assert parse_smiles("C1CC") is None
    assert parse_smiles("CC(=O)O[PH](=O)(=O)O") is None  # pentavalent P fails sanitisation
    assert parse_smiles("c1ccccc1O") is not None


def _gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_missing_field_names_file_row_and_field(tmp_path: Path) -> None:
    p = _gz(
        tmp_path / "A.jsonl.gz",
        [json.dumps({"SMILES": "CCO", "Property": "1.0"}), json.dumps({"SMILES": "CCN"})],
    )
    with pytest.raises(SchemaError, match=r"A\.jsonl\.gz line 2: field 'Property' missing"):
        read_fsmol_file(p)


def test_non_binary_label(tmp_path: Path) -> None:
    p = _gz(tmp_path / "B.jsonl.gz", [json.dumps({"SMILES": "CCO", "Property": "0.7"})])
    with pytest.raises(SchemaError, match=r"line 1 field 'Property'.*not binary"):
        read_fsmol_file(p)


def test_truncated_gzip(tmp_path: Path) -> None:
    p = tmp_path / "C.jsonl.gz"
    write_task(p, make_smiles(200, 0))
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(InputError, match="truncated"):
        read_fsmol_file(p)


def test_missing_and_empty_dirs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such directory"):
        load_fsmol_dir(tmp_path / "nope")
    with pytest.raises(InputError, match="no '\\*.jsonl.gz' task files"):
        load_fsmol_dir(tmp_path)


def test_table_with_assay_column_and_threshold(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("smiles,assay,pIC50\nCCO,a1,7.0\nCCN,a1,5.0\nbad(,a2,8\nc1ccccc1,a2,4\n")
    ts = load_table_tasks(p, assay_column="assay", value_column="pIC50", threshold=6.0)
    assert [t.task_id for t in ts.tasks] == ["a1", "a2"]
    assert ts.n_invalid == 1
    assert ts.tasks[0].labels.tolist() == [1.0, 0.0]


def test_table_chunks_number_rows(tmp_path: Path) -> None:
    p = tmp_path / "lib.csv"
    p.write_text("SMILES\n" + "\n".join(["CCO"] * 25) + "\n")
    chunks = list(iter_table_chunks(p, 10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert np.concatenate([c["row"].to_numpy() for c in chunks]).tolist() == list(range(25))


def test_featurizer_hash_changes_with_params_and_roundtrips() -> None:
    mols = [parse_smiles(s) for s, _ in make_smiles(30, 1)]
    f = MoleculeFeaturizer(n_bits=256).fit(mols)
    g = MoleculeFeaturizer.from_spec(f.spec(), expected_hash=f.hash)
    np.testing.assert_array_equal(f.transform(mols[:5]), g.transform(mols[:5]))
    assert MoleculeFeaturizer(n_bits=512).fit(mols).hash != f.hash
    assert f.transform(mols[:3]).shape == (3, 256 + len(f.descriptors))


def test_union_featurizer_holds_each_radius_rows_at_its_columns() -> None:
    from dataclasses import replace

    from metascreen.domains.errors import ConfigError

    mols = [parse_smiles(s) for s, _ in make_smiles(30, 2)]
    r2 = MoleculeFeaturizer(n_bits=256).fit(mols)
    r3 = replace(r2, radius=3)
    u = MoleculeFeaturizer.union([r2, r3])
    assert u.radii == (2, 3) and u.dim == 2 * 256 + len(r2.descriptors)
    assert u.spec()["params"]["extra_radii"] == [3] and "extra_radii" not in r2.spec()["params"]
    assert MoleculeFeaturizer.from_spec(u.spec(), expected_hash=u.hash).hash == u.hash
    assert MoleculeFeaturizer.union([r2, r2]).hash == r2.hash  # one featurizer: itself
    rows = u.transform(mols[:6])
    for f in (r2, r3):
        cols = np.concatenate([np.arange(a, b) for a, b in u.columns_for(f)])
        np.testing.assert_array_equal(rows[:, cols], f.transform(mols[:6]))
    assert u.columns_for(r3) == ((256, 2 * 256 + len(r2.descriptors)),)  # adjacent: one range
    with pytest.raises(ConfigError, match="more than the Morgan radius"):
        MoleculeFeaturizer.union([r2, replace(r3, n_bits=128)])
    with pytest.raises(ConfigError, match="not part of these rows"):
        r2.columns_for(r3)
    with pytest.raises(ConfigError, match="distinct radii"):
        MoleculeFeaturizer(radius=2, extra_radii=(2,))


def test_taskset_cache_roundtrip(tiny_fsmol: Path, tmp_path: Path) -> None:
    a = load_fsmol_dir(tiny_fsmol / "train", cache_dir=tmp_path)
    assert list(tmp_path.glob("tasks_*.npz"))
    b = load_fsmol_dir(tiny_fsmol / "train", cache_dir=tmp_path)
    assert a.items == b.items and a.n_invalid == b.n_invalid and a.skipped == b.skipped
    for x, y in zip(a.tasks, b.tasks, strict=True):
        assert x.task_id == y.task_id
        np.testing.assert_array_equal(x.item_idx, y.item_idx)
        np.testing.assert_array_equal(x.labels, y.labels)


def test_a_slice_of_files_loads_only_those_tasks_cached_or_not(
    tiny_fsmol: Path, tmp_path: Path
) -> None:
    from metascreen.domains.molecules.load import find_task_files, slice_task_files

    files = find_task_files(tiny_fsmol / "train")
    part = slice_task_files(files, 0.5, seed=0)
    assert 0 < len(part) < len(files)
    want = {f.name.split(".")[0] for f in part}
    plain = load_fsmol_dir(tiny_fsmol / "train", files=part)
    cached = load_fsmol_dir(tiny_fsmol / "train", cache_dir=tmp_path, files=part)
    again = load_fsmol_dir(tiny_fsmol / "train", cache_dir=tmp_path, files=part)
    ids = {t.task_id for t in plain.tasks}
    assert ids and ids <= want
    for ts in (cached, again):
        assert {t.task_id for t in ts.tasks} == ids and ts.items == plain.items
    full = load_fsmol_dir(tiny_fsmol / "train", cache_dir=tmp_path)  # its own cache entry
    assert len(full.tasks) > len(ids)
