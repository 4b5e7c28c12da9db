"""Baseline pickers for the screening simulator (numpy, scikit-learn, onnxruntime — no torch).

* ``greedy`` — a few-shot predictor re-adapted on the history after every step, highest score
  first. Before the first active it cannot rank by activity; its *cold start* then picks the
  candidate least like the inactives found so far (``far``: lowest similarity to the inactive
  prototype, in an embedding when one is given, else mean Tanimoto on ECFP bits; ``oneclass``:
  the predictor adapted on the inactives alone, highest logit; ``prior``: a task-agnostic
  activity prior over the pool — a linear model on the predictor's embedding fitted on pooled
  train labels, ``metascreen train prior`` — which also ranks the very first picks).
  ``greedy-random-start`` is the old behaviour: random picks until the first active.
* ``ens`` — non-myopic active search after Jiang et al. (ICML 2017, "Efficient nonmyopic active
  search"): candidate i scores p_i + E_y[sum of the best (remaining − 1) other probabilities
  after observing y_i = y], for the top ``m`` candidates by p; the update is the paper's cheap
  kNN one (Tanimoto neighbours on ECFP bits move towards the observed label).
* ``thompson`` — Thompson sampling: one joint draw per pick from a Gaussian around the
  predictor's probability, with a cosine-kernel (ECFP bits) GP posterior covariance conditioned
  on the assayed compounds (see ``ThompsonPicker``).
* ``knn`` — Tanimoto k-nearest-neighbour vote over the history's labels (ECFP bits).
* ``gp`` — Bayesian optimisation: scikit-learn ``GaussianProcessRegressor`` with a Tanimoto
  kernel on ECFP bits, upper confidence bound acquisition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Kernel, StationaryKernelMixin

from metascreen.domains.errors import ConfigError
from metascreen.domains.types import FloatArray
from metascreen.models.screening.simulator import BatchEnv

PredictFn = Callable[[FloatArray, FloatArray, FloatArray], np.ndarray]
ColdStart = Literal["random", "far", "oneclass", "prior"]
COLD_STARTS: tuple[str, ...] = ("random", "far", "oneclass", "prior")


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


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, np.float64), -30, 30)))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def remaining_budget(env: BatchEnv) -> int:
    """Budgeted picks left before this step's picks are made."""
    return max(0, env.budget - env.picks_done)


