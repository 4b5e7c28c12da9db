"""The one episodic meta-training loop; learners plug in through ``episode_loss``.

Checkpoints (model, optimiser, step, best state, RNG) are written atomically every
``checkpoint_every`` steps and on early stop; rerunning with the same run directory resumes.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from metascreen.domains.episodes import Episode, EpisodeSampler, Task
from metascreen.domains.errors import SamplingError
from metascreen.domains.io import atomic_write_bytes
from metascreen.domains.molecules.tasks import TrainingEpisodeSampler
from metascreen.domains.types import FloatArray
from metascreen.models.evaluation.molecules import evaluate_tasks
from metascreen.models.learners.base import EpisodicLearner, masked_episode_bce
from metascreen.models.training.seeding import resolve_device, seed_everything

logger = logging.getLogger(__name__)


#: ``ema_decay`` of the training configurations (``TrainConfig``, the policy's): keep an EMA of
#: the weights, which is then what is validated, kept and returned.
EmaDecay = Annotated[
    float | None,
    Field(
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights (torch swa_utils); it is "
        "what is validated, kept and returned",
    ),
]


class TrainConfig(BaseModel):
    """Meta-training settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(3000, ge=0, description="optimiser steps (meta-batches)")
    tasks_per_step: int = Field(16, ge=1, description="episodes per meta-batch")
    support_sizes: tuple[int, ...] = Field(
        (16,), description="support sizes drawn per training episode"
    )
    query_size: int = Field(64, ge=2)
    lr: float = Field(3e-4, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: linear warm-up, then cosine decay to lr/10 at `steps`"
    )
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    eval_every: int = Field(250, ge=1, description="steps between validation runs")
    valid_support_size: int = Field(16, ge=2)
    valid_repeats: int = Field(3, ge=1)
    patience: int = Field(
        6, ge=1, description="validation runs without improvement before stopping"
    )
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0
    device: str = Field("auto", description="auto|cpu|cuda")
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on CPU)")
    max_minutes: float | None = Field(
        None, description="stop (keeping the best state) after this long"
    )
    ema_decay: EmaDecay = None
    multitask_weight: float = Field(
        0.0,
        ge=0,
        description="weight of an auxiliary multitask loss: a logistic head per training task on "
        "the shared embedding, fitted to all of the episode's rows (support and query); the "
        "heads exist only during training and are not exported (needs batched episodes)",
    )
    multitask_lr_scale: float = Field(
        100.0,
        gt=0,
        description="learning rate of the multitask heads (SparseAdam) relative to the "
        "encoder's (a head is updated only on the steps that draw its task)",
    )
    batched_episodes: bool = Field(
        True,
        description="run a step's episodes through the encoder and heads in one padded batch "
        "(learners with ``batched_training``; the same loss as one episode at a time, several "
        "times faster on CPU); false trains one episode at a time, as artifacts before "
        "2026-12-01 were",
    )


@dataclass(slots=True)
class TrainResult:
    """What a training run produced."""

    best_score: float
    best_step: int
    steps_done: int
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_episodes: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


