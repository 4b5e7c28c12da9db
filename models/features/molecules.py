"""Feature matrices for a TaskSet's items, computed once and cached on disk by content hash."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from metascreen.domains.episodes import TaskSet
from metascreen.domains.io import atomic_write_bytes
from metascreen.domains.molecules.featurize import MoleculeFeaturizer, parse_smiles
from metascreen.domains.types import FloatArray

logger = logging.getLogger(__name__)


def items_hash(items: list[str]) -> str:
    """sha256 of the item keys in order (identifies a feature matrix's rows)."""
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()


def featurize_items(
    featurizer: MoleculeFeaturizer,
    items: list[str],
    cache_dir: Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> FloatArray:
    """(n_items, dim) features of valid canonical SMILES, cached as ``<cache_dir>/<hash>.npy``."""
    key = hashlib.sha256((featurizer.hash + items_hash(items)).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"features_{key}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        logger.info("features for %d items from cache %s", len(items), path)
        return np.load(path)
    logger.info("featurizing %d molecules with %d workers", len(items), workers)
    x = featurizer.transform_smiles(items, workers=workers, progress=progress)
    if path is not None:
        import io

        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write_bytes(path, buf.getvalue())
    return x


def fit_featurizer(
    featurizer: MoleculeFeaturizer, taskset: TaskSet, max_molecules: int = 20000, seed: int = 0
) -> MoleculeFeaturizer:
    """Fit descriptor scaling on a seeded sample of the training molecules."""
    rng = np.random.default_rng(seed)
    n = len(taskset.items)
    pick = rng.choice(n, size=min(n, max_molecules), replace=False)
    mols = [parse_smiles(taskset.items[i]) for i in sorted(pick.tolist())]
    return featurizer.fit([m for m in mols if m is not None])