class GreedyPicker:
    """Highest predicted activity first; the predictor adapts to the history at every step.

    ``predict(support_x, support_y, query_x)`` is any few-shot predictor over ``features`` rows
    (an ``OnnxPredictor``'s logits, or a learner head on cached embeddings). ``cold_start`` is
    how it picks before the first active (module doc); ``far`` uses ``embeddings`` (rows like
    ``features``) when given, else ``bits``, else the predictor's feature rows.
    """

    def __init__(
        self,
        predict: PredictFn,
        features: FloatArray,
        name: str = "greedy",
        cold_start: ColdStart = "far",
        bits: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
        prior: np.ndarray | None = None,
        prior_weight: float = 0.0,
    ) -> None:
        """Score ``features[items]`` with ``predict``; ``prior[row]``: the ``prior`` cold start.

        With ``prior`` and ``prior_weight`` w, the predictor's logits after the cold start become
        ``logit + w * prior`` (the prior as a base rate next to the task's own evidence).
        """
        if cold_start not in COLD_STARTS:
            raise ConfigError(f"cold_start must be one of {COLD_STARTS}, got {cold_start!r}")
        if cold_start == "prior" and prior is None:
            raise ConfigError("cold_start 'prior' needs prior scores (--option prior_file=PATH)")
        self.prior = prior
        self.prior_weight = float(prior_weight)
        self.predict = predict
        self.features = features
        self.name = name
        self.cold_start = cold_start
        self.bits = bits
        self.embeddings = embeddings

    def pool_scores(self, env: BatchEnv, b: int, cand: np.ndarray) -> tuple[np.ndarray, bool]:
        """Scores of pool ``b``'s candidates ``cand`` and whether they are predictor logits.

        Logits when the history has an active and an inactive; otherwise the cold start (or,
        with actives only, nearest to an active first).
        """
        hist, y = _history(env, b)
        items = env.items[b]
        if y.any() and not y.all():
            xc, xh = self.features[items[cand]], self.features[items[hist]]
            logit = np.asarray(self.predict(xh, y.astype(np.float32), xc), np.float64)
            if self.prior is not None and self.prior_weight:
                logit = logit + self.prior_weight * self.prior[items[cand]]
            return logit, True
        if y.any():  # only actives so far: nearest to an active first
            xc, xh = self.features[items[cand]], self.features[items[hist]]
            return -((xc[:, None, :] - xh[None, :, :]) ** 2).sum(-1).min(1), False
        if self.cold_start == "prior":  # no active yet, the empty history included
            assert self.prior is not None
            return np.asarray(self.prior[items[cand]], np.float64), False
        if hist.size == 0 or self.cold_start == "random":
            return env.rngs[b].random(cand.size), False
        if self.cold_start == "oneclass":
            xc, xh = self.features[items[cand]], self.features[items[hist]]
            return np.asarray(self.predict(xh, y.astype(np.float32), xc), np.float64), False
        # far: least similar to the inactive prototype
        if self.embeddings is not None:
            e = self.embeddings[items[cand]]
            proto = self.embeddings[items[hist]].mean(0)
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)
            return -(e @ (proto / max(float(np.linalg.norm(proto)), 1e-9))), False
        if self.bits is not None:
            return -tanimoto(self.bits[items[cand]], self.bits[items[hist]]).mean(1), False
        xc, xh = self.features[items[cand]], self.features[items[hist]]
        return ((xc - xh.mean(0)) ** 2).sum(1), False

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) scores; see class doc."""
        out = np.zeros(env.items.shape)
        avail = env.available
        for b in range(env.n_pools):
            cand = np.flatnonzero(avail[b])
            if cand.size:
                out[b, cand] = self.pool_scores(env, b, cand)[0]
        return out


def ens_scores(p: np.ndarray, w: np.ndarray, k: int, m: int, strength: float = 1.0) -> np.ndarray:
    """ENS scores of candidates with probabilities ``p`` (n,) and similarities ``w`` (n, n).

    Observing candidate i with label y moves j's probability to
    (strength · p_j + w_ij · y) / (strength + w_ij); i's score is p_i + Σ_y P(y) · (sum of the
    ``k`` largest updated probabilities of the others). Only the ``m`` most probable candidates
    get the lookahead; the rest score below them, in order of p.
    """
    n = p.size
    if k <= 0 or n <= 1:
        return p.copy()
    top = np.argsort(-p, kind="stable")[: min(m, n)]
    k = min(k, n - 1)
    future = np.zeros(top.size)
    for y in (0.0, 1.0):
        wt = w[top]  # (m, n)
        upd = (strength * p[None, :] + wt * y) / (strength + wt)
        upd[np.arange(top.size), top] = -np.inf
        best = -np.sort(-upd, axis=1)[:, :k].sum(1)
        future += (p[top] if y else 1.0 - p[top]) * best
    out = p - (p.max() + float(k) + 1.0)  # below every lookahead score
    out[top] = p[top] + future
    return out


def knn_weights(bits: np.ndarray, k: int = 10) -> np.ndarray:
    """(n, n) Tanimoto similarity kept only where i is among j's ``k`` nearest (diagonal 0)."""
    sim = tanimoto(bits, bits)
    np.fill_diagonal(sim, 0.0)
    if sim.shape[0] > k:
        kth = -np.sort(-sim, axis=0)[k - 1][None, :]
        sim = np.where(sim >= kth, sim, 0.0)
    return sim


