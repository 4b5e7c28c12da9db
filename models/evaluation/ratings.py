"""TODO docstring."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.domains.recommendation.load import Interactions
from metascreen.domains.recommendation.tasks import (
    MeluSampler,
    build_user_tasks,
)
from metascreen.models.evaluation.rating_metrics import mae, ndcg_at_k
from metascreen.models.features.mf import staircase
from metascreen.models.features.ratings import (
    RatingFn,
    RatingModelConfig,
    fit_mf_on,
)
from metascreen.models.serving.ratings import RatingPredictor

logger = logging.getLogger(__name__)


BASELINES = ("global-mean", "item-mean", "item-bias", "mf", "mf-staircase")


BASELINE_MF = {"dim": 8, "mf_reg": 5.0, "mf_reg_bias": 5.0, "fold_reg": 5.0, "fold_reg_bias": 3.0}


# -- baselines ------------------------------------------------------------------------------------
def baseline_fn(
    name: str, train: pd.DataFrame, items: list[str], cfg: RatingModelConfig
) -> RatingFn:
    """A baseline fitted on ``train`` ratings, predicting for positions in ``items``.

    ``global-mean``; ``item-mean`` (shrunk 5 ratings toward the global mean); ``item-bias``
    (item mean + the user's mean support residual shrunk by 3); ``mf`` (biased MF + ridge
    fold-in of the user's support, ``cfg``'s dim and ridge weights); ``mf-staircase`` (``mf``
    followed by the predictor's monotone staircase, its width fitted on training users: MF on
    half of them, fold-in on the other half) — the ablation that shows what the staircase alone
    is worth.
    """
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    r = train["rating"].to_numpy(np.float64)
    mu = float(r.mean())
    if name in ("mf", "mf-staircase"):
        mf = fit_mf_on(train[train["item_id"].isin(set(items))], items, cfg, seed=0)
        mf.reg, mf.reg_bias = cfg.fold_reg, cfg.fold_reg_bias
        if name == "mf":
            return mf.predict_user
        t = _fit_baseline_staircase(train, items, cfg)
        return lambda s, sy, q: np.clip(staircase(mf.predict_user(s, sy, q), t), 1.0, 5.0)
    pos = pd.Index(items).get_indexer(train["item_id"])
    keep = pos >= 0
    cnt = np.bincount(pos[keep], minlength=len(items))
    tot = np.bincount(pos[keep], weights=r[keep], minlength=len(items))
    im = ((tot + 5.0 * mu) / (cnt + 5.0)).astype(np.float32)
    if name == "global-mean":
        return lambda s, sy, q: np.full(len(q), mu, np.float32)
    if name == "item-mean":
        return lambda s, sy, q: im[q]
    return lambda s, sy, q: np.clip(im[q] + (sy - im[s]).sum() / (len(sy) + 3.0), 1.0, 5.0)


def _fit_baseline_staircase(train: pd.DataFrame, items: list[str], cfg: RatingModelConfig) -> float:
    """Staircase width for ``mf-staircase``: MF on half the training users, MeLU episodes of the
    other half (13–100 ratings), the width with the lowest MAE."""
    users = np.array(sorted(train["user_id"].unique()))
    half = set(np.random.default_rng(11).permutation(users)[: len(users) // 2].tolist())
    in_half = train["user_id"].isin(half)
    mf = fit_mf_on(train[in_half], items, cfg, seed=0)
    mf.reg, mf.reg_bias = cfg.fold_reg, cfg.fold_reg_bias
    tasks = build_user_tasks(train[~in_half], items).tasks

    def stair_fn(t: float) -> RatingFn:
        return lambda s, sy, q: np.clip(staircase(mf.predict_user(s, sy, q), t), 1.0, 5.0)

    scores = {t: evaluate_tasks_ratings(tasks, stair_fn(t))["mae"] for t in STAIRCASE_TS}
    best = min(scores, key=lambda k: scores[k])
    logger.info(
        "mf-staircase: t=%.2f (training-user MAE %.4f, t=0: %.4f)", best, scores[best], scores[0.0]
    )
    return best


# -- evaluation -----------------------------------------------------------------------------------
def evaluate_tasks_ratings(tasks: list[Task], predict: RatingFn, seed: int = 0) -> dict[str, Any]:
    """MeLU protocol: per user 10 seeded query ratings, the rest support; mean MAE, nDCG@1/@3."""
    sampler = MeluSampler()
    maes, n1, n3 = [], [], []
    for task in tasks:
        ep = sampler.sample(task, seed)
        pred = np.asarray(predict(ep.support_items, ep.support_labels, ep.query_items))
        maes.append(mae(ep.query_labels, pred))
        n1.append(ndcg_at_k(ep.query_labels, pred, 1))
        n3.append(ndcg_at_k(ep.query_labels, pred, 3))
    return {
        "mae": float(np.mean(maes)) if maes else math.nan,
        "ndcg@1": float(np.mean(n1)) if n1 else math.nan,
        "ndcg@3": float(np.mean(n3)) if n3 else math.nan,
        "n_users": len(maes),
    }


def onnx_rating_fn(
    model_dir: Path, items: list[str], inter: Interactions
) -> tuple[RatingFn, dict[str, Any]]:
    """The artifact's ONNX graph over item rows of ``items`` (unseen items via side features)."""
    pred = RatingPredictor(Path(model_dir))
    x = pred.table.rows(items, inter.items)

    def fn(s: np.ndarray, sy: np.ndarray, q: np.ndarray) -> np.ndarray:
        return pred.predict(x[s], sy, x[q])

    return fn, pred.onnx.info.metadata


STAIRCASE_TS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
