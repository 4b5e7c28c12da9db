"""Meta-training of the screening policy (``metascreen.models.nn.policy``) across tasks.

Training (``train_policy``): a supervised warm start (predict the hidden label of every
candidate from random histories — this also learns, across tasks, which compounds tend to be
active before any label is seen), then REINFORCE with the value head as baseline on the
cumulative hits of episodes run in ``simulator.BatchEnv``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.models.nn.policy import NEG, ScreeningPolicy
from metascreen.models.screening.simulator import (
    BatchEnv,
    Pool,
    SimulationResult,
    run_env,
    simulate,
    subsample_pool,
)
from metascreen.models.training.loop import (
    HISTORY_RENAMED,
    EmaDecay,
    history_fields,
    history_from,
    load_ema,
    save_checkpoint_atomic,
    weight_ema,
)
from metascreen.models.training.seeding import resolve_device, seed_everything

logger = logging.getLogger(__name__)


def observe(
    env: BatchEnv, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy inputs from ``env`` given per-position tokens (B, N, d) of its candidates.

    ``tokens`` may be raw embeddings (for ``forward``) or projected ones (for ``score``).
    """
    device = tokens.device
    b = env.n_pools
    h = max(1, int(env.history_len.max()))
    pos = torch.as_tensor(np.maximum(env.history[:, :h], 0), device=device)
    hist = torch.gather(tokens, 1, pos.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    hist_mask = torch.as_tensor(env.history[:, :h] >= 0, device=device, dtype=tokens.dtype)
    hist_labels = torch.as_tensor(env.history_rewards[:, :h], device=device, dtype=tokens.dtype)
    cand_mask = torch.as_tensor(env.available, device=device, dtype=tokens.dtype)
    t = torch.full((b,), env.t_frac, device=device, dtype=tokens.dtype)
    return tokens, cand_mask, hist, hist_labels, hist_mask, t


class TorchPolicyPicker:
    """A ``ScreeningPolicy`` as a simulator picker (argmax of its logits), on cached embeddings."""

    def __init__(
        self, policy: ScreeningPolicy, embeddings: torch.Tensor, name: str = "policy"
    ) -> None:
        """``embeddings[item]`` is the frozen encoder's embedding of an item."""
        self.policy = policy
        self.embeddings = embeddings
        self.name = name
        self._env: BatchEnv | None = None
        self._tokens: torch.Tensor | None = None

    @torch.no_grad()
    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) policy logits."""
        if self._env is not env or self._tokens is None:
            items = torch.as_tensor(env.items, device=self.embeddings.device)
            self._tokens = self.policy.project(self.embeddings[items])
            self._env = env
        logits, _ = self.policy.score(*observe(env, self._tokens))
        return logits.float().cpu().numpy()


class PolicyTrainConfig(BaseModel):
    """Meta-training of the policy: supervised warm start, then REINFORCE."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warm_steps: int = Field(1500, ge=0)
    rl_steps: int = Field(300, ge=0)
    pools_per_step: int = Field(16, ge=1)
    rl_pools_per_step: int = Field(8, ge=1, description="episodes per REINFORCE step")
    budget: int = Field(32, ge=1)
    max_pool: int = Field(160, ge=8, description="training pools are subsampled to this size")
    histories_per_step: int = Field(
        3, ge=1, description="warm start: history lengths per pool batch"
    )
    warm_history: Literal["random", "policy"] = Field(
        "random",
        description="warm start histories: random picks, or sampled from the policy's own logits "
        "(Gumbel top-k on the previous history length's logits), so histories look like the ones "
        "it will meet",
    )
    active_fractions: tuple[float, ...] = (0.05, 0.1, 0.1, 0.2, 0.5, 1.0)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0, description="linear LR warm-up at the start")
    rl_from: Literal["last", "best"] = Field(
        "best",
        description="state REINFORCE starts from: the last warm-start state, or the best-validated",
    )
    keep: Literal["best", "last"] = Field(
        "last",
        description="state returned and exported: the best-validated (the first valid fraction), "
        "or the last one (no selection on noisy validation checks)",
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="warm-start LR after the warm-up: constant, or cosine decay to 1%"
    )
    ema_decay: EmaDecay = None
    rl_lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    entropy: float = Field(0.01, ge=0)
    rl_baseline: Literal["value", "greedy"] = Field(
        "greedy",
        description="REINFORCE baseline: the value head (per-step returns), or the episode's hits "
        "when the same pool is played by the current policy's argmax (self-critical)",
    )
    aux_bce: float = Field(0.5, ge=0, description="supervised loss kept during RL")
    rank_loss: float = Field(
        1.0, ge=0, description="weight of the listwise (oracle-imitation) term of the label loss"
    )
    eval_every: int = Field(100, ge=1)
    valid_repeats: int = Field(2, ge=1)
    valid_fractions: tuple[float, ...] = (0.1, 1.0)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    max_minutes: float | None = Field(None, gt=0)


