"""Baseline pickers for the screening simulator (numpy, scikit-learn, onnxruntime — no torch).

* ``greedy`` — a few-shot predictor re-adapted on the history after every step, highest score
  first; before the first active it has nothing to adapt to and picks at random (its prior).
* ``knn`` — Tanimoto k-nearest-neighbour vote over the history's labels (ECFP bits).
* ``gp`` — Bayesian optimisation: scikit-learn ``GaussianProcessRegressor`` with a Tanimoto
  kernel on ECFP bits, upper confidence bound acquisition.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Kernel, StationaryKernelMixin

from metascreen.domains.types import FloatArray
from metascreen.models.screening.simulator import BatchEnv

PredictFn = Callable[[FloatArray, FloatArray, FloatArray], np.ndarray]


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) Tanimoto similarity of two 0/1 matrices."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 1.0)


def _history(env: BatchEnv, b: int) -> tuple[np.ndarray, np.ndarray]:
    n = int(env.history_len[b])
    return env.history[b, :n], env.history_rewards[b, :n]


class GreedyPicker:
    """Highest predicted activity first; the predictor adapts to the history at every step.

    ``predict(support_x, support_y, query_x)`` is any few-shot predictor over ``features`` rows
    (an ``OnnxPredictor``'s logits, or a learner head on cached embeddings).
    """

    def __init__(self, predict: PredictFn, features: FloatArray, name: str = "greedy") -> None:
        """Score ``features[items]`` with ``predict``."""
        self.predict = predict
        self.features = features
        self.name = name

    def scores(self, env: BatchEnv) -> np.ndarray:
        """Predictor logits where the history has an active and an inactive; see class doc."""
        out = env.random()  # no active yet: random
        avail = env.available
        for b in range(env.n_pools):
            hist, y = _history(env, b)
            if not y.any():
                continue
            cand = np.flatnonzero(avail[b])
            if cand.size == 0:
                continue
            xc = self.features[env.items[b, cand]]
            xh = self.features[env.items[b, hist]]
            if y.all():  # only actives so far: nearest to an active first
                d = ((xc[:, None, :] - xh[None, :, :]) ** 2).sum(-1).min(1)
                out[b, cand] = -d
            else:
                out[b, cand] = self.predict(xh, y.astype(np.float32), xc)
        return out


class KnnPicker:
    """Similarity-weighted vote of the ``k`` most Tanimoto-similar history compounds."""

    name = "knn"

    def __init__(self, bits: np.ndarray, k: int = 5) -> None:
        """``bits[item]`` is the ECFP bit vector of an item."""
        self.bits = bits
        self.k = k

    def scores(self, env: BatchEnv) -> np.ndarray:
        """Vote in [0, 1]; all-zero (ties broken at random) until an active is found."""
        out = np.zeros(env.items.shape)
        avail = env.available
        for b in range(env.n_pools):
            hist, y = _history(env, b)
            cand = np.flatnonzero(avail[b])
            if not y.any() or cand.size == 0:
                continue
            sim = tanimoto(self.bits[env.items[b, cand]], self.bits[env.items[b, hist]])
            k = min(self.k, len(hist))
            top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
            w = np.take_along_axis(sim, top, 1)
            votes = (w * y[top]).sum(1) / np.maximum(w.sum(1), 1e-9)
            out[b, cand] = votes
        return out


class TanimotoKernel(StationaryKernelMixin, Kernel):
    """Tanimoto (MinMax on 0/1 vectors) kernel for scikit-learn's Gaussian processes.

    No hyperparameters; scale it with ``ConstantKernel`` if needed.
    """

    def __init__(self) -> None:
        """Nothing to set (scikit-learn reads parameters from this signature)."""

    def __call__(
        self, X: np.ndarray, Y: np.ndarray | None = None, eval_gradient: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Gram matrix (and an empty gradient: there is nothing to fit)."""
        k = tanimoto(X, X if Y is None else Y).astype(np.float64)
        if eval_gradient:
            return k, np.empty((X.shape[0], X.shape[0], 0))
        return k

    def diag(self, X: np.ndarray) -> np.ndarray:
        """k(x, x) = 1."""
        return np.ones(X.shape[0])

    def is_stationary(self) -> bool:
        """Not translation-invariant, but the diagonal is constant."""
        return False


class GPPicker:
    """GP-UCB on ECFP bits: posterior mean + ``beta`` × posterior std, refitted every step."""

    name = "gp"

    def __init__(self, bits: np.ndarray, beta: float = 1.0, noise: float = 0.1) -> None:
        """``bits[item]`` is the ECFP bit vector of an item."""
        self.bits = bits
        self.beta = beta
        self.noise = noise

    def scores(self, env: BatchEnv) -> np.ndarray:
        """UCB per candidate; equal scores (random ties) before any label is known."""
        out = np.zeros(env.items.shape)
        avail = env.available
        for b in range(env.n_pools):
            hist, y = _history(env, b)
            cand = np.flatnonzero(avail[b])
            if hist.size == 0 or cand.size == 0:
                continue
            gp = GaussianProcessRegressor(
                kernel=TanimotoKernel(), alpha=self.noise, optimizer=None, normalize_y=False
            )
            gp.fit(self.bits[env.items[b, hist]], y.astype(np.float64))
            mu, sd = gp.predict(self.bits[env.items[b, cand]], return_std=True)
            out[b, cand] = mu + self.beta * sd
        return out
