"""Per-item input rows of the rating predictor: MF item factors and bias, popularity, side features.

Row layout (``RatingFeatureTable.layout``)::

    [ q_i (d) | b_i | log1p(count)/5 | known | rating shares at 1..5 (5) | side features (m) ]

Items without training ratings (new to the MF) get ``q_i, b_i`` imputed from their side features
by a ridge map fitted on well-rated items, ``known = 0``, so unseen items are served through
their features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metascreen.domains.recommendation.featurize import FloatArray, ItemFeaturizer
from metascreen.models.features.mf import MFModel

MIN_COUNT_FOR_MAP = 20
N_EXTRA = 8
"""Columns between the factors and the side features: bias, log-count, known, 5 rating shares."""


@dataclass(slots=True)
class SideToFactors:
    """Ridge map from side features to ``[q_i, b_i]``: ``W`` (m + 1, d + 1)."""

    w: FloatArray

    @classmethod
    def fit(cls, side: FloatArray, mf: MFModel, reg: float = 10.0) -> SideToFactors:
        """Fit on items with at least ``MIN_COUNT_FOR_MAP`` training ratings."""
        keep = mf.item_count >= MIN_COUNT_FOR_MAP
        xa = np.concatenate([side[keep], np.ones((int(keep.sum()), 1), np.float32)], 1).astype(
            np.float64
        )
        target = np.concatenate([mf.item_factors[keep], mf.item_bias[keep, None]], 1)
        a = xa.T @ xa + reg * np.eye(xa.shape[1])
        return cls(np.linalg.solve(a, xa.T @ target).astype(np.float32))

    def __call__(self, side: FloatArray) -> FloatArray:
        """(n, d + 1) imputed ``[q, b]``."""
        return np.concatenate([side, np.ones((len(side), 1), np.float32)], 1) @ self.w


def item_rows(
    mf: MFModel, mf_idx: np.ndarray, side: FloatArray, imputer: SideToFactors
) -> FloatArray:
    """(n, d + 8 + m) rows for items at MF positions ``mf_idx`` (-1 = not in the MF)."""
    n, d = len(mf_idx), mf.dim
    known = (mf_idx >= 0) & (mf.item_count[np.maximum(mf_idx, 0)] > 0)
    qb = imputer(side)
    q, b = qb[:, :d].copy(), qb[:, d].copy()
    j = mf_idx[known]
    q[known], b[known] = mf.item_factors[j], mf.item_bias[j]
    count = np.where(known, mf.item_count[np.maximum(mf_idx, 0)], 0.0)
    glob = mf.item_hist.mean(0) if len(mf.item_hist) else np.full(5, 0.2, np.float32)
    hist = np.where(known[:, None], mf.item_hist[np.maximum(mf_idx, 0)], glob)
    out = np.zeros((n, d + N_EXTRA + side.shape[1]), np.float32)
    out[:, :d] = q
    out[:, d] = b
    out[:, d + 1] = np.log1p(count) / 5.0
    out[:, d + 2] = known
    out[:, d + 3 : d + 8] = hist
    out[:, d + N_EXTRA :] = side
    return out


def catalogue_side(
    featurizer: ItemFeaturizer, item_ids: list[str], items: pd.DataFrame | None
) -> FloatArray:
    """Side features for ``item_ids`` from an item table."""
    return featurizer.transform(item_ids, items)


@dataclass
class ItemTable:
    """Everything needed to build item rows at serving time (numpy only, stored in the artifact).

    Attributes:
        item_ids: Catalogue item ids (training catalogue: rated or listed in the item table).
        side: (n, m) side features of the catalogue.
        mf: The MF fitted on all training users.
        imputer: Side features → ``[q, b]`` for items the MF never saw.
        featurizer: The fitted side featurizer (its spec and hash go into the metadata).
    """

    item_ids: list[str]
    side: FloatArray
    mf: MFModel
    imputer: SideToFactors
    featurizer: ItemFeaturizer
    _pos: pd.Index = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Index the ids."""
        self._pos = pd.Index(self.item_ids)

    def positions(self, item_ids: list[str]) -> np.ndarray:
        """Catalogue positions of ``item_ids`` (-1 = unknown)."""
        return np.asarray(self._pos.get_indexer(pd.Index(item_ids)), dtype=np.int64)

    def rows(self, item_ids: list[str], items: pd.DataFrame | None = None) -> FloatArray:
        """(n, D) predictor rows; ids outside the catalogue are featurized from ``items``."""
        pos = self.positions(item_ids)
        side = np.zeros((len(item_ids), self.side.shape[1]), np.float32)
        side[pos >= 0] = self.side[pos[pos >= 0]]
        new = np.flatnonzero(pos < 0)
        if len(new):
            side[new] = self.featurizer.transform([item_ids[i] for i in new], items)
        return item_rows(self.mf, pos, side, self.imputer)

    def to_bytes(self) -> bytes:
        """npz serialisation (no pickle)."""
        import io

        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            item_ids=np.asarray(self.item_ids, dtype=np.str_),
            side=self.side,
            mu=np.float64(self.mf.mu),
            item_bias=self.mf.item_bias,
            item_factors=self.mf.item_factors,
            item_count=self.mf.item_count,
            reg=np.asarray([self.mf.reg, self.mf.reg_bias]),
            item_hist=self.mf.item_hist,
            imputer=self.imputer.w,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, featurizer: ItemFeaturizer) -> ItemTable:
        """Inverse of ``to_bytes``."""
        import io

        z = np.load(io.BytesIO(blob), allow_pickle=False)
        mf = MFModel(
            float(z["mu"]),
            z["item_bias"],
            z["item_factors"],
            z["item_count"],
            float(z["reg"][0]),
            float(z["reg"][1]),
            z["item_hist"],
        )
        return cls(
            [str(s) for s in z["item_ids"]], z["side"], mf, SideToFactors(z["imputer"]), featurizer
        )
