"""The learned interactive-recommendation policy: the shared ``ScreeningPolicy`` on item embeddings.

A user is a task whose candidates are the whole catalogue, label 1 = rated ≥ 4. The policy is the
screening policy of ``models.policy`` trained by the same loop (``train_policy``); this module
only supplies the domain parts:

* **Item embedding** (``PolicyItems``), fitted on the policy's training users only:
  ``[liked-SVD | rated-SVD | popularity statistics | side features]``. The two implicit-feedback
  blocks are truncated SVDs of the user × item "liked" (rated ≥ 4) and "rated" matrices (rows
  scaled by 1/√n, so heavy raters do not dominate): whether a user rated an item at all is what
  drives hits, and items liked by the same users get similar vectors, which the policy's
  history attention and cosine-similarity features turn into "more like the hits so far". The
  statistics (log counts of ratings and likes, overall and among users with 13–100 ratings — the
  evaluated population —, and the smoothed like share) carry the popularity prior the baseline
  uses. Side features come from the predictor's item table (genres, year, MeLU metadata). Each
  block is scaled to a fixed mean row norm so the cosine features are dominated by the liked-SVD
  block.
* **Pools** (``catalogue_sampler``): random slices of the catalogue (``max_pool`` items, labels
  of the user), because a forward pass over the whole catalogue per training step is too slow on
  CPU; apart from the pool-mean context the model scores candidates independently given the
  history, so it transfers to the full catalogue at evaluation. Warm-start histories are sampled
  from the policy's own logits (``warm_history="policy"``).

Validation (early stopping) simulates the real protocol (whole catalogue, T steps, argmax picks)
on a seeded slice of the training users that the embedding and the policy never saw.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError, InputError
from metascreen.domains.recommendation.tasks import MAX_RATINGS, MIN_RATINGS
from metascreen.models.screening.simulator import Pool

logger = logging.getLogger(__name__)

POLICY_ITEMS_FILE = "policy_items.npz"
POLICY_ONNX_FILE = "policy.onnx"
POLICY_WEIGHTS_FILE = "policy_weights.pt.gz"
LIKED = 4.0


class RecPolicyConfig(BaseModel):
    """The recommendation policy: embedding, architecture and training budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    liked_dim: int = Field(32, ge=1, description="SVD size of the liked (rated ≥ 4) matrix")
    rated_dim: int = Field(16, ge=0, description="SVD size of the rated matrix (0 = none)")
    d_model: int = Field(64, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    warm_steps: int = Field(1000, ge=0)
    rl_steps: int = Field(0, ge=0)
    pools_per_step: int = Field(16, ge=1)
    max_pool: int = Field(1024, ge=8, description="catalogue slice per training pool")
    budget: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0)
    eval_every: int = Field(200, ge=1)
    valid_users: int = Field(150, ge=1, description="training users kept for early stopping")
    max_minutes: float | None = Field(
        18.0, gt=0, description="policy training wall-clock cap (the best state so far is kept)"
    )
    seed: int = 0


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
    ratings: pd.DataFrame, item_ids: list[str], side: np.ndarray, cfg: RecPolicyConfig
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


