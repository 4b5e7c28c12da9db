"""Interactive recommendation on the shared simulator (NICF's offline protocol), numpy/onnxruntime.

Per user (13–100 ratings) the pool is the whole item catalogue; reward 1 if the user rated the
item ≥ 4, else 0 (unrated items are misses); the user starts with nothing known; each step shows
one item not shown before. Pickers: ``random``, ``popular`` (items most rated in the training
data first), ``greedy`` (the rating predictor re-adapted on the ratings revealed so far; with
none yet, its prior ``μ + b_i``), ``greedy-topn`` (the artifact's top-N model on the revealed
ratings), ``greedy-ease`` (EASE, fitted on the model's training users, on the revealed ratings) and
``policy`` (the artifact's learned policy); names resolve in
``metascreen.models.screening.factory``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metascreen.domains.errors import ArtifactMismatchError, ConfigError
from metascreen.models.features.ratings import PolicyItems
from metascreen.models.screening.simulator import BatchEnv
from metascreen.models.serving.artifact import verify_sha256
from metascreen.models.serving.policy import OnnxPolicyPicker, PolicyGraph
from metascreen.models.serving.ratings import RatingPredictor

logger = logging.getLogger(__name__)


class PopularPicker:
    """Items with the most training ratings first (ties broken at random)."""

    name = "popular"

    def __init__(self, counts: np.ndarray) -> None:
        """``counts`` (n_items,) training ratings per catalogue row."""
        self.counts = np.log1p(counts.astype(np.float64))

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) popularity plus a tiny random tie-breaker."""
        return self.counts[env.items] + 1e-6 * env.random()


class GreedyRatingPicker:
    """Highest predicted rating first, re-adapted on the revealed ratings after every step."""

    name = "greedy"

    def __init__(
        self, predictor: RatingPredictor, rows: np.ndarray, ratings: dict[str, dict[int, float]]
    ) -> None:
        """``rows`` (n_items, D) predictor rows; ``ratings[user][item_row]`` the hidden ratings."""
        self.predictor = predictor
        self.rows = rows
        self.ratings = ratings
        mf = predictor.table.mf
        known = mf.item_count > 0
        self.prior = np.where(known, mf.mu + mf.item_bias, mf.mu).astype(np.float64)

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) predicted ratings (the prior until a shown item turns out rated)."""
        out = self.prior[env.items] + 1e-6 * env.random()
        for b in range(env.n_pools):
            user = env.pools[b].task_id
            n = int(env.history_len[b])
            shown = env.items[b, env.history[b, :n]]
            rated = [
                (int(i), self.ratings[user][int(i)]) for i in shown if int(i) in self.ratings[user]
            ]
            if not rated:
                continue
            s = np.array([i for i, _ in rated], np.int64)
            sy = np.array([r for _, r in rated], np.float32)
            cand = np.flatnonzero(env.available[b])
            out[b, cand] = self.predictor.predict(self.rows[s], sy, self.rows[env.items[b, cand]])
        return out


class SupportScorer(Protocol):
    """Scores the catalogue for users given their support (``TopNScorer`` and ``FnScorer``)."""

    def scores(self, supports: list[np.ndarray], ratings: list[np.ndarray]) -> np.ndarray:
        """(U, n_items) scores."""
        ...


class FnScorer:
    """A per-user ranker ``(user_id, support, ratings) -> (n_items,)`` as a ``SupportScorer``."""

    def __init__(self, fn: Callable[[str, np.ndarray, np.ndarray], np.ndarray]) -> None:
        """Wrap ``fn`` (e.g. a reference of ``models.evaluation.topn_refs``)."""
        self.fn = fn

    def scores(self, supports: list[np.ndarray], ratings: list[np.ndarray]) -> np.ndarray:
        """(U, n_items) scores, one call per user."""
        return np.stack([self.fn("", s, r) for s, r in zip(supports, ratings, strict=True)])


class GreedyTopNPicker:
    """A top-N ranker re-scored on the ratings revealed so far (shown items the user rated);
    before the first, the most-rated training items first. ``greedy-topn``: the artifact's
    top-N model; ``greedy-ease``: EASE on the training users."""

    def __init__(
        self,
        scorer: SupportScorer,
        counts: np.ndarray,
        ratings: dict[str, dict[int, float]],
        name: str = "greedy-topn",
    ) -> None:
        """``counts`` (n_items,) training ratings per row; ``ratings[user][row]`` hidden ratings."""
        self.name = name
        self.scorer = scorer
        self.prior = np.log1p(counts.astype(np.float64))
        self.ratings = ratings

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) top-N scores (the popularity prior until a shown item turns out rated)."""
        out = self.prior[env.items] + 1e-6 * env.random()
        rows, supports, values = [], [], []
        for b in range(env.n_pools):
            user = env.pools[b].task_id
            shown = env.items[b, env.history[b, : int(env.history_len[b])]]
            rated = [int(i) for i in shown if int(i) in self.ratings[user]]
            if rated:
                rows.append(b)
                supports.append(np.array(rated, np.int64))
                values.append(np.array([self.ratings[user][i] for i in rated], np.float32))
        if rows:
            scores = self.scorer.scores(supports, values)
            for n, b in enumerate(rows):
                out[b] = scores[n, env.items[b]] + 1e-6 * out[b]
        return out


def load_policy_picker(
    model_dir: Path, metadata: dict[str, Any], item_ids: list[str]
) -> OnnxPolicyPicker:
    """The artifact's learned policy as a picker over catalogue positions (hashes checked)."""
    spec = metadata.get("policy")
    if not spec:
        raise ConfigError(f"{model_dir} has no learned policy (trained with --policy-steps 0?)")
    files = metadata.get("files", {})
    items_path = Path(model_dir) / spec["items"]
    if not items_path.exists() or spec["items"] not in files or spec["onnx"] not in files:
        raise ArtifactMismatchError(
            f"{model_dir}: the policy's files or their sha256 entries are missing"
        )
    verify_sha256(items_path, files[spec["items"]])
    items = PolicyItems.from_bytes(items_path.read_bytes())
    emb = items.aligned(item_ids)
    if emb.shape[1] != int(spec["in_dim"]):
        raise ArtifactMismatchError(
            f"{items_path}: embedding width {emb.shape[1]}, the policy expects {spec['in_dim']}"
        )
    graph = PolicyGraph(Path(model_dir) / spec["onnx"], files[spec["onnx"]], name="policy")
    return OnnxPolicyPicker(graph, emb, name="policy")


def plot_curve(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Mean cumulative hits per step, one line per picker, with 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, r in results.items():
        x = np.arange(1, len(r["curve"]) + 1)
        y, h = np.array(r["curve"]), np.array(r["curve_ci95"])
        ax.plot(x, y, label=f"{name} ({r['cumulative_precision']:.3f})")
        ax.fill_between(x, y - h, y + h, alpha=0.2)
    ax.set_xlabel("items shown")
    ax.set_ylabel("cumulative hits (rated ≥ 4)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
