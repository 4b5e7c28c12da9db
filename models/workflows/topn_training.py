"""Training the top-N recommender on cold-user episodes (``models/learners/topn.py``).

1. A seeded slice of the training users (``selection_fraction``) is kept aside as cold users:
   10 ratings given, the rest of what they liked to be found in the whole catalogue. Everything
   is chosen on them: the item-item matrix's ridge weight and dropout (a small grid), and the
   meta-trained state (early stopping, including the untrained initial state).
2. The other training users are meta-trained on, cross-fitted: they are split into ``folds``
   and a user's episodes read an item-item matrix fitted without their fold, so the learned
   weights see a backbone that never saw the user, as a new user's would.
3. The shipped model carries the item-item matrix refitted on every training user.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from metascreen.domains.episodes import Episode, Task
from metascreen.domains.errors import ConfigError, TaskTooSmallError
from metascreen.domains.recommendation.tasks import LIKED
from metascreen.models.evaluation.topn import RatedUser, draw_support, top_items, user_metrics
from metascreen.models.evaluation.topn_refs import rated_users
from metascreen.models.features.itemitem import (
    UserItemMatrices,
    fit_item_item,
    log_popularity,
    user_item_matrices,
)
from metascreen.models.serving.topn import pad_supports

if TYPE_CHECKING:
    import torch

    from metascreen.models.learners.topn import TopNRecommender

logger = logging.getLogger(__name__)

SELECTION_SUPPORT = 10
"""Ratings a selection user gives (the top-N protocol's default support)."""
N_RELEVANT_MIN = 10
"""Ratings beyond the support a selection user needs (the protocol's ``support_n + 10``)."""


class TopNConfig(BaseModel):
    """Settings of the top-N model and its training (recorded in the artifact)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lams: tuple[float, ...] = Field((200.0, 500.0, 1500.0), description="ridge weights tried")
    dropouts: tuple[float, ...] = Field((0.9, 0.95, 0.98), description="episode dropouts tried")
    folds: int = Field(3, ge=2, description="cross-fitting folds of the meta-training users")
    selection_fraction: float = Field(0.1, gt=0, lt=1)
    dim: int = Field(32, ge=1)
    support_min: int = Field(3, ge=1)
    support_max: int = Field(30, ge=1)
    steps: int = Field(600, ge=0)
    tasks_per_step: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    eval_every: int = Field(100, ge=1)
    patience: int = Field(3, ge=1)
    max_minutes: float | None = Field(6.0, gt=0)
    item_terms: bool = Field(
        True,
        description="learn the per-item bias and embeddings (false: only the rating "
        "weights, scale and popularity weight)",
    )
    seed: int = 0


@dataclass(frozen=True, slots=True)
class ColdUser:
    """A cold user of the protocol: given ratings and the held-back liked items."""

    user_id: str
    support: np.ndarray  # catalogue positions
    ratings: np.ndarray
    relevant: np.ndarray


@dataclass(slots=True)
class TopNResult:
    """The trained model (its buffer refitted on every training user) and what was measured."""

    model: TopNRecommender
    metrics: dict[str, Any] = field(default_factory=dict)


def cold_users(
    m: UserItemMatrices, ratings: pd.DataFrame, items: list[str], support_n: int, seed: int
) -> list[ColdUser]:
    """The protocol's draw (``draw_support``) for the users of ``m``: ``support_n`` ratings given,
    relevant = the rest rated ≥ 4; users with fewer than ``support_n + 10`` ratings or nothing
    relevant are left out."""
    out = []
    for u in _rated_users_of(m, ratings, items):
        if len(u.positions) < support_n + N_RELEVANT_MIN:
            continue
        given, rest = draw_support(u, support_n, seed)
        rel = u.positions[rest][u.ratings[rest] >= LIKED]
        if len(rel):
            out.append(ColdUser(u.user_id, u.positions[given], u.ratings[given], rel))
    return out


def _rated_users_of(
    m: UserItemMatrices, ratings: pd.DataFrame, items: list[str]
) -> list[RatedUser]:
    """``rated_users`` of the users of ``m`` (their ratings of catalogue items, by user id)."""
    return rated_users(ratings[ratings["user_id"].isin(m.user_ids)], items)


def selection_users(
    m: UserItemMatrices, ratings: pd.DataFrame, items: list[str], seed: int
) -> tuple[list[ColdUser], int]:
    """The selection users' draw at ``SELECTION_SUPPORT`` given ratings, or at 5 or 3 where no
    user has the 10 + 10 ratings that needs (small data sets); the draw and its support size."""
    for n in (SELECTION_SUPPORT, 5, 3):
        users = cold_users(m, ratings, items, n, seed)
        if users:
            if n != SELECTION_SUPPORT:
                logger.warning(
                    "top-N selection with %d given ratings: too few users have %d",
                    n,
                    SELECTION_SUPPORT + N_RELEVANT_MIN,
                )
            return users, n
    raise ConfigError(
        f"top-N training: none of the {len(m.user_ids)} selection users has the 13 ratings "
        "(3 given + 10) its selection needs; train with --no-topn, or with more users"
    )


def ndcg_at(scores: np.ndarray, users: list[ColdUser], k: int = 10) -> np.ndarray:
    """Per-user NDCG@k (binary gain, RecBole's) of ``scores`` (U, n), support items never ranked
    (``top_items`` and ``user_metrics`` of the top-N protocol)."""
    no_rank = np.zeros(scores.shape[1] if scores.ndim == 2 else 0)
    return np.array(
        [
            user_metrics(top_items(row, u.support, k), u.relevant, (k,), no_rank)[f"ndcg@{k}"]
            for row, u in zip(scores, users, strict=True)
        ]
    )


def backbone_scores(mat: np.ndarray, users: list[ColdUser]) -> np.ndarray:
    """(U, n) scores of the item-item matrix alone (support rows summed)."""
    return np.stack([mat[u.support].sum(0) for u in users])


def choose_item_item(
    base: UserItemMatrices, sel: list[ColdUser], cfg: TopNConfig
) -> tuple[float, float, np.ndarray, list[dict[str, float]]]:
    """The grid's best (λ, dropout) by NDCG@10 of the matrix alone on the selection users;
    returns it, its matrix (fitted on ``base``) and the grid's figures."""
    grid, best, best_mat = [], (-1.0, 0.0, 0.0), None
    for lam in cfg.lams:
        for p in cfg.dropouts:
            mat = fit_item_item(base, lam, p)
            score = float(ndcg_at(backbone_scores(mat, sel), sel).mean())
            grid.append({"lam": lam, "dropout": p, "selection_ndcg@10": round(score, 5)})
            logger.info("item-item λ=%g dropout=%g: selection NDCG@10 %.4f", lam, p, score)
            if score > best[0]:
                best, best_mat = (score, lam, p), mat
    assert best_mat is not None
    return best[1], best[2], best_mat, grid


@dataclass(frozen=True, slots=True)
class TopNEpisodeSampler:
    """A training user's ratings: ``support_min``..``support_max`` of them (at least 5 left over)
    given, the rest held back (their liked items are the targets)."""

    support_min: int
    support_max: int

    def sample(self, task: Task, seed: int) -> Episode:
        """Draw an episode or raise ``TaskTooSmallError``."""
        n = len(task)
        top = min(self.support_max, n - 5)
        if top < self.support_min:
            raise TaskTooSmallError(task.task_id, n, "too few ratings for a top-N episode")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        k = int(rng.integers(self.support_min, top + 1))
        return Episode(task=task, support=perm[:k], query=perm[k:], seed=seed)


def user_tasks_of(m: UserItemMatrices, ratings: pd.DataFrame, items: list[str]) -> list[Task]:
    """One task per user of ``m``: item_idx = catalogue positions, labels = ratings."""
    return [Task(u.user_id, u.positions, u.ratings) for u in _rated_users_of(m, ratings, items)]


def model_scores(model: Any, users: list[ColdUser], chunk: int = 128) -> np.ndarray:
    """(U, n) scores of a torch top-N model (eval mode, no grad)."""
    import torch

    out = []
    with torch.no_grad():
        for lo in range(0, len(users), chunk):
            part = users[lo : lo + chunk]
            idx, r, mask = pad_supports([u.support for u in part], [u.ratings for u in part])
            t = (torch.as_tensor(a) for a in (idx, r, mask))
            out.append(model(*t).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _fold_of(user_id: str, folds: int, seed: int) -> int:
    return zlib.crc32(f"{seed}:{user_id}".encode()) % folds


def _fold_matrices(
    meta: UserItemMatrices, lam: float, p: float, cfg: TopNConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """(folds, n, n) item-item matrices, fold k fitted without fold k's users; user → fold."""
    fold = {u: _fold_of(u, cfg.folds, cfg.seed) for u in meta.user_ids}
    mats = []
    for k in range(cfg.folds):
        others = [u for u, f in fold.items() if f != k]
        mats.append(fit_item_item(meta.rows(others), lam, p))
    return np.stack(mats), fold


def _batch_loss_fn(stack: torch.Tensor, fold: dict[str, int], n_items: int) -> Any:
    """The loop's ``batch_loss``: softmax over the catalogue, each user on their fold's matrix."""
    import torch

    from metascreen.models.learners.topn import catalogue_softmax_loss

    def loss(learner: Any, episodes: list[Episode], x: torch.Tensor) -> torch.Tensor:
        idx, r, mask = pad_supports(
            [ep.support_items for ep in episodes], [ep.support_labels for ep in episodes]
        )
        targets = np.zeros((len(episodes), n_items), np.float32)
        excluded = np.zeros((len(episodes), n_items), np.float32)
        for b, ep in enumerate(episodes):
            targets[b, ep.query_items[ep.query_labels >= LIKED]] = 1.0
            excluded[b, ep.support_items] = 1.0
        folds = torch.as_tensor([fold[ep.task.task_id] for ep in episodes])
        idx_t = torch.as_tensor(idx)
        mats = stack[folds[:, None], idx_t]  # (B, S, n): each user's fold, their support rows
        scores = learner.forward_rows(mats, idx_t, torch.as_tensor(r), torch.as_tensor(mask))
        return catalogue_softmax_loss(scores, torch.as_tensor(targets), torch.as_tensor(excluded))

    return loss


def train_topn(
    train: pd.DataFrame, items: list[str], cfg: TopNConfig, run_dir: Path, progress: bool
) -> TopNResult:
    """Choose the item-item matrix, meta-train the model, refit its buffer on every user."""
    import torch

    from metascreen.models.learners.base import EpisodicLearner
    from metascreen.models.learners.topn import TopNRecommender
    from metascreen.models.training.loop import EpisodeHooks, TrainConfig, meta_train
    from metascreen.models.training.seeding import seed_everything

    start = time.perf_counter()
    everyone = user_item_matrices(train, items)
    if len(everyone.user_ids) < 10:
        raise ConfigError(
            f"top-N training needs at least 10 training users, got {len(everyone.user_ids)}"
        )
    perm = np.random.default_rng([cfg.seed, 5501]).permutation(len(everyone.user_ids))
    n_sel = max(1, int(round(cfg.selection_fraction * len(perm))))
    sel_ids = {everyone.user_ids[i] for i in perm[:n_sel]}
    meta_users = everyone.rows([u for u in everyone.user_ids if u not in sel_ids])
    sel, support_n = selection_users(everyone.rows(sel_ids), train, items, cfg.seed)
    lam, p, sel_mat, grid = choose_item_item(meta_users, sel, cfg)
    stack, fold = _fold_matrices(meta_users, lam, p, cfg)
    seed_everything(cfg.seed)
    model = TopNRecommender(
        torch.as_tensor(sel_mat), torch.as_tensor(log_popularity(meta_users)), dim=cfg.dim
    )
    model.bias.requires_grad_(cfg.item_terms)
    model.item_emb.requires_grad_(cfg.item_terms)

    def validate(learner: Any, device: torch.device) -> float:
        learner.eval()
        return float(ndcg_at(model_scores(learner, sel), sel).mean())

    hooks = EpisodeHooks(
        samplers=[TopNEpisodeSampler(cfg.support_min, cfg.support_max)],
        select_tasks=lambda tasks: [t for t in tasks if len(t) >= cfg.support_min + 5],
        validate=validate,
        metric="selection NDCG@10",
        batch_loss=_batch_loss_fn(torch.as_tensor(stack), fold, len(items)),
        validate_at_start=True,
    )
    tcfg = TrainConfig(
        steps=cfg.steps,
        tasks_per_step=cfg.tasks_per_step,
        lr=cfg.lr,
        lr_schedule="cosine",
        warmup_steps=min(50, cfg.steps),
        weight_decay=0.0,
        eval_every=cfg.eval_every,
        patience=cfg.patience,
        checkpoint_every=cfg.eval_every,
        seed=cfg.seed,
        device="cpu",
        max_minutes=cfg.max_minutes,
    )
    tasks = user_tasks_of(meta_users, train, items)
    # the loop reads rows only through ``batch_loss``, which takes none: an empty row table
    sel_tasks = [Task(u.user_id, u.support, u.ratings) for u in sel]  # ``validate`` reads ``sel``
    no_rows = np.zeros((1, 1), np.float32)
    result = meta_train(
        cast(EpisodicLearner, model),
        tasks,
        no_rows,
        sel_tasks,
        no_rows,
        tcfg,
        run_dir,
        progress,
        hooks,
    )
    init_ndcg = next(h["selection"] for h in result.history if h["step"] == 0)  # validated first
    model.item_item.copy_(torch.as_tensor(fit_item_item(everyone, lam, p)))
    model.log_pop.copy_(torch.as_tensor(log_popularity(everyone)))
    model.eval()
    metrics = {
        "lam": lam,
        "dropout": p,
        "grid": grid,
        "n_selection_users": len(sel),
        "selection_support_n": support_n,
        "n_meta_train_users": len(meta_users.user_ids),
        "selection_ndcg@10_item_item_only": round(init_ndcg, 5),
        "selection_ndcg@10_meta_trained": round(result.best_score, 5),
        "best_step": result.best_step,
        "steps": result.steps_done,
        "history": result.history,
        "seconds": round(time.perf_counter() - start, 1),
    }
    logger.info(
        "top-N: selection NDCG@10 item-item alone %.4f, meta-trained %.4f (step %d)",
        init_ndcg,
        result.best_score,
        result.best_step,
    )
    return TopNResult(model, metrics)


def train_topn_files(
    train: pd.DataFrame, items: list[str], cfg: TopNConfig, run_dir: Path, progress: bool
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Train the top-N model; its metadata (``metrics`` inside) and artifact files.

    Files: ``topn.onnx`` (parity-checked, large tensors stored float16) and
    ``topn_weights.pt.gz`` (its state dict, the same values); ``write_artifact`` records their
    sha256 under ``metadata["files"]``.
    """
    from metascreen.models.serving.topn import TOPN_ONNX_FILE, TOPN_WEIGHTS_FILE
    from metascreen.models.training.export import (
        compactly_storable,
        export_topn_onnx,
        write_weights,
    )

    run_dir.mkdir(parents=True, exist_ok=True)
    res = train_topn(train, items, cfg, run_dir, progress)
    onnx_path = run_dir / TOPN_ONNX_FILE
    parity = export_topn_onnx(res.model, onnx_path)
    state = res.model.state_dict()
    weights = run_dir / TOPN_WEIGHTS_FILE
    write_weights(weights, state, compactly_storable(state))
    meta = {
        "onnx": TOPN_ONNX_FILE,
        "weights": TOPN_WEIGHTS_FILE,
        "n_items": res.model.n_items,
        "parity_max_abs_diff": parity,
        "config": cfg.model_dump(mode="json"),
        "objective": "top-N over the catalogue: rank by 'will watch and like' (rating ≥ 4)",
        "metrics": res.metrics,
    }
    files = {TOPN_ONNX_FILE: onnx_path.read_bytes(), TOPN_WEIGHTS_FILE: weights.read_bytes()}
    return meta, files
