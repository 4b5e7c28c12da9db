"""The adaptive-screening policy: candidates attend over the (embedding, label) history.

Permutation-equivariant in the candidates and permutation-invariant in the history: each
candidate is projected, cross-attends over the history tokens (projected embedding + label
embedding, plus a learned token standing for "nothing known yet" that is never masked, so an
empty history is well defined), sees the pool's mean and the spent budget fraction, and gets one
logit. A value head reads the pooled candidates. Shared by both domains: it only sees embeddings.

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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.models.learners.registry import build_head
from metascreen.models.screening.simulator import (
    BatchEnv,
    Pool,
    SimulationResult,
    run_env,
    simulate,
    subsample_pool,
)
from metascreen.models.training.loop import history_fields, history_from, save_checkpoint_atomic
from metascreen.models.training.seeding import resolve_device, seed_everything

logger = logging.getLogger(__name__)

N_SIM = 9  # similarity features per candidate (see ScreeningPolicy.similarity_features)
N_HEAD = 3  # predictor-head features per candidate (see ScreeningPolicy.head_features)
NEG = -1e4  # logit of a candidate that cannot be picked (finite: exports and softmaxes cleanly)


class PolicyConfig(BaseModel):
    """Architecture of ``ScreeningPolicy``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    d_model: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1, le=8)
    use_history: bool = Field(True, description="False: the ablation without history attention")
    predictor_head: Literal["protonet", "matching", "gp", "multihead"] | None = Field(
        None,
        description="a frozen few-shot head (the predictor's, on the same embeddings) whose "
        "adapted logit on the history is a candidate feature",
    )


