"""Per-item input rows of the rating predictor: MF item factors and bias, popularity, side features.

Row layout (``RatingFeatureTable.layout``)::

    [ q_i (d) | b_i | log1p(count)/5 | known | rating shares at 1..5 (5) | side features (m) ]

Items without training ratings (new to the MF) get ``q_i, b_i`` imputed from their side features
by a ridge map fitted on well-rated items, ``known = 0``, so unseen items are served through
their features.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from metascreen.domains.episodes import Task
from metascreen.domains.errors import InputError
from metascreen.domains.recommendation.featurize import ItemFeaturizer
from metascreen.domains.recommendation.load import Interactions
from metascreen.domains.recommendation.tasks import (
    LIKED,
    MAX_RATINGS,
    MIN_RATINGS,
    build_user_tasks,
    catalogue,
)
from metascreen.domains.types import FloatArray
from metascreen.models.features.mf import MFModel, fit_mf

MIN_COUNT_FOR_MAP = 20
N_EXTRA = 8
"""Columns between the factors and the side features: bias, log-count, known, 5 rating shares."""

logger = logging.getLogger(__name__)


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


POLICY_ITEMS_FILE = "policy_items.npz"


@dataclass(slots=True)
class PolicyItems:
    """The policy's item embedding, row ``i`` = catalogue item ``item_ids[i]``."""

    item_ids: list[str]
    emb: np.ndarray  # (n_items, E) float32
    blocks: dict[str, int]

    def to_bytes(self) -> bytes:
        """npz serialisation (no pickle)."""
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            item_ids=np.asarray(self.item_ids, dtype=np.str_),
            emb=self.emb.astype(np.float32),
            block_names=np.asarray(list(self.blocks), dtype=np.str_),
            block_sizes=np.asarray(list(self.blocks.values()), dtype=np.int64),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> PolicyItems:
        """Inverse of ``to_bytes``."""
        z = np.load(io.BytesIO(blob), allow_pickle=False)
        blocks = dict(
            zip(
                [str(s) for s in z["block_names"]],
                [int(v) for v in z["block_sizes"]],
                strict=True,
            )
        )
        return cls([str(s) for s in z["item_ids"]], z["emb"].astype(np.float32), blocks)

    def aligned(self, item_ids: list[str]) -> np.ndarray:
        """(len(item_ids), E) rows for ``item_ids`` (zeros for ids it does not know)."""
        pos = pd.Index(self.item_ids).get_indexer(pd.Index(item_ids))
        out = np.zeros((len(item_ids), self.emb.shape[1]), np.float32)
        out[pos >= 0] = self.emb[pos[pos >= 0]]
        return out


def _implicit_svd(
    users: np.ndarray, items: np.ndarray, n_items: int, dim: int, seed: int
) -> np.ndarray:
    """(n_items, dim) item factors ``V Σ`` of the binary user × item matrix, rows scaled 1/√n."""
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD

    uid, u = np.unique(users, return_inverse=True)
    n_per = np.bincount(u, minlength=len(uid)).astype(np.float32)
    m = sparse.csr_matrix(
        (1.0 / np.sqrt(n_per[u]), (u, items)), shape=(len(uid), n_items), dtype=np.float32
    )
    k = max(1, min(dim, min(m.shape) - 1))
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed)
    svd.fit(m)
    out = np.zeros((n_items, dim), np.float32)
    out[:, :k] = (svd.components_.T * svd.singular_values_).astype(np.float32)
    return out


def _scaled(block: np.ndarray, norm: float) -> np.ndarray:
    """``block`` scaled so that its mean row norm is ``norm``."""
    mean = float(np.linalg.norm(block, axis=1).mean()) if len(block) else 0.0
    return (block * (norm / mean)).astype(np.float32) if mean > 0 else block.astype(np.float32)


def _zscore(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(0)) / np.maximum(x.std(0), 1e-6)).astype(np.float32)


def fit_policy_items(
    ratings: pd.DataFrame, item_ids: list[str], side: np.ndarray, cfg: Any
) -> PolicyItems:
    """The item embedding from ``ratings`` (user_id, item_id, rating) of the policy's users."""
    n = len(item_ids)
    pos = pd.Index(item_ids).get_indexer(ratings["item_id"])
    if (pos < 0).any():
        raise InputError("ratings refer to items outside the catalogue")
    users = ratings["user_id"].to_numpy()
    liked = ratings["rating"].to_numpy(np.float64) >= LIKED
    counts = ratings.groupby("user_id")["item_id"].transform("size").to_numpy()
    light = (counts >= MIN_RATINGS) & (counts <= MAX_RATINGS)
    blocks: dict[str, np.ndarray] = {
        "liked_svd": _scaled(
            _implicit_svd(users[liked], pos[liked], n, cfg.liked_dim, cfg.seed), 1.0
        )
    }
    if cfg.rated_dim:
        blocks["rated_svd"] = _scaled(
            _implicit_svd(users, pos, n, cfg.rated_dim, cfg.seed + 1), 0.5
        )
    rated_n = np.bincount(pos, minlength=n).astype(np.float64)
    liked_n = np.bincount(pos[liked], minlength=n).astype(np.float64)
    rated_l = np.bincount(pos[light], minlength=n).astype(np.float64)
    liked_l = np.bincount(pos[light & liked], minlength=n).astype(np.float64)
    stats = np.stack(
        [
            np.log1p(rated_n),
            np.log1p(liked_n),
            np.log1p(rated_l),
            np.log1p(liked_l),
            (liked_n + 1.0) / (rated_n + 4.0),
            (rated_n > 0).astype(np.float64),
        ],
        1,
    )
    blocks["stats"] = _scaled(_zscore(stats), 0.5)
    if side.shape[1]:
        blocks["side"] = _scaled(_zscore(side.astype(np.float64)), 0.5)
    emb = np.concatenate(list(blocks.values()), 1).astype(np.float32)
    return PolicyItems(list(item_ids), emb, {k: v.shape[1] for k, v in blocks.items()})