def user_ratings(
    ratings: pd.DataFrame, item_ids: list[str]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(user id, catalogue positions, ratings) of every user with 13–100 ratings, in user-id
    order; the user's ratings of items outside ``item_ids`` count towards the 13–100 but are
    left out."""
    pos = pd.Index(item_ids).get_indexer(ratings["item_id"])
    df = pd.DataFrame(
        {"u": ratings["user_id"].to_numpy(), "i": pos, "r": ratings["rating"].to_numpy()}
    )
    for uid, g in df.groupby("u", sort=True):
        if not MIN_RATINGS <= len(g) <= MAX_RATINGS:
            continue
        g = g[g["i"] >= 0]
        yield str(uid), g["i"].to_numpy(), g["r"].to_numpy()


def liked_task(user_id: str, positions: np.ndarray, rated: np.ndarray, n_items: int) -> Task:
    """The user's task: the whole catalogue of ``n_items``, label 1 = rated ≥ 4."""
    labels = np.zeros(n_items, np.float32)
    labels[positions] = (rated >= LIKED).astype(np.float32)
    return Task(user_id, np.arange(n_items, dtype=np.int64), labels)


def user_tasks(ratings: pd.DataFrame, item_ids: list[str]) -> list[Task]:
    """One task per user with 13–100 ratings: the whole catalogue, label 1 = rated ≥ 4."""
    n = len(item_ids)
    return [liked_task(u, pos, r, n) for u, pos, r in user_ratings(ratings, item_ids)]


def catalogue_sampler(
    tasks: list[Task], cfg: Any, rng: np.random.Generator, n: int | None = None
) -> list[Pool]:
    """``PoolSampler`` for recommendation: per pool a random user and ``max_pool`` random items."""
    pools: list[Pool] = []
    while len(pools) < (n or cfg.pools_per_step):
        task = tasks[int(rng.integers(len(tasks)))]
        size = min(len(task), cfg.max_pool)
        keep = np.sort(rng.choice(len(task), size=size, replace=False))
        labels = (task.labels[keep] > 0.5).astype(np.int64)
        if labels.sum() >= 1:
            pools.append(Pool(task.task_id, task.item_idx[keep].astype(np.int64), labels))
    return pools


@dataclass(slots=True)
class RecPolicyResult:
    """A trained recommendation policy and what training did."""

    policy: Any  # ScreeningPolicy (torch), kept untyped so this module imports without torch
    items: PolicyItems
    metrics: dict[str, Any]


def train_rec_policy(
    train: pd.DataFrame,
    item_ids: list[str],
    side: np.ndarray,
    cfg: RecPolicyConfig,
    run_dir: Path,
    progress: bool = True,
) -> RecPolicyResult:
    """Fit the item embedding and train the policy on ``train`` ratings (training users only).

    A seeded slice of ``valid_users`` users with 13–100 ratings is kept out of both the
    embedding and the policy's training pools; the policy state with the most validation hits
    (whole-catalogue simulation, budget ``cfg.budget``) is kept.
    """
    import torch

    from metascreen.models.nn.policy import PolicyConfig, ScreeningPolicy
    from metascreen.models.training.policy import PolicyTrainConfig, train_policy

    counts = train.groupby("user_id").size()
    eligible = np.array(sorted(counts[(counts >= MIN_RATINGS) & (counts <= MAX_RATINGS)].index))
    if len(eligible) < 2:
        raise ConfigError("the policy needs at least 2 training users with 13–100 ratings")
    n_valid = min(cfg.valid_users, max(1, len(eligible) // 10))
    rng = np.random.default_rng([cfg.seed, 47])
    valid_ids = set(rng.permutation(eligible)[:n_valid].tolist())
    in_valid = train["user_id"].isin(valid_ids)
    items = fit_policy_items(train[~in_valid], item_ids, side, cfg)
    train_tasks = user_tasks(train[~in_valid], item_ids)
    valid_tasks = user_tasks(train[in_valid], item_ids)
    logger.info(
        "policy: %d training users, %d validation users, item embedding %d = %s",
        len(train_tasks),
        len(valid_tasks),
        items.emb.shape[1],
        items.blocks,
    )
    pcfg = PolicyConfig(d_model=cfg.d_model, heads=cfg.heads, layers=cfg.layers)
    tcfg = PolicyTrainConfig(
        warm_steps=cfg.warm_steps,
        rl_steps=cfg.rl_steps,
        pools_per_step=cfg.pools_per_step,
        rl_pools_per_step=max(1, cfg.pools_per_step // 2),
        budget=cfg.budget,
        max_pool=cfg.max_pool,
        histories_per_step=3,
        warm_history="policy",
        rank_loss=0.0,  # trained and measured with BCE only,
        rl_baseline="value",  # ... the value-head baseline, and the best-validated state kept
        rl_from="last",
        keep="best",
        lr=cfg.lr,
        warmup_steps=min(50, max(1, cfg.warm_steps // 4)),
        eval_every=cfg.eval_every,
        valid_repeats=1,
        valid_fractions=(1.0,),
        seed=cfg.seed,
        device="cpu",
        amp=False,
        max_minutes=cfg.max_minutes,
    )
    torch.manual_seed(cfg.seed)
    policy = ScreeningPolicy(items.emb.shape[1], pcfg)
    result = train_policy(
        policy,
        items.emb,
        train_tasks,
        items.emb,
        valid_tasks,
        tcfg,
        Path(run_dir),
        progress,
        sample_pools=catalogue_sampler,
    )
    metrics = {
        "valid_hits": result.best_score,
        "valid_cumulative_precision": result.best_score / cfg.budget
        if math.isfinite(result.best_score)
        else None,
        "best_step": result.best_step,
        "best_phase": result.best_phase,
        "steps": result.steps_done,
        "seconds": round(result.seconds, 1),
        "n_train_users": len(train_tasks),
        "n_valid_users": len(valid_tasks),
        "embedding": items.blocks,
        "history": result.history,
        "config": cfg.model_dump(mode="json"),
        "policy_config": pcfg.model_dump(mode="json"),
    }
    return RecPolicyResult(policy, items, metrics)
