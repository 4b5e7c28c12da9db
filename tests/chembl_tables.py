"""ChEMBL-web-export-shaped activity tables built from FS-Mol task files, for round-trip tests.

FS-Mol's files keep each measurement's value (``RegressionProperty``, nM or %), relation and
binary label, but not its unit. The unit is read from the label's direction: in a % inhibition
assay the actives have the larger values, in a concentration assay the smaller ones.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

CHEMBL_HEADER = (
    "Molecule ChEMBL ID",
    "Smiles",
    "Standard Type",
    "Standard Relation",
    "Standard Value",
    "Standard Units",
    "pChEMBL Value",
    "Assay ChEMBL ID",
    "Assay Type",
    "Target ChEMBL ID",
    "Target Class",
)


def read_fsmol_rows(files: Sequence[Path]) -> pd.DataFrame:
    """Every line of the task files as a frame (FS-Mol's fields, as text)."""
    recs = []
    for f in files:
        with gzip.open(f, "rt") as fh:
            recs += [json.loads(line) for line in fh if line.strip()]
    return pd.DataFrame(recs)


def percent_assays(rows: pd.DataFrame) -> set[str]:
    """Assays whose actives have the larger values (% inhibition)."""
    v = pd.to_numeric(rows["RegressionProperty"], errors="coerce")
    y = rows["Property"].astype(float)
    means = pd.DataFrame({"a": rows["Assay_ID"], "v": v, "y": y}).groupby(["a", "y"])["v"].median()
    out = set()
    for assay in rows["Assay_ID"].unique():
        if (
            (assay, 1.0) in means
            and (assay, 0.0) in means
            and means[assay, 1.0] > means[assay, 0.0]
        ):
            out.add(assay)
    return out


def target_info(proteins_csv: Path | None) -> pd.DataFrame:
    """FS-Mol's ``targets/*_proteins.csv``: assay → target id and protein class."""
    if proteins_csv is None:
        return pd.DataFrame(columns=["chembl_id", "target_id", "protein_class_desc"])
    info = pd.read_csv(proteins_csv, dtype=str, keep_default_na=False)
    return info[["chembl_id", "target_id", "protein_class_desc"]].drop_duplicates("chembl_id")


def fsmol_to_chembl(files: Sequence[Path], proteins_csv: Path | None = None) -> pd.DataFrame:
    """A ChEMBL web export of the assays in ``files`` (nM or %, relations quoted ``'='``)."""
    rows = read_fsmol_rows(files)
    pct = percent_assays(rows)
    info = target_info(proteins_csv).set_index("chembl_id")
    is_pct = rows["Assay_ID"].isin(pct)
    rel = rows["Relation"].fillna("")
    tid = rows["Assay_ID"].map(info["target_id"]).fillna("")
    pchembl = np.where(~is_pct & (rel == "="), rows["LogRegressionProperty"], "")
    return pd.DataFrame(
        {
            "Molecule ChEMBL ID": [f"MOL{i}" for i in range(len(rows))],
            "Smiles": rows["SMILES"],
            "Standard Type": np.where(is_pct, "Inhibition", "IC50"),
            "Standard Relation": np.where(rel == "", "", "'" + rel + "'"),
            "Standard Value": rows["RegressionProperty"],
            "Standard Units": np.where(is_pct, "%", "nM"),
            "pChEMBL Value": pchembl,
            "Assay ChEMBL ID": rows["Assay_ID"],
            "Assay Type": rows["AssayType"],
            "Target ChEMBL ID": np.where(tid == "", "", "TID" + tid),
            "Target Class": rows["Assay_ID"].map(info["protein_class_desc"]).fillna(""),
        },
        columns=list(CHEMBL_HEADER),
    )


def to_micromolar(df: pd.DataFrame, assays: Sequence[str]) -> pd.DataFrame:
    """The same measurements of ``assays`` written in uM (values / 1000)."""
    df = df.copy()
    m = df["Assay ChEMBL ID"].isin(assays) & (df["Standard Units"] == "nM")
    df.loc[m, "Standard Value"] = [repr(float(v) / 1000) for v in df.loc[m, "Standard Value"]]
    df.loc[m, "Standard Units"] = "uM"
    return df


BAD_ROWS = (
    ("not-a-smiles((", "'='", "12", "nM"),  # unparsable SMILES
    ("", "'='", "12", "nM"),  # empty SMILES
    ("CCO", "'='", "n.d.", "nM"),  # value not a number
    ("CCN", "'='", "3", "ug.mL-1"),  # unknown unit
    ("CCC", "'?'", "5", "nM"),  # unknown relation
    ("CCCl", "'='", "-4", "nM"),  # non-positive concentration
)


def add_bad_rows(df: pd.DataFrame, assay: str) -> pd.DataFrame:
    """Append one invalid row of each kind (``BAD_ROWS``) to ``assay``."""
    template = df[df["Assay ChEMBL ID"] == assay].iloc[0]
    extra = []
    for smi, rel, val, unit in BAD_ROWS:
        r = template.copy()
        r["Smiles"], r["Standard Relation"], r["Standard Value"], r["Standard Units"] = (
            smi,
            rel,
            val,
            unit,
        )
        extra.append(r)
    return pd.concat([df, pd.DataFrame(extra)], ignore_index=True)


def add_duplicates(df: pd.DataFrame, assay: str, n: int = 2) -> tuple[pd.DataFrame, list[str]]:
    """Repeat ``n`` molecules of a concentration ``assay``: each with a value 100x lower (a
    conflict, > 1 log unit) and ``n`` more with the same value (an agreeing repeat).
    Returns the table and the conflicting SMILES."""
    rows = df[df["Assay ChEMBL ID"] == assay]
    assert (rows["Standard Units"] == "nM").all()
    conflict = rows.iloc[:n].copy()
    conflict["Standard Value"] = [repr(float(v) / 100) for v in conflict["Standard Value"]]
    agree = rows.iloc[n : 2 * n].copy()
    out = pd.concat([df, conflict, agree], ignore_index=True)
    return out, list(conflict["Smiles"])


def compare_labels(tasks: dict[str, pd.DataFrame], fsmol: pd.DataFrame) -> dict[str, float]:
    """Round-trip figures: prepared labels against FS-Mol's ``Property`` per (assay, SMILES).

    FS-Mol's SMILES are standardised the same way before matching. An FS-Mol pair is parsable
    when RDKit reads its SMILES, conflicting when FS-Mol holds it with both labels.
    """
    from metascreen.domains.molecules.prepare import standardize_smiles

    std = {s: standardize_smiles(s)[0] for s in fsmol["SMILES"].unique()}
    ref = pd.DataFrame(
        {
            "assay": fsmol["Assay_ID"],
            "smiles": fsmol["SMILES"].map(std),
            "y": fsmol["Property"].astype(float),
        }
    ).dropna(subset=["smiles"])
    per_pair = ref.groupby(["assay", "smiles"])["y"].agg(["min", "max"])
    clean = per_pair[per_pair["min"] == per_pair["max"]]["min"]
    got = (
        pd.concat(
            [
                pd.DataFrame({"assay": a, "smiles": t["SMILES"], "p": t["Property"].astype(float)})
                for a, t in tasks.items()
            ]
        ).set_index(["assay", "smiles"])["p"]
        if tasks
        else pd.Series(dtype=float)
    )
    both = clean.index.intersection(got.index)
    agree = int((clean[both] == got[both]).sum())
    return {
        "fsmol_pairs": len(per_pair),
        "fsmol_conflicting_pairs": int(len(per_pair) - len(clean)),
        "fsmol_clean_pairs": len(clean),
        "pairs_both_keep": len(both),
        "labels_agree": agree,
        "agreement": agree / max(len(both), 1),
        "keep_rate": len(both) / max(len(clean), 1),
    }