@dataclass(slots=True)
class PolicyTrainResult:
    """What ``train_policy`` did."""

    best_score: float
    best_phase: str
    best_step: int
    steps_done: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _warm_lr(cfg: PolicyTrainConfig, step: int) -> float:
    """Warm-start learning rate at ``step``: linear warm-up, then constant or cosine to 1%."""
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_schedule == "cosine" and cfg.warm_steps > cfg.warmup_steps:
        frac = max(0, step - cfg.warmup_steps) / (cfg.warm_steps - cfg.warmup_steps)
        lr *= 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
    return lr


def _capped_pool(task: Task, frac: float, cap: int, rng: np.random.Generator) -> Pool:
    pool = subsample_pool(task, frac, rng)
    if len(pool) <= cap:
        return pool
    keep = np.sort(rng.choice(len(pool), size=cap, replace=False))
    return Pool(pool.task_id, pool.items[keep], pool.rewards[keep])


PoolSampler = Callable[[list[Task], PolicyTrainConfig, np.random.Generator, int | None], list[Pool]]
"""(training tasks, config, rng, n pools or None = ``pools_per_step``) → training pools.

The domain hook of ``train_policy``: molecules subsample actives (``_sample_pools``);
recommendation samples slices of the item catalogue (``models.rec_policy``)."""


def _sample_pools(
    tasks: list[Task], cfg: PolicyTrainConfig, rng: np.random.Generator, n: int | None = None
) -> list[Pool]:
    pools: list[Pool] = []
    while len(pools) < (n or cfg.pools_per_step):
        task = tasks[int(rng.integers(len(tasks)))]
        frac = float(rng.choice(cfg.active_fractions))
        pool = _capped_pool(task, frac, cfg.max_pool, rng)
        if pool.n_hits >= 1 and len(pool) - pool.n_hits >= 1 and len(pool) > cfg.budget // 2:
            pools.append(pool)
    return pools


def _pool_seeds(rng: np.random.Generator, n: int) -> list[list[int]]:
    return [[int(v)] for v in rng.integers(2**31, size=n)]


def _label_loss(
    logits: torch.Tensor, env: BatchEnv, device: torch.device, rank: float = 0.0
) -> torch.Tensor:
    """Mean BCE of the logits against the hidden rewards of the available candidates, plus
    ``rank`` × the listwise loss: cross-entropy of the pick distribution (softmax over the
    available candidates) towards the remaining actives — imitating an oracle's next pick, which
    is what argmax picking needs (the top of the ranking), where BCE weighs every candidate."""
    y = torch.as_tensor(env.rewards, device=device, dtype=torch.float32)
    m = torch.as_tensor(env.available, device=device, dtype=torch.float32)
    z = logits.float()
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    loss = ((bce * m).sum(1) / m.sum(1).clamp_min(1.0)).mean()
    if rank > 0:
        pos = y * m
        n_pos = pos.sum(1)
        logp = torch.log_softmax(torch.where(m > 0.5, z, torch.full_like(z, NEG)), -1)
        ce = -(pos * logp).sum(1) / n_pos.clamp_min(1.0)
        has = (n_pos > 0).float()
        loss = loss + rank * (ce * has).sum() / has.sum().clamp_min(1.0)
    return loss


def validate_policy(
    policy: ScreeningPolicy,
    embeddings: torch.Tensor,
    tasks: list[Task],
    budget: int,
    fractions: tuple[float, ...],
    repeats: int,
    seed: int = 0,
) -> dict[float, SimulationResult]:
    """Simulate the policy (argmax picks) on ``tasks`` at each active fraction."""
    was_training = policy.training
    policy.eval()
    picker = TorchPolicyPicker(policy, embeddings)
    out = {f: simulate(picker, tasks, budget, 1, 0, f, repeats, seed) for f in fractions}
    policy.train(was_training)
    return out


