"""Item-item structure for top-N recommendation: a linear autoencoder fitted to cold-user episodes.

A cold user gives a handful of ratings; the top-N model must rank the whole catalogue by "will
watch *and* like". Its backbone is an item-item matrix ``B`` (``n_items × n_items``): a user's
score for item ``j`` is ``Σ_{i ∈ support} w(r_i) B[i, j]``.

``B`` is the closed-form minimiser of the episodic least-squares objective

    E_drop ‖Y − (X ∘ drop) B‖² + λ‖B‖²

where ``X`` is the training users' binary *rated* matrix, ``Y`` their *liked* (rating ≥ 4)
matrix, and ``drop`` keeps each rating with probability ``1 − p``: every training user becomes
a cold user with a random few of their ratings given, asked for the rest of what they liked.
The expectation has the closed form of the dropout-denoising linear autoencoder (DLAE; Steck,
NeurIPS 2020): ``B = (XᵀX + λI + p/(1−p)·diag(XᵀX))⁻¹ XᵀY``. With ``Y = X`` and ``p = 0`` this is
ridge regression of items on items (EASE without its zero-diagonal constraint).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metascreen.domains.errors import ConfigError
from metascreen.domains.recommendation.tasks import LIKED

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UserItemMatrices:
    """Training users' interactions as sparse ``users × items`` matrices (catalogue order)."""

    user_ids: list[str]
    rated: sp.csr_matrix
    liked: sp.csr_matrix

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return int(self.rated.shape[1])

    def rows(self, users: set[str] | list[str]) -> UserItemMatrices:
        """The same matrices restricted to ``users`` (ids not present are ignored)."""
        keep = np.flatnonzero(pd.Index(self.user_ids).isin(list(users)))
        return UserItemMatrices(
            [self.user_ids[i] for i in keep], self.rated[keep], self.liked[keep]
        )


def user_item_matrices(ratings: pd.DataFrame, items: list[str]) -> UserItemMatrices:
    """``rated`` (1 per rating) and ``liked`` (1 per rating ≥ 4) over ``items``; ratings of other
    items are left out."""
    pos = pd.Index(items).get_indexer(ratings["item_id"])
    keep = pos >= 0
    users = ratings["user_id"].to_numpy()[keep]
    uidx = pd.Index(sorted(set(users.tolist())))
    rows = uidx.get_indexer(users)
    r = ratings["rating"].to_numpy(np.float64)[keep]
    shape = (len(uidx), len(items))
    rated = sp.csr_matrix((np.ones(len(rows)), (rows, pos[keep])), shape=shape)
    liked = sp.csr_matrix(((r >= LIKED).astype(np.float64), (rows, pos[keep])), shape=shape)
    liked.eliminate_zeros()
    return UserItemMatrices([str(u) for u in uidx], rated, liked)


def fit_item_item(m: UserItemMatrices, lam: float, dropout: float) -> np.ndarray:
    """The DLAE item-item matrix mapping *rated* to *liked* (float32, ``n × n``).

    ``lam`` is the ridge weight and ``dropout`` the share of a user's ratings hidden per episode
    (0 ≤ p < 1); see the module docstring.
    """
    if lam < 0 or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"item-item fit needs lam ≥ 0 and 0 ≤ dropout < 1, got {lam}, {dropout}")
    gram = (m.rated.T @ m.rated).toarray()
    diag = np.diag(gram).copy()
    gram[np.diag_indices_from(gram)] += lam + dropout / (1.0 - dropout) * diag + 1e-6
    target = (m.rated.T @ m.liked).toarray()
    return np.linalg.solve(gram, target).astype(np.float32)


def log_popularity(m: UserItemMatrices) -> np.ndarray:
    """``log1p`` of each item's number of likes among the training users (float32)."""
    return np.log1p(np.asarray(m.liked.sum(0)).ravel()).astype(np.float32)