def history_fields(history: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Checkpoint fields for a list of per-evaluation records (a float64 table, NaN = missing)."""
    return {
        "history_keys": keys,
        "history": torch.tensor(
            [[float(h.get(k, math.nan)) for k in keys] for h in history], dtype=torch.float64
        ).reshape(-1, len(keys)),
    }


HISTORY_RENAMED = {"valid": "selection", "valid_f1": "selection_f1"}
"""History keys of older checkpoints: the selection score was stored as ``valid`` even when a
held-out train slice, not valid, was the selection split."""


def history_from(
    ckpt: dict[str, Any], renamed: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The records ``history_fields`` stored in a checkpoint (``renamed``: old key → new key)."""
    keys = [(renamed or {}).get(k, k) for k in ckpt["history_keys"]]
    return [dict(zip(keys, row, strict=True)) for row in ckpt["history"].tolist()]


def save_checkpoint_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to memory, then an atomic write (a crash never leaves half a checkpoint)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for ``step`` (a pure function of the step, so resuming needs no state)."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


class TorchEvaluator:
    """``PredictFn`` (and, when the learner allows it, ``EmbedFn``) for a torch learner in eval mode.

    Learners whose adaptation touches only the head (``cache_embeddings``) are evaluated on
    embeddings computed once per task; the others run their full forward on features.
    """

    def __init__(self, learner: EpisodicLearner, device: torch.device | None = None) -> None:
        """Wrap ``learner`` (left in eval mode)."""
        self.learner = learner.eval()
        self.device = device or next(iter(learner.parameters())).device
        self.cached = bool(getattr(learner, "cache_embeddings", False))

    def _t(self, a: FloatArray) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device)

    def embed(self, x: FloatArray) -> FloatArray:
        """(n, E) embeddings of feature rows."""
        with torch.no_grad():
            return self.learner.embed(self._t(x)).float().cpu().numpy()

    def predict(self, sx: FloatArray, sy: FloatArray, qx: FloatArray) -> np.ndarray:
        """(Q,) logits; inputs are embeddings when ``cached``, features otherwise."""
        with torch.no_grad():
            if self.cached:
                out = self.learner.head(self._t(sx), self._t(sy), self._t(qx))
            else:
                out = self.learner(self._t(sx), self._t(sy), self._t(qx))
        return out.float().cpu().numpy()

    def predict_draws(self, emb: FloatArray, draws: list[Episode]) -> list[np.ndarray]:
        """(Q,) logits of each draw of one task from its embedded rows, one batched-head call."""
        if len({(len(ep.support), len(ep.query)) for ep in draws}) > 1:
            return [self.predict(emb[ep.support], ep.support_labels, emb[ep.query]) for ep in draws]
        idx = torch.as_tensor(np.stack([np.concatenate([ep.support, ep.query]) for ep in draws]))
        n_s = len(draws[0].support)
        rows = self._t(emb)[idx.to(self.device)]  # (B, S + Q, E)
        sy = self._t(np.stack([ep.support_labels for ep in draws]).astype(np.float32))
        with torch.no_grad():
            out = self.learner.batched_head(rows[:, :n_s], sy, torch.ones_like(sy), rows[:, n_s:])
        return list(out.float().cpu().numpy())

    def evaluate(
        self, tasks: list[Task], x: FloatArray, support_size: int, repeats: int, seed: int = 0
    ) -> Any:
        """``evaluate_tasks`` with this learner (a task's draws batched through the head when it
        has a batched head: every draw of a task has the same support and query sizes)."""
        batched = self.cached and self.learner.batched_training
        return evaluate_tasks(
            tasks,
            x,
            self.predict,
            support_size,
            repeats,
            seed,
            embed=self.embed if self.cached else None,
            predict_draws=self.predict_draws if batched else None,
        )


def torch_predict_fn(
    learner: EpisodicLearner,
) -> Callable[[FloatArray, FloatArray, FloatArray], np.ndarray]:
    """A ``PredictFn`` on features running ``learner`` in eval mode on its device."""
    ev = TorchEvaluator(learner)
    ev.cached = False
    return ev.predict


def trainable_tasks(tasks: list[Task], support_sizes: tuple[int, ...]) -> list[Task]:
    """Tasks big and mixed enough for a training episode at the smallest support size."""
    need = min(support_sizes) + 2
    return [t for t in tasks if len(t) >= need and t.n_positive >= 2 and len(t) - t.n_positive >= 2]


