"""Round trip of ``metascreen prepare molecules`` on ChEMBL-export-shaped tables built from FS-Mol.

    python benchmarks/molecules/prepare_roundtrip.py ../shared/data/fsmol [--every 1] [--workers 2]

Builds a ChEMBL web export (semicolon-separated, quoted, relations ``'='``, nM and %, target
class) of the FS-Mol train assays (``--every k``: every k-th file), and a messy copy (a seeded
tenth of the concentration assays in uM, six invalid rows in each of 5 assays, 2 conflicting and
2 agreeing repeats in each of 5 assays). Runs ``prepare molecules --split none`` (its function, in this process) on both and writes
``prepare_roundtrip.json``/``.md`` beside this script: label agreement with FS-Mol's
``Property`` on the pairs both keep, the keep rate of FS-Mol's parsable non-conflicting pairs,
row reconciliation and the quarantine checks.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from chembl_tables import (  # noqa: E402
    BAD_ROWS,
    add_bad_rows,
    add_duplicates,
    compare_labels,
    fsmol_to_chembl,
    read_fsmol_rows,
    to_micromolar,
)


def _run(table: Path, out: Path, workers: int) -> tuple[dict, float]:
    """``metascreen prepare molecules TABLE --out OUT --split none`` through the function the
    command calls (in this process, so each distinct SMILES is standardised once for both
    tables and the comparison)."""
    from metascreen.domains.molecules.prepare import PrepareConfig
    from metascreen.domains.molecules.prepare_io import prepare_table

    t0 = time.perf_counter()
    prepare_table(table, out, PrepareConfig(split="none", workers=workers))
    wall = time.perf_counter() - t0
    return json.loads((out / "prepare.json").read_text()), wall


def _tasks(out: Path) -> dict[str, pd.DataFrame]:
    return {
        f.name.split(".")[0]: pd.read_json(f, lines=True, dtype=str) for f in out.glob("*.jsonl.gz")
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("fsmol", type=Path)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    files = sorted((args.fsmol / "train").glob("*.jsonl.gz"))[:: args.every]
    proteins = args.fsmol / "targets" / "train_proteins.csv"
    fsmol = read_fsmol_rows(files)
    clean = fsmol_to_chembl(files, proteins)
    rng = np.random.default_rng(0)
    conc = sorted(clean.loc[clean["Standard Units"] == "nM", "Assay ChEMBL ID"].unique())
    um = sorted(rng.choice(conc, size=max(1, len(conc) // 10), replace=False).tolist())
    messy = to_micromolar(clean, um)
    others = [a for a in conc if a not in um]
    bad_assays = sorted(rng.choice(others, size=5, replace=False).tolist())
    dup_assays = sorted(
        rng.choice([a for a in others if a not in bad_assays], 5, replace=False).tolist()
    )
    conflicting: list[tuple[str, str]] = []
    for a in bad_assays:
        messy = add_bad_rows(messy, a)
    for a in dup_assays:
        messy, smis = add_duplicates(messy, a)
        conflicting += [(a, s) for s in smis]
    report: dict = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "train_files": len(files),
        "table_rows": len(clean),
        "messy_rows": len(messy),
        "um_assays": len(um),
    }
    with tempfile.TemporaryDirectory(prefix="prepare-rt-") as tmp:
        t = Path(tmp)
        for name, df in (("clean", clean), ("messy", messy)):
            df.to_csv(t / f"{name}.csv", sep=";", quoting=csv.QUOTE_ALL, index=False)
            summary, wall = _run(t / f"{name}.csv", t / name, args.workers)
            tasks = _tasks(t / name)
            fig = compare_labels(tasks, fsmol)
            fig |= {
                k: summary[k] for k in ("rows_in", "rows_kept", "rows_quarantined", "assays_kept")
            }
            fig["assays_dropped"] = len(summary["assays_dropped"])
            fig["reconciles"] = (
                summary["rows_in"] == summary["rows_kept"] + summary["rows_quarantined"]
            )
            fig["quarantine_reasons"] = summary["quarantine_reasons"]
            fig["wall_s"] = round(wall, 1)
            if name == "messy":
                q = pd.read_csv(t / name / "quarantine.csv", dtype=str, keep_default_na=False)
                planted = len(clean)  # the bad rows follow the clean rows, then the repeats
                bad_rows = set(range(planted, planted + len(BAD_ROWS) * len(bad_assays)))
                qrows = dict(zip(q["row"].astype(int), q["reason"], strict=True))
                fig["planted_bad_rows"] = len(bad_rows)
                fig["planted_bad_rows_quarantined"] = sum(1 for r in bad_rows if qrows.get(r))
                um_fs = fsmol[fsmol["Assay_ID"].isin(um)]
                fig["um_assays_agreement"] = compare_labels(
                    {a: d for a, d in tasks.items() if a in um}, um_fs
                )
                kept = {(a, s) for a, d in tasks.items() for s in d["SMILES"]}
                from metascreen.domains.molecules.prepare import standardize_smiles

                fig["conflicting_pairs_planted"] = len(conflicting)
                fig["conflicting_pairs_kept"] = sum(
                    (a, standardize_smiles(s)[0]) in kept for a, s in conflicting
                )
            report[name] = fig
            print(name, json.dumps(fig, indent=1), flush=True)  # noqa: T201
    (HERE / "prepare_roundtrip.json").write_text(json.dumps(report, indent=2) + "\n")
    c, m = report["clean"], report["messy"]
    md = [
        "# prepare molecules round trip (ChEMBL-export-shaped tables from FS-Mol train)",
        "",
        f"{report['train_files']} FS-Mol train files, {report['table_rows']} rows; messy copy "
        f"{report['messy_rows']} rows ({report['um_assays']} assays in uM, planted bad rows and "
        "repeats). `prepare molecules TABLE --out DIR --split none`.",
        "",
        "| table | label agreement (pairs both keep) | keep rate (FS-Mol clean pairs) | rows in = kept + quarantined | wall |",
        "|---|---|---|---|---|",
    ]
    for name, f in (("clean", c), ("messy", m)):
        md.append(
            f"| {name} | {f['agreement']:.4f} ({f['labels_agree']}/{f['pairs_both_keep']}) "
            f"| {f['keep_rate']:.4f} ({f['pairs_both_keep']}/{f['fsmol_clean_pairs']}) "
            f"| {f['rows_in']} = {f['rows_kept']} + {f['rows_quarantined']} | {f['wall_s']} s |"
        )
    u = m["um_assays_agreement"]
    md += [
        "",
        f"uM assays: agreement {u['agreement']:.4f} on {u['pairs_both_keep']} pairs, keep rate "
        f"{u['keep_rate']:.4f}. Planted bad rows quarantined: {m['planted_bad_rows_quarantined']}"
        f"/{m['planted_bad_rows']}. Conflicting repeats kept: {m['conflicting_pairs_kept']}"
        f"/{m['conflicting_pairs_planted']}. Machine: {report['machine']}.",
    ]
    (HERE / "prepare_roundtrip.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