def train_policy(
    policy: ScreeningPolicy,
    train_emb: np.ndarray,
    train_tasks: list[Task],
    valid_emb: np.ndarray | None,
    valid_tasks: list[Task],
    cfg: PolicyTrainConfig,
    run_dir: Path,
    progress: bool = True,
    sample_pools: PoolSampler | None = None,
    select_label: str = "valid",
) -> PolicyTrainResult:
    """Warm start then REINFORCE; keeps the best validation state (mean hits at the first valid fraction).

    Checkpoints to ``run_dir/policy_checkpoint.pt`` every ``eval_every`` steps and resumes from it.
    ``sample_pools`` draws the training pools (default: the molecule sampler ``_sample_pools``).
    ``valid_tasks`` are the selection split; ``select_label`` names it in the logs.
    """
    sample_pools = sample_pools or _sample_pools
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    policy.to(device)
    use_amp = cfg.amp and device.type == "cuda"
    e_train = torch.as_tensor(train_emb, device=device)
    e_valid = torch.as_tensor(valid_emb, device=device) if valid_emb is not None else None
    tasks = [t for t in train_tasks if t.n_positive >= 1 and len(t) - t.n_positive >= 2]
    if not tasks:
        raise ConfigError("no training task with both actives and inactives")
    total = cfg.warm_steps + cfg.rl_steps
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "policy_checkpoint.pt"
    state: dict[str, Any] = {"step": 0, "best_score": -math.inf, "best_step": 0}
    history: list[dict[str, Any]] = []
    ema = weight_ema(policy, cfg.ema_decay)
    # the weights that are validated and kept: the running average when there is one
    evaluated: ScreeningPolicy = ema.module if ema is not None else policy
    best = copy.deepcopy(policy.state_dict())
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        policy.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            load_ema(ema, ck, ckpt_path)
        best = ck["best_model"]
        state.update(
            step=int(ck["step"]), best_score=float(ck["best_score"]), best_step=int(ck["best_step"])
        )
        history = history_from(ck, HISTORY_RENAMED)
        logger.info("resumed policy training at step %d", state["step"])

    def save() -> None:
        save_checkpoint_atomic(
            ckpt_path,
            {
                "model": policy.state_dict(),
                "optimizer": opt.state_dict(),
                "best_model": best,
                **({"ema": ema.state_dict()} if ema is not None else {}),
                **history_fields(history, ["step", "loss", "selection", "selection_f1", "seconds"]),
                **state,
            },
        )

    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=state["step"], desc="train policy", unit="step")
    policy.train()
    running = math.nan
    while state["step"] < total:
        step = state["step"]
        rng = np.random.default_rng([cfg.seed, step])
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        rl = step >= cfg.warm_steps
        if rl and step == cfg.warm_steps and cfg.rl_from == "best" and cfg.warm_steps > 0:
            policy.load_state_dict(best)
            logger.info(
                "REINFORCE starts from the best warm-start state (step %d)", state["best_step"]
            )
        pools = sample_pools(tasks, cfg, rng, cfg.rl_pools_per_step if rl else None)
        lr = cfg.rl_lr if rl else _warm_lr(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = (
                _rl_loss(policy, e_train, pools, cfg, rng, device)
                if rl
                else _warm_loss(policy, e_train, pools, cfg, rng, device)
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema.update_parameters(policy)
        running = loss.item() if math.isnan(running) else 0.98 * running + 0.02 * loss.item()
        state["step"] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(
                phase="rl" if rl else "warm",
                loss=f"{running:.3f}",
                best=f"{state['best_score']:.2f}",
            )
        done = state["step"] >= total
        timed_out = (
            cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes
        )
        boundary = state["step"] == cfg.warm_steps
        if state["step"] % cfg.eval_every == 0 or done or timed_out or boundary:
            rec: dict[str, Any] = {
                "step": state["step"],
                "loss": running,
                "seconds": time.perf_counter() - start,
            }
            if e_valid is not None and valid_tasks:
                res = validate_policy(
                    evaluated,
                    e_valid,
                    valid_tasks,
                    cfg.budget,
                    cfg.valid_fractions,
                    cfg.valid_repeats,
                )
                fr = list(res)
                rec["selection"] = res[fr[0]].mean_hits
                rec["selection_f1"] = res[fr[-1]].mean_hits
                logger.info(
                    "policy step %d (%s) loss %.4f %s hits@%d %s",
                    state["step"],
                    "rl" if rl else "warm",
                    running,
                    select_label,
                    cfg.budget,
                    ", ".join(f"f={f}: {r.mean_hits:.3f}" for f, r in res.items()),
                )
                if rec["selection"] > state["best_score"]:
                    state.update(best_score=rec["selection"], best_step=state["step"])
                    best = copy.deepcopy(evaluated.state_dict())
            else:
                best = copy.deepcopy(evaluated.state_dict())
                state["best_step"] = state["step"]
            history.append(rec)
            save()
            # a validation that ran past the limit ends training here, not after one more step
            timed_out = timed_out or (
                cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes
            )
        if timed_out:
            logger.info("policy training stopped at the time limit (step %d)", state["step"])
            break
    if bar is not None:
        bar.close()
    if cfg.keep == "last":
        best = evaluated.state_dict()
        last = next((r for r in reversed(history) if "selection" in r), None)
        state.update(best_step=state["step"], best_score=last["selection"] if last else math.nan)
    policy.load_state_dict(best)
    policy.eval()
    best_step = int(state["best_step"])
    return PolicyTrainResult(
        best_score=float(state["best_score"]),
        best_phase="rl" if best_step > cfg.warm_steps else "warm",
        best_step=best_step,
        steps_done=int(state["step"]),
        seconds=time.perf_counter() - start,
        history=history,
    )


def _warm_loss(
    policy: ScreeningPolicy,
    emb: torch.Tensor,
    pools: list[Pool],
    cfg: PolicyTrainConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Supervised: random histories of random length, predict every remaining label."""
    losses = []
    # Several history lengths per batch of pools: each costs one forward on shared projections.
    env = BatchEnv(pools, cfg.budget, 1, 0, _pool_seeds(rng, len(pools)))
    tokens = policy.project(emb[torch.as_tensor(env.items, device=device)])
    n_len = min(cfg.histories_per_step, cfg.budget)
    lengths = sorted(rng.choice(cfg.budget, size=n_len, replace=False).tolist())
    done = 0
    logits: torch.Tensor | None = None
    for h in lengths:
        if cfg.warm_history == "policy" and done < h and not env.done:
            if logits is None:
                with torch.no_grad():
                    logits, _ = policy.score(*observe(env, tokens))
            # Gumbel top-k = sampling (h - done) picks without replacement from softmax(logits)
            u = np.clip(env.random(), 1e-12, 1.0 - 1e-12)
            picks = env.select(logits.detach().float().cpu().numpy() - np.log(-np.log(u)), h - done)
            for j in range(picks.shape[1]):
                if not env.done:
                    env.step(picks[:, j : j + 1])
            done = h
        while done < h and not env.done:
            env.step(env.select(env.random(), 1))
            done += 1
        logits, _ = policy.score(*observe(env, tokens))
        losses.append(_label_loss(logits, env, device, cfg.rank_loss))
    return torch.stack(losses).mean()


def _rl_loss(
    policy: ScreeningPolicy,
    emb: torch.Tensor,
    pools: list[Pool],
    cfg: PolicyTrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    parts: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """REINFORCE on one batch of full episodes, with the value head or the policy's own argmax
    episode (``cfg.rl_baseline``) as baseline; ``parts`` receives the advantages and loss terms."""
    seeds = _pool_seeds(rng, len(pools))
    env = BatchEnv(pools, cfg.budget, 1, 0, seeds)
    tokens = policy.project(emb[torch.as_tensor(env.items, device=device)])
    logps, values, rewards, entropies, aux = [], [], [], [], []
    while not env.done:
        logits, value = policy.score(*observe(env, tokens))
        aux.append(_label_loss(logits, env, device, cfg.rank_loss))
        dist = torch.distributions.Categorical(logits=logits.float())
        pick = dist.sample()
        # a pool smaller than the budget can run dry: it picks nothing (-1) and adds no gradient
        live = torch.as_tensor(env.available.any(1), device=device)
        logps.append(dist.log_prob(pick) * live)
        entropies.append(dist.entropy() * live)
        values.append(value.float())
        picks = torch.where(live, pick, torch.full_like(pick, -1))
        r = env.step(picks.cpu().numpy()[:, None])[:, 0]
        rewards.append(torch.as_tensor(r, device=device, dtype=torch.float32))
    rew = torch.stack(rewards, 1)  # (B, T)
    returns = rew.flip(1).cumsum(1).flip(1)
    v = torch.stack(values, 1)
    if cfg.rl_baseline == "greedy":
        # self-critical: how much better the sampled episode did than the policy's own argmax
        # on the same pool and tie-breaking seeds; every step of the episode shares it
        argmax_env = BatchEnv(pools, cfg.budget, 1, 0, seeds)
        base = run_env(argmax_env, TorchPolicyPicker(policy, emb))[:, -1]
        gain = rew.sum(1) - torch.as_tensor(base, device=device, dtype=torch.float32)
        adv = gain.unsqueeze(1).expand_as(rew)
        adv = adv / (adv.std() + 1e-6)
    else:
        adv = returns - v.detach()
        adv = (adv - adv.mean()) / (adv.std() + 1e-6)
    pg = -(torch.stack(logps, 1) * adv).mean()
    v_loss = F.smooth_l1_loss(v, returns)
    ent = torch.stack(entropies, 1).mean()
    if parts is not None:
        parts.update(advantage=adv.detach(), pg=pg.detach(), value_loss=v_loss.detach())
    return pg + 0.1 * v_loss - cfg.entropy * ent + cfg.aux_bce * torch.stack(aux).mean()
