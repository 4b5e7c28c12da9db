"""FS-Mol's cleaning rules in ``domains.molecules.prepare``, one by one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metascreen.domains.errors import ConfigError
from metascreen.domains.molecules.prepare import (
    Columns,
    PrepareConfig,
    clean_relation,
    is_enzyme,
    prepare_tasks,
    px_from,
    reason_kind,
    split_by_target,
    standardize_smiles,
    threshold_rule,
    unit_kind,
)

pytestmark = pytest.mark.unit

SMALL = PrepareConfig(min_size=1, balance=(0.0, 1.0), split="none")


def _table(rows: list[tuple[str, str, str, str, str]], target_class: str = "") -> pd.DataFrame:
    """(assay, smiles, relation, value, unit) rows as a ChEMBL export."""
    return pd.DataFrame(
        {
            "Assay ChEMBL ID": [r[0] for r in rows],
            "Smiles": [r[1] for r in rows],
            "Standard Relation": [r[2] for r in rows],
            "Standard Value": [r[3] for r in rows],
            "Standard Units": [r[4] for r in rows],
            "Target ChEMBL ID": ["T1"] * len(rows),
            "Target Class": [target_class] * len(rows),
            "Assay Type": ["B"] * len(rows),
        }
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("'='", "="),
        ("'>'", ">"),
        ("'<='", "<="),
        ("=", "="),
        ("", "="),
        (None, "="),
        ("'>>'", ">"),
        ("'~'", "~"),
        ("'?'", None),
        ("abc", None),
    ],
)
def test_relations_read_with_chembl_quoting(text: object, want: str | None) -> None:
    assert clean_relation(text) == want


def test_every_concentration_unit_is_converted_uM_included() -> None:
    assert px_from(41.0, "nM") == pytest.approx(7.387216143280264)  # FS-Mol's own row
    assert px_from(0.041, "uM") == pytest.approx(7.387216143280264)
    assert px_from(0.041, "µM") == pytest.approx(px_from(41.0, "nM"))
    assert px_from(41000.0, "pM") == pytest.approx(px_from(41.0, "nM"))
    assert px_from(1e-6, "M") == pytest.approx(6.0)
    assert px_from(1.0, "mM") == pytest.approx(3.0)
    assert unit_kind("%") == "pct"
    assert unit_kind("ug.mL-1") is None
    assert unit_kind("") is None


def test_enzyme_test_is_fsmols_substring_rule() -> None:
    assert is_enzyme(["enzyme  kinase  protein kinase"])
    assert is_enzyme(["", "phosphodiesterase"])  # "ase"
    assert not is_enzyme(["membrane receptor  7tm1"])
    assert not is_enzyme(["", ""])


@pytest.mark.parametrize(
    ("values", "kind", "enzyme", "want"),
    [
        ([6.5, 6.5, 6.5], "conc", True, 6.5),  # in 5–7
        ([6.5, 6.5, 6.5], "conc", False, 5.0),  # outside 4–6
        ([4.5, 4.5], "conc", True, 5.0),  # outside 5–7
        ([4.5, 4.5], "conc", False, 4.5),
        ([7.0, 7.0], "conc", True, 7.0),  # limits are inclusive
        ([80.0, 60.0, 70.0], "pct", False, 70.0),
        ([10.0, 20.0, 30.0], "pct", False, 50.0),
    ],
)
def test_median_threshold_rule(values: list[float], kind: str, enzyme: bool, want: float) -> None:
    thr, rule = threshold_rule(np.asarray(values), kind, enzyme)
    assert thr == pytest.approx(want)
    assert ("median" if thr == np.median(values) else "fixed") in rule


def test_standardisation_parent_neutral_canonical() -> None:
    smi, mw, reason = standardize_smiles("C(=O)[O-].[Na+].c1ccccc1")  # salt mixture
    assert reason == ""
    assert smi == "c1ccccc1"
    assert mw == pytest.approx(78.11, abs=0.01)
    assert standardize_smiles("CC(=O)[O-].[Na+]")[0] == "CC(=O)O"
    assert standardize_smiles("not((")[0] is None
    assert standardize_smiles("")[2] == "empty SMILES"


def test_labels_units_duplicates_and_reconciliation() -> None:
    rows = [
        ("A1", "CCO", "'='", "10", "nM"),  # pX 8 → active
        ("A1", "CCN", "'='", "10000", "nM"),  # pX 5 → inactive
        ("A1", "CCC", "'>'", "100", "uM"),  # pX 4 → inactive (uM converted)
        ("A1", "CCCl", "'='", "0.01", "uM"),  # pX 8 → active
        ("A1", "CCO", "'='", "10", "nM"),  # exact repeat of row 0
        ("A1", "CCCl", "'='", "1000", "uM"),  # pX 3: conflicts with row 3 (> 1 log unit)
        ("A1", "CCBr", "'='", "12", "nM"),  # agreeing repeat pair
        ("A1", "CCBr", "'='", "15", "nM"),
        ("A1", "CCI", "'='", "3", "ug.mL-1"),  # unknown unit
        ("A1", "CCS", "'='", "n.d.", "nM"),  # not a number
        ("A1", "CCF", "'?'", "5", "nM"),  # unknown relation
        ("A1", "C[N+](C)(C)C.[Cl-]", "'='", "1", "nM"),  # salt: parent kept
    ]
    res = prepare_tasks(_table(rows, "enzyme  kinase"), config=SMALL)
    s = res.summary
    assert s["rows_in"] == len(rows) == s["rows_kept"] + s["rows_quarantined"]
    task = res.tasks["A1"].set_index("row")
    assert set(task.index) == {0, 1, 2, 6, 11}
    q = res.quarantine.set_index("row")["reason"]
    assert q[4].startswith("duplicate of row 0")
    assert q[3].startswith("conflicting measurements") and q[5].startswith("conflicting")
    assert q[7].startswith("duplicate of row 6 (agreeing label")
    assert "unit is neither" in q[8] and "not a number" in q[9] and "unknown relation" in q[10]
    assert set(res.quarantine.columns) >= {"row", "reason", "Smiles", "Standard Value"}
    thr = s["thresholds"]["A1"]["value"]
    assert 5 <= thr <= 7  # enzyme limits
    px = {0: 8.0, 1: 5.0, 2: 4.0, 11: 9.0}
    for r, p in px.items():
        assert task.loc[r, "Property"] == ("1.0" if p > thr else "0.0")
        assert float(task.loc[r, "LogRegressionProperty"]) == pytest.approx(p)
    assert float(task.loc[2, "RegressionProperty"]) == pytest.approx(100000.0)  # in nM
    assert task.loc[2, "Relation"] == ">"
    assert task.loc[11, "SMILES"] == "C[N+](C)(C)C"  # a quaternary ammonium stays charged


def test_straddling_repeats_are_quarantined_with_the_threshold() -> None:
    rows = [("A", f"C{'C' * i}O", "=", str(v), "nM") for i, v in enumerate([10, 20, 5e4, 1e5])]
    rows += [("A", "c1ccccc1", "=", "900", "nM"), ("A", "c1ccccc1", "=", "1100", "nM")]
    res = prepare_tasks(_table(rows, "enzyme  protease"), config=SMALL)
    thr = res.summary["thresholds"]["A"]["value"]
    assert 5.958 < thr < 6.046  # the median lies between the repeats' values
    reasons = res.quarantine.set_index("row")["reason"]
    assert reasons[4].startswith("conflicting labels") and reasons[5].startswith("conflicting")


def test_percent_inhibition_stays_linear() -> None:
    rows = [("P", f"C{'C' * i}O", "=", str(v), "%") for i, v in enumerate([10, 40, 60, 90])]
    res = prepare_tasks(_table(rows), config=SMALL)
    t = res.tasks["P"]
    assert res.summary["thresholds"]["P"]["value"] == 50.0  # median 50 → used (≥ 50)
    assert list(t["Property"]) == ["0.0", "0.0", "1.0", "1.0"]
    assert list(t["RegressionProperty"].astype(float)) == [10, 40, 60, 90]


def test_mixed_units_in_one_assay_keep_the_majority_kind() -> None:
    rows = [("M", f"C{'C' * i}O", "=", "10", "nM") for i in range(3)]
    rows.append(("M", "CCCCCCCO", "=", "50", "%"))
    res = prepare_tasks(_table(rows), config=SMALL)
    assert "unit kind differs" in res.quarantine["reason"].iloc[0]
    assert res.summary["rows_kept"] == 3


def test_assay_filters_size_and_balance() -> None:
    rows = [("S", f"C{'C' * i}O", "=", str(10.0 ** (i % 3)), "nM") for i in range(5)]
    res = prepare_tasks(_table(rows), config=PrepareConfig(min_size=6, split="none"))
    assert "fewer than --min-size 6" in res.summary["assays_dropped"]["S"]
    assert res.summary["rows_kept"] == 0
    assert (res.quarantine["reason"].str.startswith("assay dropped")).all()
    res = prepare_tasks(_table(rows), config=PrepareConfig(min_size=1, balance=(0.45, 0.55)))
    assert "outside --balance" in res.summary["assays_dropped"]["S"]


def test_given_label_column_is_used_as_is() -> None:
    df = pd.DataFrame(
        {"aid": ["X"] * 4, "smi": ["CCO", "CCN", "CCC", "CCO"], "y": ["1", "0", "maybe", "0"]}
    )
    res = prepare_tasks(df, Columns(assay="aid", smiles="smi", label="y"), SMALL)
    reasons = res.quarantine.set_index("row")["reason"]
    assert "not binary" in reasons[2]
    assert reasons[0].startswith("conflicting") and reasons[3].startswith("conflicting")
    assert list(res.tasks["X"]["Property"]) == ["0.0"]


def test_split_by_target_never_straddles_and_is_seeded() -> None:
    groups = {f"A{i}": f"T{i % 7}" for i in range(40)}
    s1 = split_by_target(groups, (0.8, 0.1, 0.1), seed=3)
    assert s1 == split_by_target(groups, (0.8, 0.1, 0.1), seed=3)
    assert set(s1.values()) == {"train", "valid", "test"}
    per_target: dict[str, set[str]] = {}
    for a, s in s1.items():
        per_target.setdefault(groups[a], set()).add(s)
    assert all(len(v) == 1 for v in per_target.values())
    counts = pd.Series(s1).value_counts()
    assert counts["train"] > counts["valid"] and counts["train"] > counts["test"]


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="balance"):
        PrepareConfig(balance=(0.8, 0.2))
    with pytest.raises(ConfigError, match="fractions"):
        PrepareConfig(fractions=(0.5, 0.1, 0.1))


def test_reason_kinds_group_details() -> None:
    assert reason_kind("duplicate of row 12 (same molecule, same value)") == "duplicate of row N"
    assert reason_kind("assay dropped: 3 measurements, fewer than") == "assay dropped"
    assert not math.isnan(len(reason_kind("")))


def test_quarantined_rows_never_make_a_live_row_a_duplicate() -> None:
    rows = [
        ("A", "CCO", "'?'", "10", "nM"),  # quarantined first (relation) …
        ("A", "CCO", "'='", "10", "nM"),  # … so this one is the molecule's only live row
        ("A", "CCN", "'='", "1e5", "nM"),
    ]
    res = prepare_tasks(_table(rows), config=SMALL)
    assert list(res.tasks["A"]["row"]) == [1, 2]
    assert res.summary["rows_quarantined"] == 1


def test_delimiter_is_sniffed(tmp_path) -> None:  # noqa: ANN001
    from metascreen.domains.molecules.prepare_io import read_activity_table, sniff_delimiter

    for sep in (",", ";", "\t", "|"):
        path = tmp_path / "t.csv"
        path.write_text(f'"Smiles"{sep}"Standard Relation"\n"CCO"{sep}"\'=\'"\n')
        assert sniff_delimiter(path) == sep
        df = read_activity_table(path)
        assert list(df.columns) == ["Smiles", "Standard Relation"]
        assert df.iloc[0, 1] == "'='"


def test_task_file_names_are_safe_and_distinct() -> None:
    from metascreen.domains.molecules.prepare_io import task_file_names

    names = task_file_names(["CHEMBL1", "a/b", "a_b", "../x", "A_B"])
    assert names["CHEMBL1"] == "CHEMBL1.jsonl.gz"
    assert len(set(n.lower() for n in names.values())) == 5
    assert all("/" not in n and not n.startswith(".") for n in names.values())
