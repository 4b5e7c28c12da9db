"""RDKit 2D descriptors computed family by family, with the cheapest call that gives RDKit's value.

``Descriptors.descList`` holds one Python function per descriptor. Called one by one, many of them
redo shared work: each of the 14 ``PEOE_VSA*`` calls computes the whole 14-bin vector (and 10/12
for ``SMR_VSA``/``SlogP_VSA``), ``EState_VSA``/``VSA_EState`` run a pure-Python O(n²) loop for the
EState indices, ``Chi0``/``Chi1``/``NumValenceElectrons``/``NumRadicalElectrons`` loop over atoms
in Python, and the 85 ``fr_*`` functions each add a Python wrapper around one substructure search.
``DescriptorCalculator`` computes the same values with one call per vector, one pass over the atoms
shared by the families that need it, and numpy for the EState indices.

Values are *identical* to RDKit's functions, not close: the float64 sums keep RDKit's summation
order (sequential ``np.add.accumulate`` / ``np.bincount``, never numpy's pairwise ``sum``).
``tests/unit/test_descriptors.py`` checks max |diff| = 0 against ``reference_values``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from rdkit import Chem
from rdkit.Chem import Descriptors
from rdkit.Chem import rdMolDescriptors as rdmd
from rdkit.Chem.EState.EState_VSA import estateBins, vsaBins

DESCRIPTOR_FNS: dict[str, Callable[[Chem.Mol], float]] = dict(Descriptors.descList)

# RDKit raises these for molecules a descriptor is undefined on; the value is then NaN.
DESCRIPTOR_ERRORS = (ValueError, ZeroDivisionError, RuntimeError)

_MASSES = ("MolWt", "HeavyAtomMolWt", "ExactMolWt")
_ELECTRONS = ("NumValenceElectrons", "NumRadicalElectrons")
_WEIGHTS = _MASSES + _ELECTRONS
_ATOM_TABLE_NAMES = (*_ELECTRONS, "Chi0", "Chi1")
_SURFACE = ("LabuteASA", "TPSA")
_CRIPPEN = ("MolLogP", "MolMR")
_PARTIAL = ("MaxPartialCharge", "MinPartialCharge", "MaxAbsPartialCharge", "MinAbsPartialCharge")
_ESTATE_INDEX = ("MaxEStateIndex", "MinEStateIndex", "MaxAbsEStateIndex", "MinAbsEStateIndex")
# Families in the order ``DescriptorCalculator`` computes them; a name's family is the first match.
_VECTOR_FAMILIES = ("PEOE_VSA", "SMR_VSA", "SlogP_VSA", "EState_VSA", "VSA_EState")


def descriptor_family(name: str) -> str:
    """The family a descriptor is grouped (and timed) with, e.g. ``PEOE_VSA`` or ``fragments``."""
    for fam in _VECTOR_FAMILIES:
        if name.startswith(fam) and name[len(fam) :].isdigit():
            return fam
    if name in _WEIGHTS:
        return "weights and electrons"
    if name.startswith(("Chi", "Kappa")) or name == "HallKierAlpha":
        return "connectivity (Chi, Kappa)"
    if name in _SURFACE:
        return "surface areas (LabuteASA, TPSA)"
    if name in _CRIPPEN:
        return "Crippen (MolLogP, MolMR)"
    if name.startswith("fr_"):
        return "fragments (fr_*)"
    if name in _PARTIAL:
        return "partial charges"
    if name in _ESTATE_INDEX:
        return "EState indices"
    if name.startswith("BCUT2D"):
        return "BCUT2D"
    if name.startswith(("Num", "FractionCSP3", "RingCount")) or name.endswith("Count"):
        return "counts (atoms, rings, H-bonds, rotors)"
    return "other"


def reference_values(mol: Chem.Mol, names: Sequence[str]) -> npt.NDArray[np.float64]:
    """RDKit's own ``Descriptors`` functions, one by one (the definition the fast path matches)."""
    out = np.empty(len(names), dtype=np.float64)
    for i, name in enumerate(names):
        try:
            out[i] = float(DESCRIPTOR_FNS[name](mol))
        except DESCRIPTOR_ERRORS:
            out[i] = math.nan
    return out


# -- per-atom table shared by several families --------------------------------------------------
_TABLE = Chem.GetPeriodicTable()
_OUTER = np.array([_TABLE.GetNOuterElecs(z) if z else 0 for z in range(119)], dtype=np.int64)
# Principal quantum number as in rdkit.Chem.EState.GetPrincipleQuantumNumber.
_PQN = np.searchsorted(np.array([2, 10, 18, 36, 54, 86]), np.arange(119), side="left") + 1
_ESTATE_BINS = np.asarray(estateBins, dtype=np.float64)
_VSA_BINS = np.asarray(vsaBins, dtype=np.float64)