def fit_mf_on(
    ratings: pd.DataFrame, items: list[str], cfg: RatingModelConfig, seed: int
) -> MFModel:
    """Biased MF (ALS) on ``ratings``, item positions = ``items``."""
    pos = pd.Index(items).get_indexer(ratings["item_id"])
    if (pos < 0).any():
        raise InputError("ratings refer to items outside the catalogue")
    uid, u = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
    return fit_mf(
        u.astype(np.int64),
        pos.astype(np.int64),
        ratings["rating"].to_numpy(np.float32),
        len(uid),
        len(items),
        dim=cfg.dim,
        reg=cfg.mf_reg,
        reg_bias=cfg.mf_reg_bias,
        iters=cfg.mf_iters,
        seed=seed,
    )


def build_item_table(
    train: pd.DataFrame,
    inter: Interactions,
    cfg: RatingModelConfig,
    seed: int,
    featurizer: ItemFeaturizer | None = None,
) -> ItemTable:
    """MF on the training ratings + side features of the whole catalogue."""
    items = catalogue(inter)
    featurizer = featurizer or ItemFeaturizer().fit(inter.items)
    side = featurizer.transform(items, inter.items)
    mf = fit_mf_on(train, items, cfg, seed)
    mf.reg, mf.reg_bias = cfg.fold_reg, cfg.fold_reg_bias
    return ItemTable(items, side, mf, SideToFactors.fit(side, mf), featurizer)


# -- training -------------------------------------------------------------------------------------
def cross_fit_rows(
    train: pd.DataFrame,
    inter: Interactions,
    table: ItemTable,
    cfg: RatingModelConfig,
    seed: int,
) -> tuple[list[Task], list[Task], FloatArray]:
    """Training and early-stopping tasks whose item rows come from an MF without their fold."""
    rng = np.random.default_rng([seed, 31])
    uids = np.array(sorted(train["user_id"].unique()))
    fold_of = dict(zip(uids, rng.integers(0, cfg.folds, len(uids)), strict=True))
    counts = train.groupby("user_id").size()
    eligible = sorted(counts[(counts >= MIN_RATINGS) & (counts <= MAX_RATINGS)].index)
    n_valid = min(cfg.max_valid_users, int(math.ceil(cfg.valid_fraction * len(eligible))))
    valid_ids = set(rng.permutation(np.array(eligible))[:n_valid].tolist())
    n = len(table.item_ids)
    blocks, train_tasks, valid_tasks = [], [], []
    for k in range(cfg.folds):
        in_fold = train["user_id"].map(fold_of) == k
        mf_k = fit_mf_on(train[~in_fold], table.item_ids, cfg, seed + 1 + k)
        imputer = SideToFactors.fit(table.side, mf_k)
        blocks.append(item_rows(mf_k, np.arange(n), table.side, imputer))
        ts = build_user_tasks(
            train[in_fold], table.item_ids, min_ratings=MIN_RATINGS, max_ratings=None
        )
        for t in ts.tasks:
            shifted = Task(t.task_id, t.item_idx + k * n, t.labels)
            if t.task_id in valid_ids:
                if len(t) <= MAX_RATINGS:
                    valid_tasks.append(shifted)
            else:
                train_tasks.append(shifted)
        logger.info(
            "cross-fit fold %d/%d: MF without this fold's %d ratings",
            k + 1,
            cfg.folds,
            int(in_fold.sum()),
        )
    return train_tasks, valid_tasks, np.concatenate(blocks)


RatingFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class RatingModelConfig(BaseModel):
    """The MF, fold-in and predictor settings of ``train movielens``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learner: Literal["attentive-rating", "foldin"] = Field(
        "attentive-rating", description="foldin = the MF fold-in alone (no residual head)"
    )
    dim: int = Field(8, ge=1, description="MF factor size")
    mf_reg: float = Field(5.0, gt=0, description="ALS ridge weight (factors)")
    mf_reg_bias: float = Field(5.0, gt=0, description="ALS ridge weight (biases)")
    mf_iters: int = Field(10, ge=1)
    fold_reg: float = Field(5.0, gt=0, description="fold-in ridge weight on p_u (initial)")
    fold_reg_bias: float = Field(3.0, gt=0, description="fold-in ridge weight on b_u (initial)")
    folds: int = Field(5, ge=2, description="cross-fitting folds of the training users")
    hidden: int = Field(96, ge=8)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    loss: Literal["l1", "mse", "huber"] = "l1"
    valid_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of eligible training users kept for early stopping"
    )
    max_valid_users: int = Field(400, ge=10)
