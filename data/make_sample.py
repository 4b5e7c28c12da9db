"""Regenerate the bundled FS-Mol sample and the scoring-demo library from a full FS-Mol copy.

Usage: python data/make_sample.py ../shared/data/fsmol
Deterministic (seed 0). Files are copied unchanged (gzipped JSON lines, CC BY-SA 3.0).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(src: Path) -> None:
    rng = random.Random(0)
    out = HERE / "fsmol-sample"
    shutil.rmtree(out, ignore_errors=True)
    picks = {}
    for split, n, lo, hi in (("train", 40, 48, 200), ("valid", 10, 60, 400)):
        files = sorted((src / split).glob("*.jsonl.gz"))
        ok = [f for f in files if lo <= len(rows(f)) <= hi]
        picks[split] = sorted(rng.sample(ok, n))
        (out / split).mkdir(parents=True)
        for f in picks[split]:
            shutil.copy(f, out / split / f.name)
    # Scoring demo: 16 labelled compounds of one valid sample task form the support set; the
    # library is the rest of that task plus compounds of other train tasks and a few bad rows.
    task = rows(picks["valid"][0])
    rng.shuffle(task)
    pos = [r for r in task if r["Property"] == "1.0"][:8]
    neg = [r for r in task if r["Property"] == "0.0"][:8]
    support = pos + neg
    used = {r["SMILES"] for r in support}
    lib = [r["SMILES"] for r in task if r["SMILES"] not in used]
    others = sorted(set((src / "train").glob("*.jsonl.gz")) - set(picks["train"]))
    for f in rng.sample(others, 60):
        lib += [r["SMILES"] for r in rows(f)]
    lib = sorted(set(lib))
    rng.shuffle(lib)
    lib = lib[:3000]
    bad = ["", "C1CC", "not_a_smiles", "CC(=O)O[PH](=O)(=O)O", "c1ccccc"]
    for i, s in enumerate(bad):
        lib.insert(100 + 500 * i, s)
    (HERE / "library").mkdir(exist_ok=True)
    with open(HERE / "library" / "support.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["SMILES", "label", "source_assay"])
        for r in support:
            w.writerow([r["SMILES"], int(float(r["Property"])), r["Assay_ID"]])
    with open(HERE / "library" / "library.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["compound_id", "SMILES"])
        for i, s in enumerate(lib):
            w.writerow([f"LIB{i:05d}", s])
    print({k: [p.name for p in v] for k, v in picks.items()}, len(lib))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
