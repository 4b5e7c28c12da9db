"""SMILES → feature arrays: Morgan/ECFP fingerprints and scaled RDKit 2D descriptors (numpy only).

Optionally (``graph_atoms > 0``) each row also carries the molecular graph as a dense block, so a
graph encoder can read it from the same fixed-length float row (see ``GraphLayout``).

The featurizer's *spec* (name, params, fitted scaling statistics, version, RDKit version) is
hashed; artifacts store the hash and scoring refuses an artifact whose hash differs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import islice
from typing import Any

import numpy as np
import rdkit
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors, rdFingerprintGenerator

from metascreen.domains.errors import ArtifactMismatchError, ConfigError
from metascreen.domains.io import canonical_json_hash
from metascreen.domains.molecules.descriptors import DESCRIPTOR_FNS, DescriptorCalculator
from metascreen.domains.molecules.layout import (
    ATOM_FEATURES,
    COL_AROM,
    COL_CHARGE,
    COL_DEG,
    COL_ELEM,
    COL_HYB,
    COL_NH,
    COL_RING,
    GRAPH_ELEMENTS,
    N_HYB_GROUPS,
    GraphLayout,
    graph_block_size,
)
from metascreen.domains.parallel import fork_pool
from metascreen.domains.types import FloatArray

logger = logging.getLogger(__name__)
RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]

FEATURIZER_VERSION = 1

# Descriptors left out of the default set because each costs more than ~60 µs per molecule on
# this hardware (qed ≈ 1 ms, BCUT2D ≈ 0.5 ms, Ipc/AvgIpc/BertzCT/SPS ≈ 0.2–0.3 ms) while
# carrying information the fingerprint and the cheap descriptors already hold.
SLOW_DESCRIPTORS = frozenset(
    {
        "qed",
        "BertzCT",
        "Ipc",
        "AvgIpc",
        "SPS",
        "BalabanJ",
        "BCUT2D_MWHI",
        "BCUT2D_MWLOW",
        "BCUT2D_CHGHI",
        "BCUT2D_CHGLO",
        "BCUT2D_LOGPHI",
        "BCUT2D_LOGPLOW",
        "BCUT2D_MRHI",
        "BCUT2D_MRLOW",
        "MaxEStateIndex",
        "MinEStateIndex",
        "MaxAbsEStateIndex",
        "MinAbsEStateIndex",
        "FpDensityMorgan1",
        "FpDensityMorgan2",
        "FpDensityMorgan3",
        "Chi3n",
        "Chi3v",
        "Chi4n",
        "Chi4v",
        "Kappa3",
        "Phi",
        "MaxPartialCharge",
        "MinPartialCharge",
        "MaxAbsPartialCharge",
        "MinAbsPartialCharge",
    }
)
DEFAULT_DESCRIPTORS = tuple(n for n, _ in Descriptors.descList if n not in SLOW_DESCRIPTORS)

# The descriptors that are single C++ calls costing a few µs each on FS-Mol molecules (measured
# one by one; ``metascreen bench featurize`` times the blocks): masses, surface areas, the
# PEOE_VSA vector (one call), C++ connectivity indices and ring/atom/H-bond counts. Left out of
# this set: Crippen (MolLogP/MolMR, SMR_VSA, SlogP_VSA: ~120–200 µs of SMARTS atom typing), the
# 85 fr_* substructure counts (~400 µs together), EState (~125 µs), Python-level Chi0/Chi1/
# Chi2*/Kappa2 and NumRotatableBonds (SMARTS).
FAST_DESCRIPTORS = (
    "MolWt",
    "HeavyAtomMolWt",
    "ExactMolWt",
    "LabuteASA",
    "TPSA",
    *(f"PEOE_VSA{i}" for i in range(1, 15)),
    "Chi0n",
    "Chi0v",
    "Chi1n",
    "Chi1v",
    "Kappa1",
    "HallKierAlpha",
    "FractionCSP3",
    "HeavyAtomCount",
    "NHOHCount",
    "NOCount",
    "NumHDonors",
    "NumHAcceptors",
    "NumHeteroatoms",
    "NumAmideBonds",
    "NumAtomStereoCenters",
    "NumUnspecifiedAtomStereoCenters",
    "NumSpiroAtoms",
    "NumBridgeheadAtoms",
    "RingCount",
    "NumAromaticRings",
    "NumAromaticCarbocycles",
    "NumAromaticHeterocycles",
    "NumAliphaticRings",
    "NumAliphaticCarbocycles",
    "NumAliphaticHeterocycles",
    "NumSaturatedRings",
    "NumSaturatedCarbocycles",
    "NumSaturatedHeterocycles",
    "NumHeterocycles",
)
DESCRIPTOR_SETS: dict[str, tuple[str, ...]] = {
    "full": DEFAULT_DESCRIPTORS,
    "fast": FAST_DESCRIPTORS,
    "none": (),
}
"""Named descriptor sets for ``train molecules --descriptors`` (full = every descriptor but the
slow ones, 186 with this RDKit)."""

# -- dense graph block (layout and column offsets: ``layout.py``, importable without RDKit) ------
_ELEM_COL = np.full(256, len(GRAPH_ELEMENTS), dtype=np.int64)
_ELEM_COL[list(GRAPH_ELEMENTS)] = np.arange(len(GRAPH_ELEMENTS))
_HT = Chem.HybridizationType
_HYB_GROUPS = ((_HT.SP,), (_HT.SP2,), (_HT.SP3,), (_HT.SP3D, _HT.SP3D2, _HT.SP2D))  # else "other"
assert len(_HYB_GROUPS) == N_HYB_GROUPS
_HYB_COL = np.full(256, len(_HYB_GROUPS), dtype=np.int64)
for _col, _types in enumerate(_HYB_GROUPS):
    _HYB_COL[[int(t) for t in _types]] = _col
# Adjacency weight indexed by 2 × RDKit's bond order: single 1, aromatic 1.5, double 2, triple 3,
# no bond (or a zero-order bond) 0, any other bond type (dative, quadruple, …) 1.
_BOND_TABLE = np.ones(13, dtype=np.float32)
_BOND_TABLE[[0, 2, 3, 4, 6]] = (0.0, 1.0, 1.5, 2.0, 3.0)


def parse_smiles(smiles: str) -> Chem.Mol | None:
    """Return the RDKit molecule, or None when ``smiles`` is empty or fails default sanitisation."""
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    return Chem.MolFromSmiles(smiles.strip())


def canonicalize(smiles: str) -> str | None:
    """RDKit canonical SMILES, or None for an invalid one (see ``parse_smiles``)."""
    mol = parse_smiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def invalid_reason(smiles: object) -> str:
    """Human-readable reason a SMILES value was rejected."""
    if not isinstance(smiles, str) or not smiles.strip():
        return "empty SMILES"
    return "RDKit could not parse the SMILES (MolFromSmiles returned None)"


@dataclass(slots=True)
class MoleculeFeaturizer:
    """ECFP (Morgan) fingerprint, optionally followed by standardised RDKit 2D descriptors.

    Attributes:
        radius: Morgan radius (2 = ECFP4).
        n_bits: Fingerprint length.
        counts: Count fingerprint transformed with log1p (True) or a bit vector (False).
        descriptors: Names of RDKit descriptors to append (empty = fingerprint only).
        desc_mean: Per-descriptor mean fitted on training molecules (set by ``fit``).
        desc_std: Per-descriptor standard deviation fitted on training molecules.
        clip: Scaled descriptors are clipped to ``[-clip, clip]``.
        graph_atoms: Atoms in the dense graph block appended to each row (0 = no graph block).
            The atoms are those of the parsed molecule in its atom order (hydrogens are implicit
            after RDKit's default parsing); a molecule with more atoms keeps only the first
            ``graph_atoms`` of them and the bonds among them (the fingerprint and descriptors
            still describe the whole molecule). Layout: ``graph_layout``.
        extra_radii: Further Morgan fingerprints (same size and kind) at these radii, appended
            after the first one: ``[fp(radius) | fp(r) for r in extra_radii | descriptors |
            graph]``. It is the union of featurizers that differ by radius only (``union``), read
            by ensembles whose members were trained on one radius each (``columns_for``).
    """

    radius: int = 2
    n_bits: int = 2048
    counts: bool = True
    descriptors: tuple[str, ...] = DEFAULT_DESCRIPTORS
    desc_mean: list[float] = field(default_factory=list)
    desc_std: list[float] = field(default_factory=list)
    clip: float = 6.0
    graph_atoms: int = 0
    extra_radii: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        """Validate the parameters."""
        if self.radius < 0 or self.n_bits < 8:
            raise ConfigError(f"Morgan radius {self.radius} / size {self.n_bits} out of range")
        radii = self.radii
        if len(set(radii)) != len(radii) or min(radii) < 0 or max(radii) > 8:
            raise ConfigError(f"Morgan radii {list(radii)}: need distinct radii in [0, 8]")
        if not 0 <= self.graph_atoms <= 512:
            raise ConfigError(f"graph_atoms {self.graph_atoms} out of range [0, 512]")
        unknown = [d for d in self.descriptors if d not in DESCRIPTOR_FNS]
        if unknown:
            raise ConfigError(f"unknown RDKit descriptors {unknown[:5]}")

    @property
    def radii(self) -> tuple[int, ...]:
        """Radii of the fingerprint blocks, in row order."""
        return (self.radius, *self.extra_radii)

    @property
    def fp_dim(self) -> int:
        """Length of the fingerprint blocks (the start of the descriptors)."""
        return self.n_bits * len(self.radii)

    @property
    def dense_dim(self) -> int:
        """Length of the [fingerprints | descriptors] part (the start of the graph block)."""
        return self.fp_dim + len(self.descriptors)

    def same_but_radius(self, other: MoleculeFeaturizer) -> bool:
        """True when ``other`` differs from this featurizer by its Morgan radii only."""
        return (
            self.n_bits == other.n_bits
            and self.counts == other.counts
            and self.descriptors == other.descriptors
            and self.desc_mean == other.desc_mean
            and self.desc_std == other.desc_std
            and self.clip == other.clip
            and self.graph_atoms == other.graph_atoms == 0
        )

    @classmethod
    def union(cls, featurizers: Sequence[MoleculeFeaturizer]) -> MoleculeFeaturizer:
        """One featurizer whose rows hold every featurizer's rows (``columns_for``): the first
        one with the others' radii appended as extra fingerprint blocks.

        Raises:
            ConfigError: featurizers that differ by more than their radii (fingerprint size or
                kind, descriptors or their scaling, a graph block).
        """
        first = featurizers[0]
        radii = list(first.radii)
        for f in featurizers[1:]:
            if not first.same_but_radius(f):
                raise ConfigError(
                    "featurizers differ by more than the Morgan radius (fingerprint size or kind, "
                    "descriptors or their scaling, or a graph block); no union reads them all"
                )
            radii += [r for r in f.radii if r not in radii]
        return replace(first, extra_radii=tuple(radii[1:]))

    def columns_for(self, other: MoleculeFeaturizer) -> tuple[tuple[int, int], ...]:
        """[start, stop) column ranges of this featurizer's rows that are ``other``'s rows.

        Raises:
            ConfigError: ``other`` is not contained (another radius, or more than the radius
                differs).
        """
        if not self.same_but_radius(other) or not set(other.radii) <= set(self.radii):
            raise ConfigError(f"rows of radii {list(other.radii)} are not part of these rows")
        nb = self.n_bits
        ranges = [(nb * self.radii.index(r), nb * (self.radii.index(r) + 1)) for r in other.radii]
        if self.descriptors:
            ranges.append((self.fp_dim, self.dense_dim))
        merged: list[tuple[int, int]] = []
        for a, b in ranges:  # adjacent ranges as one
            if merged and merged[-1][1] == a:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return tuple(merged)

    @property
    def graph_layout(self) -> GraphLayout | None:
        """Offsets and sizes of the graph block, or None when ``graph_atoms == 0``."""
        return GraphLayout(self.dense_dim, self.graph_atoms) if self.graph_atoms > 0 else None

    @property
    def dim(self) -> int:
        """Length of one feature vector."""
        return self.dense_dim + graph_block_size(self.graph_atoms)

    @property
    def fitted(self) -> bool:
        """True once descriptor scaling statistics are set (or there are no descriptors)."""
        return not self.descriptors or len(self.desc_mean) == len(self.descriptors)

    def spec(self) -> dict[str, Any]:
        """JSON-able description that fully determines the output (hashed into artifacts).

        ``graph_atoms`` (and the atom-feature count) appear only when the graph block is on, so
        specs and hashes written before it existed stay valid.
        """
        params: dict[str, Any] = {
            "radius": self.radius,
            "n_bits": self.n_bits,
            "counts": self.counts,
            "descriptors": list(self.descriptors),
            "desc_mean": [round(v, 8) for v in self.desc_mean],
            "desc_std": [round(v, 8) for v in self.desc_std],
            "clip": self.clip,
        }
        name = "ecfp+rdkit2d" if self.descriptors else "ecfp"
        if self.extra_radii:  # only then, so specs and hashes written before it stay valid
            params["extra_radii"] = list(self.extra_radii)
            name = "multi-" + name
        if self.graph_atoms > 0:
            params["graph_atoms"] = self.graph_atoms
            params["atom_features"] = ATOM_FEATURES
            name += "+graph"
        return {
            "name": name,
            "version": FEATURIZER_VERSION,
            "rdkit": rdkit.__version__,
            "params": params,
        }

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON spec."""
        return canonical_json_hash(self.spec())

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], expected_hash: str | None = None
    ) -> MoleculeFeaturizer:
        """Rebuild from ``spec()``; raise ``ArtifactMismatchError`` if the hash differs."""
        p = spec["params"]
        feat = cls(
            radius=int(p["radius"]),
            n_bits=int(p["n_bits"]),
            counts=bool(p["counts"]),
            descriptors=tuple(p["descriptors"]),
            desc_mean=[float(v) for v in p["desc_mean"]],
            desc_std=[float(v) for v in p["desc_std"]],
            clip=float(p["clip"]),
            graph_atoms=int(p.get("graph_atoms", 0)),
            extra_radii=tuple(int(r) for r in p.get("extra_radii", ())),
        )
        if int(p.get("atom_features", ATOM_FEATURES)) != ATOM_FEATURES:
            raise ArtifactMismatchError(
                f"the artifact's graph block has {p['atom_features']} atom features, this code "
                f"has {ATOM_FEATURES}; retrain or install the matching metascreen"
            )
        if spec.get("version") != FEATURIZER_VERSION:
            raise ArtifactMismatchError(
                f"featurizer version {spec.get('version')} in the artifact, this code has "
                f"{FEATURIZER_VERSION}; retrain or install the matching metascreen"
            )
        if expected_hash is not None and feat.hash != expected_hash:
            raise ArtifactMismatchError(
                f"featurizer hash {feat.hash[:12]} (RDKit {rdkit.__version__}) differs from the "
                f"artifact's {expected_hash[:12]}; the model was trained with another featurizer"
            )
        return feat

    # -- computation ---------------------------------------------------------------------------
    def fingerprint(self, mol: Chem.Mol, radius: int | None = None) -> FloatArray:
        """(n_bits,) Morgan fingerprint (at ``radius``, default the first): log1p of the
        counts, or 0/1 bits."""
        gen = _generator(self.radius if radius is None else radius, self.n_bits)
        if self.counts:
            return np.log1p(gen.GetCountFingerprintAsNumPy(mol).astype(np.float32))
        return gen.GetFingerprintAsNumPy(mol).astype(np.float32)

    @property
    def calculator(self) -> DescriptorCalculator:
        """The descriptor calculator for ``descriptors`` (``descriptors.py``; built once)."""
        return _calculator(self.descriptors)

    def raw_descriptors(self, mols: Sequence[Chem.Mol]) -> FloatArray:
        """(n, n_descriptors) unscaled descriptor values (NaN where RDKit fails)."""
        out = np.empty((len(mols), len(self.descriptors)), dtype=np.float32)
        if self.descriptors:
            calc = self.calculator
            for i, m in enumerate(mols):
                out[i] = calc.compute(m)  # float64 values rounded to float32 here
        return out

    def scale(self, raw: FloatArray) -> FloatArray:
        """(n, n_descriptors) standardised, NaN → 0 and clipped descriptors (elementwise)."""
        z = (raw - np.asarray(self.desc_mean, np.float32)) / np.asarray(self.desc_std, np.float32)
        return np.clip(
            np.nan_to_num(z, nan=0.0, posinf=self.clip, neginf=-self.clip), -self.clip, self.clip
        ).astype(np.float32)

    def fit(self, mols: Sequence[Chem.Mol]) -> MoleculeFeaturizer:
        """Fit descriptor mean/std on training molecules (robust to NaN/inf); returns self."""
        if not self.descriptors:
            return self
        raw = self.raw_descriptors(mols).astype(np.float64)
        raw[~np.isfinite(raw)] = np.nan
        # Heavy-tailed descriptors: clip to the 0.1/99.9 percentiles before the moments.
        lo, hi = np.nanpercentile(raw, 0.1, axis=0), np.nanpercentile(raw, 99.9, axis=0)
        raw = np.clip(raw, lo, hi)
        mean = np.nan_to_num(np.nanmean(raw, axis=0))
        std = np.nan_to_num(np.nanstd(raw, axis=0))
        std[std < 1e-6] = 1.0
        # Stored at the precision the spec keeps, so an artifact reproduces the features exactly.
        self.desc_mean = [round(float(v), 8) for v in mean]
        self.desc_std = [round(float(v), 8) for v in std]
        return self

    def graph_block(self, mol: Chem.Mol) -> FloatArray:
        """(graph_block_size,) dense graph of the first ``graph_atoms`` atoms (see ``GraphLayout``)."""
        n = self.graph_atoms
        k = min(mol.GetNumAtoms(), n)
        out = np.zeros(graph_block_size(n), dtype=np.float32)
        if k == 0:
            return out
        feat = out[: n * ATOM_FEATURES].reshape(n, ATOM_FEATURES)  # views into ``out``
        adj = out[n * ATOM_FEATURES + n :].reshape(n, n)
        out[n * ATOM_FEATURES : n * ATOM_FEATURES + k] = 1.0  # mask
        # Bond orders of the whole molecule in one RDKit call (aromatic = 1.5, no bond = 0).
        full = Chem.GetAdjacencyMatrix(mol, useBO=True)
        adj[:k, :k] = _BOND_TABLE[np.minimum(full[:k, :k] * 2, 12).astype(np.intp)]
        props = np.array(
            [
                (
                    a.GetAtomicNum(),
                    int(a.GetHybridization()),
                    a.GetTotalNumHs(),
                    a.GetFormalCharge(),
                    a.GetIsAromatic(),
                )
                for a in islice(mol.GetAtoms(), k)
            ],
            dtype=np.intp,
        )
        hot = np.empty((k, 4), dtype=np.intp)  # one column index per one-hot group
        hot[:, 0] = COL_ELEM + _ELEM_COL[np.minimum(props[:, 0], 255)]
        hot[:, 1] = COL_DEG + np.minimum(np.count_nonzero(full[:k], axis=1), 5)
        hot[:, 2] = COL_HYB + _HYB_COL[np.minimum(props[:, 1], 255)]
        hot[:, 3] = COL_NH + np.minimum(props[:, 2], 3)
        feat[np.arange(k)[:, None], hot] = 1.0
        feat[:k, COL_CHARGE] = np.clip(props[:, 3], -2, 2)
        feat[:k, COL_AROM] = props[:, 4]
        ring_atoms = [i for ring in mol.GetRingInfo().AtomRings() for i in ring if i < k]
        feat[ring_atoms, COL_RING] = 1.0
        return out

    def transform_mol(self, mol: Chem.Mol) -> FloatArray:
        """(dim,) feature vector of one parsed molecule."""
        return self.transform([mol])[0]

    def transform(self, mols: Sequence[Chem.Mol]) -> FloatArray:
        """(n, dim) features of parsed molecules, in one process.

        Fingerprints and descriptors are computed molecule by molecule; the scaling runs once
        over the batch (elementwise, so a row does not depend on the batch it is in).
        """
        if not self.fitted:
            raise ConfigError("descriptor scaling is not fitted; call fit() on training molecules")
        out = np.empty((len(mols), self.dim), dtype=np.float32)
        nb, fd, dd = self.n_bits, self.fp_dim, self.dense_dim
        for i, m in enumerate(mols):
            out[i, :nb] = self.fingerprint(m)
            for k, r in enumerate(self.extra_radii, start=1):
                out[i, k * nb : (k + 1) * nb] = self.fingerprint(m, r)
        if self.descriptors:
            out[:, fd:dd] = self.scale(self.raw_descriptors(mols))
        if self.graph_atoms > 0:
            for i, m in enumerate(mols):
                out[i, dd:] = self.graph_block(m)
        return out

    def transform_smiles(
        self, smiles: Sequence[str], workers: int = 1, chunk: int = 1000, progress: bool = False
    ) -> FloatArray:
        """(n, dim) features of *valid* SMILES (parse first with ``parse_smiles``).

        ``workers > 1`` uses a forked process pool (numpy arrays cross the pipe, never tensors).
        """
        smiles = list(smiles)
        if workers <= 1 or len(smiles) <= chunk:
            return self.transform([_must_parse(s) for s in smiles])
        parts = [smiles[i : i + chunk] for i in range(0, len(smiles), chunk)]
        with fork_pool(workers, _init_worker, (self.spec(),)) as pool:
            it: Iterator[FloatArray] = pool.imap(_featurize_chunk, parts)
            if progress:
                from tqdm.auto import tqdm

                it = iter(tqdm(it, total=len(parts), desc="featurize", unit="chunk"))
            return np.concatenate(list(it), axis=0)


def _must_parse(smiles: str) -> Chem.Mol:
    mol = parse_smiles(smiles)
    if mol is None:
        raise ValueError(f"invalid SMILES {smiles!r} passed to the featurizer")
    return mol


_WORKER_FEATURIZER: MoleculeFeaturizer | None = None


def _init_worker(spec: dict[str, Any]) -> None:
    global _WORKER_FEATURIZER
    _WORKER_FEATURIZER = MoleculeFeaturizer.from_spec(spec)


def _featurize_chunk(smiles: list[str]) -> FloatArray:
    assert _WORKER_FEATURIZER is not None
    return _WORKER_FEATURIZER.transform([_must_parse(s) for s in smiles])


_GENERATORS: dict[tuple[int, int], Any] = {}


def _generator(radius: int, n_bits: int) -> Any:
    key = (radius, n_bits)
    if key not in _GENERATORS:
        _GENERATORS[key] = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return _GENERATORS[key]


@lru_cache(maxsize=8)
def _calculator(names: tuple[str, ...]) -> DescriptorCalculator:
    return DescriptorCalculator(names)
