"""Tiny generated FS-Mol-format data for tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

SUBSTITUENTS = ["O", "N", "Cl", "F", "C(=O)O", "C#N", "S", "Br", "OC", "NC", "C(N)=O", "c1ccccc1"]
ACTIVE_SUBSTITUENTS = {"N", "NC", "C(N)=O", "C#N"}


def make_smiles(n: int, seed: int) -> list[tuple[str, float]]:
    """``n`` distinct valid SMILES with a learnable label (nitrogen-bearing substituent = active)."""
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    while len(out) < n:
        chain = "C" * int(rng.integers(1, 9))
        ring = ["", "c1ccccc1", "C1CCCCC1", "c1ccncc1"][int(rng.integers(4))]
        sub = SUBSTITUENTS[int(rng.integers(len(SUBSTITUENTS)))]
        smi = f"{ring}{chain}{sub}" if ring else f"{chain}{sub}"
        out[smi] = 1.0 if sub in ACTIVE_SUBSTITUENTS else 0.0
    return list(out.items())


def write_task(
    path: Path, rows: list[tuple[str, float]], extra_lines: list[str] | None = None
) -> None:
    """Write an FS-Mol task file (gzipped JSON lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        for smi, y in rows:
            fh.write(
                json.dumps(
                    {"SMILES": smi, "Property": f"{y:.1f}", "Assay_ID": path.name.split(".")[0]}
                )
                + "\n"
            )
        for line in extra_lines or []:
            fh.write(line + "\n")


def tiny_featurizer(root: Path):  # noqa: ANN201
    """The tiny models' featurizer (512 bits, 3 descriptors) fitted on ``root/train``."""
    from metascreen.domains.molecules.featurize import MoleculeFeaturizer
    from metascreen.domains.molecules.load import load_fsmol_dir
    from metascreen.models.features.molecules import fit_featurizer

    return fit_featurizer(
        MoleculeFeaturizer(n_bits=512, descriptors=("MolWt", "TPSA", "NumHDonors")),
        load_fsmol_dir(root / "train"),
    )