@dataclass(slots=True)
class _Atoms:
    """One Python pass over the atoms: what Chi0/Chi1, electrons and EState need."""

    z: npt.NDArray[np.int64]  # (n_atoms,) atomic numbers
    degree: npt.NDArray[np.int64]  # (n_atoms,) explicit neighbours
    total_hs: npt.NDArray[np.int64]  # (n_atoms,)
    charge: npt.NDArray[np.int64]  # (n_atoms,) formal charges
    radicals: npt.NDArray[np.int64]  # (n_atoms,)

    @classmethod
    def of(cls, mol: Chem.Mol) -> _Atoms:
        rows = [
            (
                a.GetAtomicNum(),
                a.GetDegree(),
                a.GetTotalNumHs(),
                a.GetFormalCharge(),
                a.GetNumRadicalElectrons(),
            )
            for a in mol.GetAtoms()
        ]
        t = np.array(rows, dtype=np.int64).reshape(-1, 5)
        return cls(t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4])


def _sequential_sum(values: npt.NDArray[np.float64]) -> float:
    """``sum(values)`` in Python's left-to-right order (numpy's ``sum`` is pairwise)."""
    return float(np.add.accumulate(values)[-1]) if len(values) else 0.0


def _chi0(atoms: _Atoms) -> float:
    """``GraphDescriptors.Chi0``: Σ 1/√δ over atoms with degree δ > 0, in atom order."""
    d = atoms.degree[atoms.degree != 0].astype(np.float64)
    return _sequential_sum(np.sqrt(1.0 / d))


def _chi1(mol: Chem.Mol, atoms: _Atoms) -> float:
    """``GraphDescriptors.Chi1``: Σ 1/√(δ_i δ_j) over bonds, in bond order."""
    ends = np.array(
        [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], dtype=np.int64
    ).reshape(-1, 2)
    c = atoms.degree[ends[:, 0]] * atoms.degree[ends[:, 1]]
    return _sequential_sum(np.sqrt(1.0 / c[c != 0].astype(np.float64)))


def estate_indices(mol: Chem.Mol, atoms: _Atoms) -> npt.NDArray[np.float64]:
    """``EState.EStateIndices`` without its Python double loop, bit for bit.

    RDKit adds (I_i − I_j)/p² to atom i and subtracts it from atom j for each pair i < j; atom i
    thus accumulates (I_i − I_j)/p² over j ≠ i in increasing j, which is a sequential row-wise
    ``np.add.accumulate`` of that matrix (pairs in different fragments, p ≥ 1e6, add exact zeros).
    """
    n = len(atoms.z)
    intrinsic = np.zeros(n, dtype=np.float64)
    has = atoms.degree > 0
    pqn = _PQN[atoms.z[has]]
    dv = _OUTER[atoms.z[has]] - atoms.total_hs[has]
    intrinsic[has] = (4.0 / (pqn * pqn) * dv + 1) / atoms.degree[has]
    if n == 0:
        return intrinsic
    p = Chem.GetDistanceMatrix(mol, useBO=False, useAtomWts=False) + 1
    terms = (intrinsic[:, None] - intrinsic[None, :]) / (p * p)  # (n, n)
    terms[p >= 1e6] = 0.0
    np.fill_diagonal(terms, 0.0)
    return np.add.accumulate(terms, axis=1)[:, -1] + intrinsic


# -- the calculator -----------------------------------------------------------------------------
Values = dict[str, float]
_Step = Callable[[Chem.Mol, dict[str, Any], Values], None]


def _vector_step(family: str, fn: Callable[..., Sequence[float]]) -> _Step:
    def step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
        for i, v in enumerate(fn(mol, force=False)):
            out[f"{family}{i + 1}"] = float(v)

    return step


def _atoms_step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
    ctx["atoms"] = _Atoms.of(mol)


def _masses_step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
    out["MolWt"] = rdmd._CalcMolWt(mol)
    out["HeavyAtomMolWt"] = rdmd._CalcMolWt(mol, True)
    out["ExactMolWt"] = rdmd.CalcExactMolWt(mol)


def _electrons_step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
    atoms: _Atoms = ctx["atoms"]
    out["NumValenceElectrons"] = float(
        np.sum(_OUTER[atoms.z] - atoms.charge + atoms.total_hs, dtype=np.int64)
    )
    out["NumRadicalElectrons"] = float(np.sum(atoms.radicals, dtype=np.int64))


def _chi01_step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
    out["Chi0"] = _chi0(ctx["atoms"])
    out["Chi1"] = _chi1(mol, ctx["atoms"])