def weight_ema(module: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``module``'s weights and buffers (None without decay)."""
    if decay is None:
        return None
    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def load_ema(ema: AveragedModel, ckpt: dict[str, Any], ckpt_path: Path) -> None:
    """Restore ``ema`` from a checkpoint, refusing one written without an average."""
    if "ema" not in ckpt:
        from metascreen.domains.errors import ConfigError

        raise ConfigError(f"{ckpt_path} was written without --ema-decay; cannot resume")
    ema.load_state_dict(ckpt["ema"])


def episode_loss(learner: EpisodicLearner, ep: Episode, x: torch.Tensor) -> torch.Tensor:
    """``learner.episode_loss`` of one episode over the feature rows ``x``."""
    sy = torch.as_tensor(ep.support_labels, device=x.device)
    qy = torch.as_tensor(ep.query_labels, device=x.device)
    return learner.episode_loss(x[ep.support_items], sy, x[ep.query_items], qy)


class MultitaskHeads(torch.nn.Module):
    """One logistic-regression head per training task on the shared embedding (training only).

    The FS-Mol multitask baseline's signal inside the episodic loop: every row of an episode,
    support and query, is classified by its task's own head, so the encoder is also asked to
    make each training task linearly separable. Heads start at zero (logit 0). They are one
    sparse embedding table (weights and bias per task) for ``torch.optim.SparseAdam``: a step
    updates the heads of the tasks it drew and leaves the others, whose moments would otherwise
    keep moving them on stale gradients.
    """

    def __init__(self, n_tasks: int, dim: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(n_tasks, dim + 1, sparse=True)
        torch.nn.init.zeros_(self.table.weight)

    def loss(
        self,
        task_ids: torch.Tensor,
        support_emb: torch.Tensor,
        support_y: torch.Tensor,
        support_mask: torch.Tensor,
        query_emb: torch.Tensor,
        query_y: torch.Tensor,
        query_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over episodes of the cross-entropy of each episode's rows under its task's head."""
        rows = torch.cat([support_emb, query_emb], dim=1).float()  # (B, S + Q, E)
        head = self.table(task_ids)  # (B, E + 1)
        logits = torch.einsum("bne,be->bn", rows, head[:, :-1]) + head[:, -1:]
        return masked_episode_bce(
            logits, torch.cat([support_y, query_y], 1), torch.cat([support_mask, query_mask], 1)
        )


class PaddedEpisodes(NamedTuple):
    """A step's episodes padded to the largest support and query (mask 0 on padded rows), in
    the argument order of ``EpisodicLearner.batched_episode_loss``."""

    support_x: torch.Tensor  # (B, S, D)
    support_y: torch.Tensor  # (B, S)
    support_mask: torch.Tensor  # (B, S)
    query_x: torch.Tensor  # (B, Q, D)
    query_y: torch.Tensor  # (B, Q)
    query_mask: torch.Tensor  # (B, Q)


def pad_episodes(episodes: list[Episode], x: torch.Tensor) -> PaddedEpisodes:
    """Episodes as ``batched_episode_loss`` arguments (``PaddedEpisodes``), rows taken from ``x``."""
    n_s = max(len(ep.support_items) for ep in episodes)
    n_q = max(len(ep.query_items) for ep in episodes)
    b = len(episodes)
    idx = np.zeros((b, n_s + n_q), dtype=np.int64)
    labels = np.zeros((b, n_s + n_q), dtype=np.float32)
    mask = np.zeros((b, n_s + n_q), dtype=np.float32)
    for i, ep in enumerate(episodes):
        for off, items, y in (
            (0, ep.support_items, ep.support_labels),
            (n_s, ep.query_items, ep.query_labels),
        ):
            idx[i, off : off + len(items)] = items
            labels[i, off : off + len(items)] = y
            mask[i, off : off + len(items)] = 1.0
    rows = x[torch.as_tensor(idx, device=x.device)]  # (B, S + Q, D)
    y_t = torch.as_tensor(labels, device=x.device)
    m_t = torch.as_tensor(mask, device=x.device)
    return PaddedEpisodes(
        rows[:, :n_s], y_t[:, :n_s], m_t[:, :n_s], rows[:, n_s:], y_t[:, n_s:], m_t[:, n_s:]
    )


@dataclass(frozen=True, slots=True)
class EpisodeHooks:
    """What a domain changes in the loop (the molecule defaults apply when none are given).

    Attributes:
        samplers: Training-episode samplers; each episode picks one at random.
        select_tasks: Keeps the tasks a training episode can be drawn from.
        validate: Validation score of the learner (higher is better), e.g. −MAE.
        metric: Name of the validation score in logs.
        batch_loss: A step's loss from its episodes (``(learner, episodes, x_train)``), for
            learners whose episodes are not (support rows, query rows) pairs, e.g. the top-N
            recommender scoring the whole catalogue; None: the learner's ``episode_loss``.
        validate_at_start: Validate before the first step, so that early stopping can keep the
            initial state (a learner that starts from a closed-form solution).
    """

    samplers: list[EpisodeSampler]
    select_tasks: Callable[[list[Task]], list[Task]]
    validate: Callable[[EpisodicLearner, torch.device], float]
    metric: str = "valid"
    batch_loss: Callable[[EpisodicLearner, list[Episode], torch.Tensor], torch.Tensor] | None = None
    validate_at_start: bool = False


def meta_train(
    learner: EpisodicLearner,
    train_tasks: list[Task],
    train_x: FloatArray,
    valid_tasks: list[Task],
    valid_x: FloatArray,
    cfg: TrainConfig,
    run_dir: Path,
    progress: bool = True,
    hooks: EpisodeHooks | None = None,
    select_label: str = "valid",
) -> TrainResult:
    """Meta-train ``learner`` episodically; early-stop on valid ΔAUPRC; resume from ``run_dir``.

    ``valid_tasks`` are whichever split selects (FS-Mol valid, or a held-out train slice);
    ``select_label`` names it in the logs.

    ``hooks`` replace the molecule episode samplers, task filter and validation score (e.g.
    rating regression validated by −MAE); the loop itself is the same. On return the learner
    holds the best validation state.
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    learner.to(device)
    tasks = (
        hooks.select_tasks(train_tasks)
        if hooks is not None
        else trainable_tasks(train_tasks, cfg.support_sizes)
    )
    if not tasks:
        from metascreen.domains.errors import ConfigError

        raise ConfigError(
            f"no training task has at least {min(cfg.support_sizes) + 2} rows with both classes"
        )
    logger.info(
        "meta-training %s on %d tasks (%d given), device %s",
        learner.name,
        len(tasks),
        len(train_tasks),
        device,
    )
    x_train = torch.as_tensor(train_x, device=device)
    params = [p for p in learner.parameters() if p.requires_grad]
    optimizer = (
        torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if params else None
    )
    samplers: list[EpisodeSampler] = (
        hooks.samplers
        if hooks is not None
        else [TrainingEpisodeSampler(n, cfg.query_size) for n in cfg.support_sizes]
    )
    use_amp = cfg.amp and device.type == "cuda"
    batched = cfg.batched_episodes and learner.batched_training and hooks is None
    multitask: MultitaskHeads | None = None
    mt_optimizer: torch.optim.SparseAdam | None = None
    if cfg.multitask_weight > 0 and optimizer is not None:
        if not batched:
            from metascreen.domains.errors import ConfigError

            raise ConfigError(
                "the multitask loss needs batched episodes and a learner with batched training "
                f"({learner.name}, batched_episodes={cfg.batched_episodes})"
            )
        learner.eval()  # no dropout draw: the embedding width only
        with torch.no_grad():
            dim = learner.embed(x_train[:1]).shape[-1]
        multitask = MultitaskHeads(len(tasks), dim).to(device)
        mt_optimizer = torch.optim.SparseAdam(list(multitask.parameters()), lr=cfg.lr)

    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    state: dict[str, Any] = {
        "step": 0,
        "best_score": -math.inf,
        "best_step": 0,
        "history": [],
        "bad_evals": 0,
        "skipped": 0,
    }
    ema = weight_ema(learner, cfg.ema_decay) if optimizer is not None else None
    kept: EpisodicLearner = ema.module if ema is not None else learner  # validated and returned
    best_state = copy.deepcopy(learner.state_dict())
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        learner.load_state_dict(ckpt["model"])
        if multitask is not None:
            if "multitask" not in ckpt:
                from metascreen.domains.errors import ConfigError

                raise ConfigError(
                    f"{ckpt_path} was written without the multitask loss; cannot resume"
                )
            multitask.load_state_dict(ckpt["multitask"])
            assert mt_optimizer is not None
            mt_optimizer.load_state_dict(ckpt["multitask_optimizer"])
        if optimizer is not None and ckpt.get("optimizer"):
            optimizer.load_state_dict(ckpt["optimizer"])
        best_state = ckpt["best_model"]
        if ema is not None:
            load_ema(ema, ckpt, ckpt_path)
        state.update(
            {k: ckpt[k] for k in ("step", "best_score", "best_step", "bad_evals", "skipped")}
        )
        state["history"] = history_from(ckpt, HISTORY_RENAMED)
        torch.set_rng_state(ckpt["torch_rng"])
        logger.info(
            "resumed from %s at step %d (best %.4f)", ckpt_path, state["step"], state["best_score"]
        )

    def save_checkpoint() -> None:
        save_checkpoint_atomic(
            ckpt_path,
            {
                "model": learner.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else {},
                "best_model": best_state,
                **({"ema": ema.state_dict()} if ema is not None else {}),
                **(
                    {
                        "multitask": multitask.state_dict(),
                        "multitask_optimizer": mt_optimizer.state_dict(),
                    }
                    if multitask is not None and mt_optimizer is not None
                    else {}
                ),
                **history_fields(state["history"], ["step", "loss", "selection"]),
                "torch_rng": torch.get_rng_state(),
                **{
                    k: state[k] for k in ("step", "best_score", "best_step", "bad_evals", "skipped")
                },
            },
        )

    def validate() -> float:
        if hooks is not None:
            score = hooks.validate(kept, device)
            learner.train()
            return float(score)
        score = (
            TorchEvaluator(kept, device)
            .evaluate(valid_tasks, valid_x, cfg.valid_support_size, cfg.valid_repeats)
            .mean
        )
        learner.train()
        return float(score)

    start = time.perf_counter()
    stopped_early = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.steps, initial=state["step"], desc=f"meta-train {learner.name}", unit="step"
        )
    learner.train()
    running = running_mt = 0.0
    if optimizer is None:  # nothing to learn (e.g. a probe on a frozen encoder): validate once
        score = validate() if valid_tasks else math.nan
        state["history"].append({"step": 0, "loss": math.nan, "selection": score})
        state["best_score"], best_state = score, copy.deepcopy(learner.state_dict())
    elif hooks is not None and hooks.validate_at_start and state["step"] == 0 and valid_tasks:
        score = validate()
        state["history"].append({"step": 0, "loss": math.nan, "selection": score})
        state["best_score"], best_state = score, copy.deepcopy(kept.state_dict())
        logger.info("step 0 (initial state) %s %.4f", hooks.metric, score)
    while optimizer is not None and state["step"] < cfg.steps:
        step = state["step"]
        rng = np.random.default_rng([cfg.seed, step])
        episodes = []
        task_ids = []
        for _ in range(cfg.tasks_per_step):
            task_id = int(rng.integers(len(tasks)))
            sampler = samplers[int(rng.integers(len(samplers)))]
            try:
                episodes.append(sampler.sample(tasks[task_id], seed=int(rng.integers(2**31))))
                task_ids.append(task_id)
            except SamplingError:
                state["skipped"] += 1
        if not episodes:
            state["step"] += 1
            continue
        mt_loss: torch.Tensor | None = None
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            if batched:
                p = pad_episodes(episodes, x_train)
                se, qe = learner.embed_episodes(p.support_x, p.query_x)
                embedded = (se, p.support_y, p.support_mask, qe, p.query_y, p.query_mask)
                loss = learner.batched_embedded_loss(*embedded)
                if multitask is not None:
                    ids = torch.as_tensor(task_ids, device=device)
                    mt_loss = multitask.loss(ids, *embedded)
            elif hooks is not None and hooks.batch_loss is not None:
                loss = hooks.batch_loss(learner, episodes, x_train)
            else:
                loss = torch.stack([episode_loss(learner, ep, x_train) for ep in episodes]).mean()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        if mt_optimizer is not None:
            for group in mt_optimizer.param_groups:
                group["lr"] = lr_at(step, cfg) * cfg.multitask_lr_scale
            mt_optimizer.zero_grad(set_to_none=True)
        optimizer.zero_grad(set_to_none=True)
        if mt_loss is not None:  # the logged loss stays the episodes' own
            (loss + cfg.multitask_weight * mt_loss).backward()
            running_mt = 0.95 * running_mt + 0.05 * mt_loss.item() if step else mt_loss.item()
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        if mt_optimizer is not None:
            mt_optimizer.step()
        if ema is not None:
            ema.update_parameters(learner)
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        state["step"] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", best=f"{state['best_score']:.4f}")
        done = state["step"] >= cfg.steps
        timed_out = (
            cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes
        )
        if valid_tasks and (state["step"] % cfg.eval_every == 0 or done or timed_out):
            score = validate()
            state["history"].append({"step": state["step"], "loss": running, "selection": score})
            logger.info(
                "step %d loss %.4f%s %s %.4f",
                state["step"],
                running,
                f" (multitask {running_mt:.4f})" if multitask is not None else "",
                hooks.metric
                if hooks is not None
                else f"{select_label} ΔAUPRC@{cfg.valid_support_size}",
                score,
            )
            if score > state["best_score"]:
                state.update(best_score=score, best_step=state["step"], bad_evals=0)
                best_state = copy.deepcopy(kept.state_dict())
            else:
                state["bad_evals"] += 1
                if state["bad_evals"] >= cfg.patience:
                    logger.info(
                        "early stop at step %d (best %.4f at %d)",
                        state["step"],
                        state["best_score"],
                        state["best_step"],
                    )
                    stopped_early = True
        elif not valid_tasks:
            best_state = copy.deepcopy(kept.state_dict())
            state["best_step"] = state["step"]
        if state["step"] % cfg.checkpoint_every == 0 or done or stopped_early or timed_out:
            save_checkpoint()
        if stopped_early or timed_out:
            break
    if bar is not None:
        bar.close()
    learner.load_state_dict(best_state)
    learner.eval()
    return TrainResult(
        best_score=float(state["best_score"]),
        best_step=int(state["best_step"]),
        steps_done=int(state["step"]),
        history=state["history"],
        skipped_episodes=int(state["skipped"]),
        seconds=time.perf_counter() - start,
        stopped_early=stopped_early,
    )
