"""Biased matrix factorisation by alternating least squares, and ridge fold-in of new users.

``r̂(u, i) = μ + b_u + b_i + p_u · q_i``. Training alternates exact ridge solves for users and
items (numpy, one small linear system per row). A user who was not in training is *folded in*:
with the items fixed, ``(p_u, b_u)`` is the same ridge solve on that user's support ratings —
the strongest classical baseline for MeLU's cold-user protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class MFModel:
    """Item side of a fitted biased MF (what fold-in and the meta-learned predictor need).

    Attributes:
        mu: Global mean rating.
        item_bias: (n_items,) ``b_i``.
        item_factors: (n_items, d) ``q_i``.
        item_count: (n_items,) training ratings per item.
        reg: Ridge weight on ``p_u`` in fold-in; ``reg_bias`` on ``b_u``.
        item_hist: (n_items, 5) share of the item's training ratings at 1..5 (shrunk toward the
            global distribution by 5 pseudo-ratings).
    """

    mu: float
    item_bias: F32
    item_factors: F32
    item_count: F32
    reg: float
    reg_bias: float
    item_hist: F32

    @property
    def dim(self) -> int:
        """Factor dimension d."""
        return int(self.item_factors.shape[1])

    def fold_in(self, item_idx: I64, ratings: F32) -> tuple[F32, float]:
        """Ridge solve of one user's ``(p_u, b_u)`` on their rated items."""
        return _solve_rows(
            self.item_factors[item_idx],
            ratings - self.mu - self.item_bias[item_idx],
            self.reg,
            self.reg_bias,
        )

    def predict_user(self, s_idx: I64, s_y: F32, q_idx: I64) -> F32:
        """(Q,) fold-in predictions for query items, clipped to [1, 5]."""
        p, b = self.fold_in(s_idx, s_y)
        out = self.mu + b + self.item_bias[q_idx] + self.item_factors[q_idx] @ p
        return np.clip(out, 1.0, 5.0).astype(np.float32)


def _solve_rows(x: F32, t: F32, reg: float, reg_bias: float) -> tuple[F32, float]:
    """argmin ||[x 1] w - t||² + reg ||w_x||² + reg_bias w_b²."""
    d = x.shape[1]
    xa = np.concatenate([x, np.ones((len(x), 1), np.float32)], axis=1).astype(np.float64)
    a = xa.T @ xa
    a[np.arange(d), np.arange(d)] += reg
    a[d, d] += reg_bias
    w = np.linalg.solve(a, xa.T @ t.astype(np.float64))
    return w[:d].astype(np.float32), float(w[d])


def _groups(keys: I64, n: int) -> tuple[I64, I64]:
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n + 1))
    return order, bounds


def fit_mf(
    users: I64,
    items: I64,
    ratings: F32,
    n_users: int,
    n_items: int,
    dim: int = 32,
    reg: float = 8.0,
    reg_bias: float = 2.0,
    iters: int = 12,
    seed: int = 0,
) -> MFModel:
    """Fit biased MF by ALS on (user, item, rating) triples (indices into 0..n-1)."""
    rng = np.random.default_rng(seed)
    mu = float(ratings.mean())
    q = (0.1 * rng.standard_normal((n_items, dim))).astype(np.float32)
    bi = np.zeros(n_items, np.float32)
    p = np.zeros((n_users, dim), np.float32)
    bu = np.zeros(n_users, np.float32)
    u_order, u_bounds = _groups(users, n_users)
    i_order, i_bounds = _groups(items, n_items)
    r = ratings.astype(np.float32)
    for it in range(iters):
        for u in range(n_users):
            rows = u_order[u_bounds[u] : u_bounds[u + 1]]
            if len(rows):
                j = items[rows]
                p[u], bu[u] = _solve_rows(q[j], r[rows] - mu - bi[j], reg, reg_bias)
        for i in range(n_items):
            rows = i_order[i_bounds[i] : i_bounds[i + 1]]
            if len(rows):
                v = users[rows]
                q[i], bi[i] = _solve_rows(p[v], r[rows] - mu - bu[v], reg, reg_bias)
        if logger.isEnabledFor(logging.DEBUG):
            pred = mu + bu[users] + bi[items] + (p[users] * q[items]).sum(1)
            logger.debug(
                "ALS iter %d train RMSE %.4f", it, float(np.sqrt(np.mean((pred - r) ** 2)))
            )
    count = np.bincount(items, minlength=n_items).astype(np.float32)
    return MFModel(mu, bi, q, count, reg, reg_bias, rating_histogram(items, r, n_items))


def rating_histogram(items: I64, ratings: F32, n_items: int, prior: float = 5.0) -> F32:
    """(n_items, 5) share of each item's ratings at 1..5, shrunk toward the global shares."""
    level = np.clip(np.rint(ratings), 1, 5).astype(np.int64) - 1
    hist = np.zeros((n_items, 5), np.float64)
    np.add.at(hist, (items, level), 1.0)
    glob = hist.sum(0) / max(1.0, hist.sum())
    return ((hist + prior * glob) / (hist.sum(1, keepdims=True) + prior)).astype(np.float32)


def staircase(p: F32, t: float, eps: float = 0.02) -> F32:
    """numpy twin of ``learners.rating.staircase``: strictly increasing, pulls values within ``t``
    of an integer onto it (MAE favours medians, which sit on integer ratings)."""
    r = np.rint(p)
    x = p - r
    ax = np.abs(x)
    slope = (0.5 - eps * t) / (0.5 - t)
    out = np.where(ax < t, eps * x, np.sign(x) * (eps * t + slope * (ax - t)))
    return (r + out).astype(np.float32)
