"""Interactive recommendation on the shared simulator (NICF's offline protocol), numpy/onnxruntime.

Per user (13–100 ratings) the pool is the whole item catalogue; reward 1 if the user rated the
item ≥ 4, else 0 (unrated items are misses); the user starts with nothing known; each step shows
one item not shown before. Pickers: ``random``, ``popular`` (items most rated in the training
data first) and ``greedy`` (the rating predictor re-adapted on the ratings revealed so far; with
none yet, its prior ``μ + b_i``). The learned policy is not wired in yet.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ArtifactMismatchError, ConfigError, InputError
from metascreen.domains.io import sha256_file
from metascreen.domains.recommendation.load import load_interactions
from metascreen.domains.recommendation.tasks import MAX_RATINGS, MIN_RATINGS
from metascreen.models.screening.simulator import BatchEnv, RandomPicker, simulate
from metascreen.models.serving.policy import OnnxPolicyPicker, PolicyGraph
from metascreen.models.serving.ratings import RatingPredictor
from metascreen.models.workflows.movielens_policy import PolicyItems, liked_task, user_ratings

logger = logging.getLogger(__name__)

PICKERS = ("random", "popular", "greedy", "policy")


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
    if sha256_file(items_path) != files[spec["items"]]:
        raise ArtifactMismatchError(
            f"{items_path}: sha256 differs from metadata; the file was modified"
        )
    items = PolicyItems.from_bytes(items_path.read_bytes())
    emb = items.aligned(item_ids)
    if emb.shape[1] != int(spec["in_dim"]):
        raise ArtifactMismatchError(
            f"{items_path}: embedding width {emb.shape[1]}, the policy expects {spec['in_dim']}"
        )
    graph = PolicyGraph(Path(model_dir) / spec["onnx"], files[spec["onnx"]], name="policy")
    return OnnxPolicyPicker(graph, emb, name="policy")


def simulate_movielens(
    data_dir: Path,
    model_dir: Path,
    policy: str | None = None,
    budget: int = 20,
    seed: int = 0,
    users: str = "all",
) -> dict[str, Any]:
    """Run one picker over every user with 13–100 ratings; the ``simulate movielens`` JSON."""
    start = time.perf_counter()
    if policy is not None and policy not in PICKERS:
        raise ConfigError(f"unknown policy {policy!r}; choose one of {', '.join(PICKERS)}")
    predictor = RatingPredictor(Path(model_dir))
    table = predictor.table
    has_policy = "policy" in predictor.onnx.info.metadata
    if policy is None:
        if not has_policy:
            raise ConfigError(
                f"{model_dir} has no learned policy (trained with --policy-steps 0?); pass "
                f"--policy {'|'.join(p for p in PICKERS if p != 'policy')}"
            )
        policy = "policy"
    inter = load_interactions(Path(data_dir))
    ratings = inter.ratings
    if users == "holdout":
        from metascreen.models.workflows.movielens import split_users

        split = predictor.onnx.info.metadata.get("training_data", {}).get("holdout", {})
        if not split.get("fraction"):
            raise ConfigError(f"{model_dir} was trained on every user: no hold-out to simulate")
        rs = split_users(inter, float(split["fraction"]), int(split["split_seed"]))
        ratings = ratings[ratings["user_id"].isin(rs.holdout)]
    n_items = len(table.item_ids)
    tasks: list[Task] = []
    hidden: dict[str, dict[int, float]] = {}
    n_unknown = int((table.positions(ratings["item_id"].tolist()) < 0).sum())
    for uid, pos, rated in user_ratings(ratings, list(table.item_ids)):
        tasks.append(liked_task(uid, pos, rated, n_items))
        hidden[uid] = dict(zip(pos.astype(int).tolist(), rated.astype(float).tolist(), strict=True))
    if not tasks:
        raise InputError(f"{data_dir}: no user with {MIN_RATINGS}–{MAX_RATINGS} ratings")
    picker: Any
    if policy == "random":
        picker = RandomPicker()
    elif policy == "popular":
        picker = PopularPicker(table.mf.item_count)
    elif policy == "policy":
        picker = load_policy_picker(Path(model_dir), predictor.onnx.info.metadata, table.item_ids)
    else:
        picker = GreedyRatingPicker(predictor, table.rows(table.item_ids), hidden)
    res = simulate(
        picker, tasks, budget=budget, batch=1, init=0, active_fraction=1.0, repeats=1, seed=seed
    )
    curve = res.task_curves.mean(0)

    def hits_at(k: int) -> float:
        return float(curve[min(k, len(curve)) - 1])

    return {
        "metric": "hits",
        "cumulative_precision": float(curve[-1]) / budget,
        "hits@5": hits_at(5),
        "hits@10": hits_at(10),
        "hits@20": hits_at(20),
        "curve": [round(float(v), 4) for v in curve],
        "n_users": len(tasks),
        "policy": policy,
        "seconds": round(time.perf_counter() - start, 2),
        "budget": budget,
        "seed": seed,
        "users": users,
        "n_items": n_items,
        "n_ratings_of_unknown_items": n_unknown,
        "curve_ci95": [
            round(float(v), 4)
            for v in (1.96 * res.task_curves.std(0, ddof=1) / math.sqrt(max(1, len(tasks) - 1)))
        ],
    }


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
