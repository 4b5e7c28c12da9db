"""Kinase-family tables for the fine-tuning check (docs/molecules.md#fine-tuning-on-a-family).

    python benchmarks/molecules/kinase_finetune.py ../shared/data/fsmol OUT_DIR

FS-Mol train assays whose target class mentions "kinase" (EC 2) are split by the shipped
model's own selection slice (``slice_task_files``: 10 %, seed 0): ``history.csv`` holds the
kinase assays the shipped model trained on (a team's in-house history), ``held.csv`` the ones it
never trained on. Both are ChEMBL-export-shaped (``tests/chembl_tables.py``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from chembl_tables import fsmol_to_chembl  # noqa: E402
from metascreen.domains.molecules.load import slice_task_files  # noqa: E402


def main(fsmol: Path, out: Path) -> None:
    """Write ``out/history.csv`` and ``out/held.csv``."""
    proteins = fsmol / "targets" / "train_proteins.csv"
    info = pd.read_csv(proteins, dtype=str, keep_default_na=False)
    kinase = set(info.loc[info["protein_class_desc"].str.contains("kinase"), "chembl_id"])
    files = sorted((fsmol / "train").glob("*.jsonl.gz"))
    held_out = set(slice_task_files(files, 0.1, 0))
    family = [f for f in files if f.name.removesuffix(".jsonl.gz") in kinase]
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (
        ("history", [f for f in family if f not in held_out]),
        ("held", [f for f in family if f in held_out]),
    ):
        df = fsmol_to_chembl(part, proteins)
        df.to_csv(out / f"{name}.csv", sep=";", quoting=csv.QUOTE_ALL, index=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