class _CrossBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, h: torch.Tensor, kv: torch.Tensor, key_ok: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        m = kv.shape[1]
        hd = d // self.heads
        q = self.q(self.norm_q(h)).reshape(b, n, self.heads, hd).transpose(1, 2)
        k, v = self.kv(self.norm_kv(kv)).reshape(b, m, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        mask = key_ok[:, None, None, :]  # (B, 1, 1, M) bool
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.o(att.transpose(1, 2).reshape(b, n, d))
        return h + self.ff(self.norm_ff(h))


class ScreeningPolicy(nn.Module):
    """Scores candidates given the history.

    Shapes:
        candidates (B, N, D), candidate_mask (B, N) 1 = may be picked,
        history (B, H, D), history_labels (B, H) 0/1, history_mask (B, H) 1 = real entry,
        t_frac (B,) spent budget fraction → logits (B, N) (``NEG`` where masked), value (B,)
    """

    def __init__(self, in_dim: int, cfg: PolicyConfig | None = None) -> None:
        """Build the projections, attention blocks and heads."""
        super().__init__()
        cfg = cfg or PolicyConfig()
        if cfg.d_model % cfg.heads:
            raise ConfigError(f"d_model {cfg.d_model} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.in_dim = in_dim
        d = cfg.d_model
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, d), nn.GELU(), nn.Linear(d, d)
        )
        self.label = nn.Embedding(2, d)
        self.empty = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.context = nn.Linear(d + 1, d)
        self.blocks = nn.ModuleList([_CrossBlock(d, cfg.heads) for _ in range(cfg.layers)])
        self.head: nn.Module | None = None
        if cfg.predictor_head is not None:
            self.head = build_head(cfg.predictor_head).requires_grad_(False)
        n_feat = N_SIM + (N_HEAD if self.head is not None else 0)
        self.sim_in = nn.Sequential(nn.Linear(n_feat, d), nn.GELU(), nn.Linear(d, d))
        self.sim_out = nn.Linear(n_feat, 1)
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.value = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) embeddings → tokens: learned projection ‖ L2-normalised input (‖ the input
        itself when there is a predictor head, which works on raw embeddings).

        Candidates are projected once per episode; history tokens are gathered from them.
        """
        parts = [self.proj(x), F.normalize(x.float(), dim=-1).to(x.dtype)]
        if self.head is not None:
            parts.append(x)
        return torch.cat(parts, -1)

    def head_features(
        self,
        cand_raw: torch.Tensor,
        cand_mask: torch.Tensor,
        hist_raw: torch.Tensor,
        hist_labels: torch.Tensor,
        hist_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, N, N_HEAD): the predictor head's logit adapted on the history, the same logit
        standardised over the available candidates, and whether both classes are known (the
        first two are 0 until they are) — what the ``greedy`` baseline ranks by, in-graph."""
        assert self.head is not None
        z = self.head.batched_head(  # type: ignore[operator]
            hist_raw.float(), hist_labels.float(), hist_mask.float(), cand_raw.float()
        )
        known = hist_mask > 0.5
        has_pos = (known & (hist_labels > 0.5)).any(1)
        has_neg = (known & (hist_labels <= 0.5)).any(1)
        both = (has_pos & has_neg).to(z.dtype).unsqueeze(1)  # (B, 1)
        cm = cand_mask.to(z.dtype)
        n = cm.sum(1, keepdim=True).clamp_min(1.0)
        mean = (z * cm).sum(1, keepdim=True) / n
        std = (((z - mean) ** 2 * cm).sum(1, keepdim=True) / n).sqrt()
        zs = (z - mean) / (std + 1e-3)
        return torch.stack([z * both, zs * both, both.expand_as(z)], -1)

    def similarity_features(
        self,
        cand_n: torch.Tensor,
        hist_n: torch.Tensor,
        hist_labels: torch.Tensor,
        hist_mask: torch.Tensor,
    ) -> torch.Tensor:
        """(B, N, N_SIM) cosine-similarity statistics of each candidate to the known actives/inactives.

        Max and mean similarity to each class, whether the class has been seen, log counts and the
        max-similarity margin: the inductive bias of kNN/prototype few-shot learners, in-graph.
        """
        sim = cand_n @ hist_n.transpose(1, 2)  # (B, N, H)
        seen = hist_mask > 0.5
        out = []
        for sel in (seen & (hist_labels > 0.5), seen & (hist_labels <= 0.5)):
            w = sel.unsqueeze(1).to(sim.dtype)  # (B, 1, H)
            cnt = w.sum(-1)  # (B, 1)
            has = (cnt > 0).to(sim.dtype)
            mx = torch.where(sel.unsqueeze(1), sim, torch.full_like(sim, -2.0)).amax(-1) * has
            mean = (sim * w).sum(-1) / cnt.clamp_min(1.0)
            out += [mx, mean, has.expand_as(mx), torch.log1p(cnt).expand_as(mx)]
        out.append(out[0] - out[4])
        return torch.stack(out, -1)

    def score(
        self,
        cand: torch.Tensor,
        cand_mask: torch.Tensor,
        hist: torch.Tensor,
        hist_labels: torch.Tensor,
        hist_mask: torch.Tensor,
        t_frac: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` on ``project``-ed candidate and history tokens."""
        b = cand.shape[0]
        d = self.cfg.d_model
        e = d + self.in_dim
        cand, cand_n, cand_raw = cand[..., :d], cand[..., d:e], cand[..., e:]
        hist, hist_n, hist_raw = hist[..., :d], hist[..., d:e], hist[..., e:]
        cm = cand_mask.to(cand.dtype).unsqueeze(-1)
        t = t_frac.reshape(b, 1).to(cand.dtype)
        pool_mean = (cand * cm).sum(1) / cm.sum(1).clamp_min(1.0)  # (B, d)
        ctx = self.context(torch.cat([pool_mean, t], -1))
        h = cand + ctx.unsqueeze(1)
        if self.cfg.use_history:
            feats = self.similarity_features(cand_n, hist_n, hist_labels, hist_mask)
            if self.head is not None:
                head = self.head_features(cand_raw, cand_mask, hist_raw, hist_labels, hist_mask)
                feats = torch.cat([feats, head.to(feats.dtype)], -1)
            feats = feats.to(cand.dtype)
            tokens = hist + self.label(hist_labels.long().clamp(0, 1))
            kv = torch.cat([self.empty.expand(b, 1, -1).to(tokens.dtype), tokens], 1)
            ok = torch.cat(
                [torch.ones(b, 1, dtype=torch.bool, device=hist.device), hist_mask > 0.5], 1
            )
        else:
            n_feat = self.sim_out.in_features
            feats = torch.zeros(*cand.shape[:2], n_feat, dtype=cand.dtype, device=cand.device)
            kv = self.empty.expand(b, 1, -1).to(cand.dtype)
            ok = torch.ones(b, 1, dtype=torch.bool, device=cand.device)
        h = h + self.sim_in(feats)
        for block in self.blocks:
            h = block(h, kv, ok)
        logits = self.out(h).squeeze(-1) + self.sim_out(feats).squeeze(-1)
        logits = torch.where(cand_mask > 0.5, logits, torch.full_like(logits, NEG))
        pooled = (h * cm).sum(1) / cm.sum(1).clamp_min(1.0)
        return logits, self.value(pooled).squeeze(-1)

    def forward(
        self,
        candidates: torch.Tensor,
        candidate_mask: torch.Tensor,
        history: torch.Tensor,
        history_labels: torch.Tensor,
        history_mask: torch.Tensor,
        t_frac: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) logits and (B,) values; see the class docstring for shapes."""
        return self.score(
            self.project(candidates),
            candidate_mask,
            self.project(history),
            history_labels,
            history_mask,
            t_frac,
        )


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
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights (torch swa_utils); it is "
        "what is validated, kept and returned",
    )
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
) -> PolicyTrainResult:
    """Warm start then REINFORCE; keeps the best validation state (mean hits at the first valid fraction).

    Checkpoints to ``run_dir/policy_checkpoint.pt`` every ``eval_every`` steps and resumes from it.
    ``sample_pools`` draws the training pools (default: the molecule sampler ``_sample_pools``).
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
    ema = (
        AveragedModel(policy, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay is not None
        else None
    )
    # the weights that are validated and kept: the running average when there is one
    evaluated: ScreeningPolicy = ema.module if ema is not None else policy  # type: ignore[assignment]
    best = copy.deepcopy(policy.state_dict())
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        policy.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            if "ema" not in ck:
                raise ConfigError(f"{ckpt_path} was written without --ema-decay; cannot resume")
            ema.load_state_dict(ck["ema"])
        best = ck["best_model"]
        state.update(
            step=int(ck["step"]), best_score=float(ck["best_score"]), best_step=int(ck["best_step"])
        )
        history = history_from(ck)
        logger.info("resumed policy training at step %d", state["step"])

    def save() -> None:
        save_checkpoint_atomic(
            ckpt_path,
            {
                "model": policy.state_dict(),
                "optimizer": opt.state_dict(),
                "best_model": best,
                **({"ema": ema.state_dict()} if ema is not None else {}),
                **history_fields(history, ["step", "loss", "valid", "valid_f1", "seconds"]),
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
                rec["valid"] = res[fr[0]].mean_hits
                rec["valid_f1"] = res[fr[-1]].mean_hits
                logger.info(
                    "policy step %d (%s) loss %.4f valid hits@%d %s",
                    state["step"],
                    "rl" if rl else "warm",
                    running,
                    cfg.budget,
                    ", ".join(f"f={f}: {r.mean_hits:.3f}" for f, r in res.items()),
                )
                if rec["valid"] > state["best_score"]:
                    state.update(best_score=rec["valid"], best_step=state["step"])
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
        last = next((r for r in reversed(history) if "valid" in r), None)
        state.update(best_step=state["step"], best_score=last["valid"] if last else math.nan)
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


def policy_parity_cases(in_dim: int, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """Policy inputs at shapes unlike the export example (incl. an empty history)."""
    gen = torch.Generator().manual_seed(seed)
    cases: list[tuple[torch.Tensor, ...]] = []
    for b, n, h in ((1, 5, 1), (3, 41, 9), (2, 130, 33)):
        cm = (torch.rand(b, n, generator=gen) < 0.8).float()
        cm[:, 0] = 1.0
        hm = (torch.rand(b, h, generator=gen) < 0.7).float()
        hm[0] = 0.0  # the first row has an empty history
        cases.append(
            (
                torch.randn(b, n, in_dim, generator=gen),
                cm,
                torch.randn(b, h, in_dim, generator=gen),
                (torch.rand(b, h, generator=gen) < 0.3).float(),
                hm,
                torch.rand(b, generator=gen),
            )
        )
    return cases


def export_policy_onnx(policy: ScreeningPolicy, path: Path, atol: float = 1e-4) -> float:
    """Export with dynamic B, N, H and check parity; returns the largest |diff| seen."""
    from metascreen.models.training.export import check_graph_parity, export_graph

    policy = policy.cpu().eval()
    d = policy.in_dim
    example = policy_parity_cases(d, seed=0)[1]
    b, n, h = (torch.export.Dim(x, min=1) for x in ("batch", "n_candidates", "n_history"))
    names = (
        "candidates",
        "candidate_mask",
        "history",
        "history_labels",
        "history_mask",
        "t_frac",
    )
    export_graph(
        policy,
        example,
        path,
        names,
        ("logits", "value"),
        ({0: b, 1: n}, {0: b, 1: n}, {0: b, 1: h}, {0: b, 1: h}, {0: b, 1: h}, {0: b}),
    )
    return check_graph_parity(policy, path, names, policy_parity_cases(d, seed=1), atol)


def export_encoder_onnx(encoder: nn.Module, in_dim: int, path: Path, atol: float = 1e-4) -> float:
    """Export a frozen encoder (rows → embeddings, dynamic rows) and check parity."""
    from metascreen.models.training.export import check_graph_parity, export_graph, sparse_rows

    encoder = encoder.cpu().eval()
    gen = torch.Generator().manual_seed(0)
    n = torch.export.Dim("n", min=1)
    export_graph(encoder, (sparse_rows(8, in_dim, gen),), path, ("x",), ("embedding",), ({0: n},))
    cases: list[tuple[torch.Tensor, ...]] = [(sparse_rows(k, in_dim, gen),) for k in (1, 37, 300)]
    return check_graph_parity(encoder, path, ("x",), cases, atol)