def _estate_step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
    """``EState_VSA*`` and ``VSA_EState*`` (rdkit.Chem.EState.EState_VSA), one pass each."""
    if "EState_VSA1" in out:  # the other of the two families already computed both
        return
    e = estate_indices(mol, ctx["atoms"])
    ats, _hs = rdmd._CalcLabuteASAContribs(mol, True)
    vol = np.asarray(list(ats), dtype=np.float64)
    # np.bincount adds the weights in input (atom) order, as RDKit's loop does.
    ev = np.bincount(
        np.searchsorted(_ESTATE_BINS, e, side="right"), weights=vol, minlength=len(_ESTATE_BINS) + 1
    )
    ve = np.bincount(
        np.searchsorted(_VSA_BINS, vol, side="right"), weights=e, minlength=len(_VSA_BINS) + 1
    )
    for i, v in enumerate(ev.tolist()):
        out[f"EState_VSA{i + 1}"] = v
    for i, v in enumerate(ve.tolist()):
        out[f"VSA_EState{i + 1}"] = v


def _crippen_step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
    out["MolLogP"], out["MolMR"] = rdmd.CalcCrippenDescriptors(mol)


def _fragment_pattern(name: str) -> Chem.Mol | None:
    """The SMARTS query behind RDKit's ``fr_*`` function (its ``pattern`` default argument)."""
    defaults = getattr(DESCRIPTOR_FNS[name], "__defaults__", None) or ()
    found = [d for d in defaults if isinstance(d, Chem.Mol)]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True, slots=True)
class Block:
    """One timed unit of descriptor work: a family, or the atom table families share."""

    name: str
    run: Callable[[Chem.Mol, dict[str, Any], Values], None]


class DescriptorCalculator:
    """Computes ``names`` (RDKit ``Descriptors`` names) with the fewest RDKit calls.

    ``compute(mol)`` returns the (n_names,) float64 values in ``names`` order, NaN where RDKit
    raises (as ``reference_values``). A family computed in one call shares its fate: if that call
    raises, all of its names are NaN, as they would be one by one (each recomputes the same call).
    Names with no faster route run RDKit's own function.
    """

    def __init__(self, names: Sequence[str]) -> None:
        """Plan the blocks for ``names`` (unknown names raise ``KeyError``)."""
        self.names = tuple(names)
        for n in self.names:
            if n not in DESCRIPTOR_FNS:
                raise KeyError(n)
        fams: dict[str, list[str]] = {}
        for n in self.names:
            fams.setdefault(descriptor_family(n), []).append(n)
        blocks: list[Block] = []
        # The Python atom pass is built only for the names that read it (masses are C++ calls).
        if set(_ATOM_TABLE_NAMES) & set(self.names) or {"EState_VSA", "VSA_EState"} & set(fams):
            blocks.append(Block("atom table (shared)", _atoms_step))
        for fam, members in fams.items():
            blocks.append(Block(fam, self._family_step(fam, members)))
        self.blocks = tuple(blocks)

    def _family_step(self, fam: str, members: list[str]) -> _Step:
        fast: list[_Step] = []
        rest = list(members)
        vectors = {
            "PEOE_VSA": rdmd.PEOE_VSA_,
            "SMR_VSA": rdmd.SMR_VSA_,
            "SlogP_VSA": rdmd.SlogP_VSA_,
        }
        if fam in vectors:
            fast, rest = [_vector_step(fam, vectors[fam])], []
        elif fam in ("EState_VSA", "VSA_EState"):
            fast, rest = [_estate_step], []
        elif fam == "weights and electrons":
            fast = [_masses_step] if set(_MASSES) & set(members) else []
            if set(_ELECTRONS) & set(members):
                fast.append(_electrons_step)
            rest = []
        elif fam == "Crippen (MolLogP, MolMR)":
            fast, rest = [_crippen_step], []
        elif fam.startswith("connectivity") and {"Chi0", "Chi1"} & set(members):
            fast = [_chi01_step]
            rest = [n for n in members if n not in ("Chi0", "Chi1")]
        if fam.startswith("fragments"):
            patterns = [(n, _fragment_pattern(n)) for n in members]
            frag = [(n, p) for n, p in patterns if p is not None]
            rest = [n for n, p in patterns if p is None]

            def fragments(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
                for n, p in frag:
                    try:
                        out[n] = float(len(mol.GetSubstructMatches(p)))
                    except DESCRIPTOR_ERRORS:
                        out[n] = math.nan

            fast = [fragments]
        singles = [(n, DESCRIPTOR_FNS[n]) for n in rest]
        shared = set(members) - set(rest)

        def step(mol: Chem.Mol, ctx: dict[str, Any], out: Values) -> None:
            for f in fast:
                try:
                    f(mol, ctx, out)
                except DESCRIPTOR_ERRORS:
                    out.update(dict.fromkeys(shared, math.nan))
            for n, fn in singles:
                try:
                    out[n] = float(fn(mol))
                except DESCRIPTOR_ERRORS:
                    out[n] = math.nan

        return step

    def compute(self, mol: Chem.Mol) -> npt.NDArray[np.float64]:
        """(n_names,) descriptor values of one molecule, equal to ``reference_values``."""
        ctx: dict[str, Any] = {}
        out: Values = {}
        for b in self.blocks:
            b.run(mol, ctx, out)
        return np.array([out[n] for n in self.names], dtype=np.float64)