class EnsPicker:
    """Efficient non-myopic search (Jiang et al. 2017) on the greedy predictor's probabilities.

    Before the predictor has an active and an inactive to adapt on it behaves like ``greedy``
    (same cold start). ``m`` bounds the lookahead, ``strength`` is the predictor's weight
    against one fully similar neighbour in the kNN update, ``neighbours`` the kNN size.
    """

    def __init__(
        self,
        greedy: GreedyPicker,
        bits: np.ndarray,
        m: int = 32,
        strength: float = 1.0,
        neighbours: int = 10,
        name: str = "ens",
    ) -> None:
        """Wrap ``greedy``'s predictor; ``bits[item]`` are ECFP bits for the kNN update."""
        self.greedy = greedy
        self.bits = bits
        self.m, self.strength, self.neighbours = m, strength, neighbours
        self.name = name

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) ENS scores; the horizon is the budget left after this pick."""
        out = np.zeros(env.items.shape)
        avail = env.available
        k = remaining_budget(env) - 1
        for b in range(env.n_pools):
            cand = np.flatnonzero(avail[b])
            if cand.size == 0:
                continue
            s, calibrated = self.greedy.pool_scores(env, b, cand)
            if calibrated and k > 0:
                w = knn_weights(self.bits[env.items[b, cand]], self.neighbours)
                s = ens_scores(_sigmoid(s), w, k, self.m, self.strength)
            out[b, cand] = s
        return out


class ThompsonPicker:
    """Thompson sampling around the predictor's probability with a GP posterior covariance.

    Belief about candidate activities f given the history: mean p = sigmoid(predictor logit)
    (the predictor is already adapted on the history), covariance
    ``temperature`` · D^½ (K_cc − K_ch (K_hh + noise·I)⁻¹ K_hc) D^½ with K the cosine kernel on
    ECFP bits (close to Tanimoto on 0/1 vectors, with an explicit feature map) and
    D = diag(p(1 − p)). Far from every assayed compound a candidate's spread is
    its Bernoulli variance under the predictor; it shrinks near assayed compounds, whose labels
    the predictor has already seen. Each pick is the argmax of one joint draw (a batch of k
    takes k draws, each pick the best not yet taken). Cold start as ``greedy``.
    """

    def __init__(
        self,
        greedy: GreedyPicker,
        bits: np.ndarray,
        temperature: float = 1.0,
        noise: float = 0.1,
        name: str = "thompson",
    ) -> None:
        """Wrap ``greedy``'s predictor; ``bits[item]`` are ECFP bits for the kernel."""
        self.greedy = greedy
        self.bits = bits
        self.temperature, self.noise = temperature, noise
        self.name = name

    def _draws(self, env: BatchEnv, b: int, cand: np.ndarray, k: int) -> np.ndarray:
        """(k, |cand|) draws (or cold-start scores repeated).

        Pathwise (Matheron) conditioning on the explicit feature map of the cosine kernel
        φ(x) = bits/‖bits‖: g = Φ_c (w − Φ_hᵀ (K_hh + noise·I)⁻¹ (Φ_h w + ε)), w ~ N(0, I),
        ε ~ N(0, noise·I) — O(n·bits) per draw instead of a root of the (n, n) covariance.
        """
        s, calibrated = self.greedy.pool_scores(env, b, cand)
        if not calibrated:
            return np.repeat(s[None], k, 0)
        p = _sigmoid(s)
        hist, _ = _history(env, b)
        fc = _unit_rows(self.bits[env.items[b, cand]])
        fh = _unit_rows(self.bits[env.items[b, hist]])
        rng = env.rngs[b]
        w = rng.standard_normal((k, fc.shape[1]))
        eps = rng.standard_normal((k, hist.size)) * np.sqrt(self.noise)
        khh = fh @ fh.T + self.noise * np.eye(hist.size)
        alpha = np.linalg.solve(khh, (w @ fh.T + eps).T)  # (h, k)
        g = w @ fc.T - (fc @ fh.T @ alpha).T  # (k, n)
        d = np.sqrt(self.temperature * p * (1.0 - p))
        return p[None, :] + d[None, :] * g

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N): one draw per pool."""
        out = np.zeros(env.items.shape)
        avail = env.available
        for b in range(env.n_pools):
            cand = np.flatnonzero(avail[b])
            if cand.size:
                out[b, cand] = self._draws(env, b, cand, 1)[0]
        return out

    def select(self, env: BatchEnv, k: int) -> np.ndarray:
        """(B, k) picks: pick j is the best not yet taken under draw j."""
        out = np.full((env.n_pools, k), -1, np.int64)
        avail = env.available
        for b in range(env.n_pools):
            cand = np.flatnonzero(avail[b])
            if cand.size == 0:
                continue
            draws = self._draws(env, b, cand, k)
            taken = np.zeros(cand.size, bool)
            for j in range(min(k, cand.size)):
                i = int(np.argmax(np.where(taken, -np.inf, draws[j])))
                taken[i] = True
                out[b, j] = cand[i]
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
