"""The fast descriptor path gives RDKit's values exactly, and the featurizer's rows are unchanged.

The reference is RDKit's own ``Descriptors`` functions called one by one, and the featurizer as it
was before the fast path (``_reference_rows``: the code of ``MoleculeFeaturizer._raw`` and
``transform_mol`` at d370adb). Molecules: edge cases written here, and a few hundred from the
bundled FS-Mol sample (``data/fsmol-sample``, shipped with the repository).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import Descriptors, rdFingerprintGenerator

from metascreen.domains.molecules.descriptors import (
    DESCRIPTOR_FNS,
    DescriptorCalculator,
    descriptor_family,
    reference_values,
)
from metascreen.domains.molecules.featurize import (
    DEFAULT_DESCRIPTORS,
    FAST_DESCRIPTORS,
    MoleculeFeaturizer,
    parse_smiles,
)
from metascreen.domains.molecules.load import find_task_files, read_fsmol_file

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "artifacts" / "molecules-default" / "metadata.json"

EDGE_CASES = [
    "C",  # one atom, no bonds: Chi1 and the EState sums are empty
    "[Na+].[Cl-]",  # two fragments, no bonds, charges
    "CC(=O)[O-].[NH4+]",  # disconnected fragments: distances of 1e8 in the EState sum
    "[CH3]",  # radical
    "C[CH2]",
    "[2H]C([2H])([2H])O",  # isotopic hydrogens stay graph atoms after parsing
    "OP(=O)(O)OCC1OC(n2cnc3c(N)ncnc32)C(O)C1O",  # phosphate, aromatic heterocycles
    "FC(F)(F)c1ccc(Br)cc1I",  # halogens
    "C1CC2CCC1C2",  # bridgehead
    "[Fe+2].[O-]C(=O)C",  # metal
    "CS(=O)(=O)N1CCN(CC1)c1ccc(cc1)C#N",
    "C[N+](C)(C)C",
    "O=[N+]([O-])c1ccccc1",
    "c1ccc2c(c1)[nH]c1ccccc12",
    "C1=CC=CC=C1",
    "N#N",
    "[Si](C)(C)(C)C",
]


def _fsmol_sample(n: int) -> list[str]:
    files = find_task_files(REPO / "data" / "fsmol-sample" / "train")
    seen: dict[str, None] = {}
    for f in files:
        seen.update(dict.fromkeys(read_fsmol_file(f).smiles))
    pool = sorted(seen)
    idx = np.random.default_rng(0).choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in sorted(idx.tolist())]


def _mols(smiles: list[str]) -> list[Chem.Mol]:
    mols = [parse_smiles(s) for s in smiles]
    assert all(m is not None for m in mols)
    return mols  # type: ignore[return-value]


def _assert_same(ref: np.ndarray, new: np.ndarray, names: list[str] | tuple[str, ...]) -> None:
    same = (ref == new) | (np.isnan(ref) & np.isnan(new))
    bad = [(i, names[j], ref[i, j], new[i, j]) for i, j in zip(*np.nonzero(~same), strict=True)]
    assert not bad, bad[:10]


def test_every_rdkit_descriptor_matches_rdkit_on_edge_cases() -> None:
    names = [n for n, _ in Descriptors.descList]  # the slow ones too (fallback path)
    calc = DescriptorCalculator(names)
    mols = _mols(EDGE_CASES)
    ref = np.array([reference_values(Chem.Mol(m), names) for m in mols])
    new = np.array([calc.compute(Chem.Mol(m)) for m in mols])
    _assert_same(ref, new, names)


@pytest.mark.parametrize("names", [DEFAULT_DESCRIPTORS, FAST_DESCRIPTORS, ("MolWt", "TPSA")])
def test_shipped_descriptors_match_rdkit_on_fsmol_sample(names: tuple[str, ...]) -> None:
    calc = DescriptorCalculator(names)
    mols = _mols(_fsmol_sample(300))
    ref = np.array([reference_values(m, names) for m in mols])
    new = np.array([calc.compute(Chem.Mol(m)) for m in mols])
    assert float(np.nanmax(np.abs(ref - new))) == 0.0
    _assert_same(ref, new, names)


def _reference_rows(fz: MoleculeFeaturizer, mols: list[Chem.Mol]) -> np.ndarray:
    """The featurizer before the fast path: per molecule, descriptor by descriptor."""
    gens = [rdFingerprintGenerator.GetMorganGenerator(radius=r, fpSize=fz.n_bits) for r in fz.radii]
    rows = []
    for mol in mols:
        fp = np.concatenate(
            [np.log1p(g.GetCountFingerprintAsNumPy(mol).astype(np.float32)) for g in gens]
        )
        desc = np.empty(len(fz.descriptors), dtype=np.float64)
        for i, name in enumerate(fz.descriptors):
            try:
                desc[i] = float(DESCRIPTOR_FNS[name](mol))
            except (ValueError, ZeroDivisionError, RuntimeError):
                desc[i] = math.nan
        z = (desc.astype(np.float32) - np.asarray(fz.desc_mean, np.float32)) / np.asarray(
            fz.desc_std, np.float32
        )
        z = np.clip(np.nan_to_num(z, nan=0.0, posinf=fz.clip, neginf=-fz.clip), -fz.clip, fz.clip)
        rows.append(np.concatenate([fp, z.astype(np.float32)]))
    return np.stack(rows)


@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped model")
def test_shipped_featurizer_rows_and_hash_unchanged() -> None:
    fz_meta = json.loads(SHIPPED.read_text())["featurizer"]
    fz = MoleculeFeaturizer.from_spec(fz_meta["spec"], fz_meta["hash"])  # raises if it moved
    smiles = _fsmol_sample(300) + EDGE_CASES
    x = fz.transform_smiles(smiles)
    ref = _reference_rows(fz, _mols(smiles))
    assert x.dtype == np.float32 and x.shape == ref.shape
    assert float(np.max(np.abs(x - ref))) == 0.0
    # A row does not depend on the batch it is computed in.
    np.testing.assert_array_equal(fz.transform_mol(parse_smiles(smiles[7])), x[7])


def test_every_shipped_descriptor_has_a_family() -> None:
    fams = {descriptor_family(n) for n in DEFAULT_DESCRIPTORS}
    assert "other" not in fams
    assert {"PEOE_VSA", "SMR_VSA", "SlogP_VSA", "EState_VSA", "fragments (fr_*)"} <= fams
    assert descriptor_family("PEOE_VSA10") == "PEOE_VSA"
    assert descriptor_family("qed") == "other"


def test_unknown_descriptor_is_refused() -> None:
    with pytest.raises(KeyError):
        DescriptorCalculator(["MolWt", "NoSuchDescriptor"])


def test_fast_set_needs_no_python_atom_pass() -> None:
    """The fast set is C++ calls only: no atom table, no fragment, Crippen or EState block."""
    blocks = {b.name for b in DescriptorCalculator(FAST_DESCRIPTORS).blocks}
    assert "atom table (shared)" not in blocks
    assert not blocks & {"fragments (fr_*)", "Crippen (MolLogP, MolMR)", "EState_VSA", "SMR_VSA"}
    assert set(FAST_DESCRIPTORS) < set(DEFAULT_DESCRIPTORS)
    assert "atom table (shared)" in {b.name for b in DescriptorCalculator(("Chi0",)).blocks}
