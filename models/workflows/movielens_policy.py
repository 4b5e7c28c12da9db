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

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.domains.recommendation.tasks import MAX_RATINGS, MIN_RATINGS, user_tasks
from metascreen.models.features.ratings import PolicyItems, fit_policy_items
from metascreen.models.screening.simulator import Pool

logger = logging.getLogger(__name__)

POLICY_ONNX_FILE = "policy.onnx"
POLICY_WEIGHTS_FILE = "policy_weights.pt.gz"


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
