"""Adaptive-screening simulator shared by both domains (numpy only).

A *pool* is one task's candidates with hidden 0/1 rewards (actives, or items a user liked). Each
step a picker scores the candidates not chosen yet, the top ``batch`` are revealed, and the
reward is the number of hits among them. ``BatchEnv`` runs many pools side by side (padded, with
masks) so a torch or ONNX policy scores all of them in one call; the command-line benchmark and
the policy's RL training step through this same class, so reward accounting exists once.

Example:
    >>> pools = make_pools(tasks, active_fraction=0.1, seed=0)
    >>> result = simulate(RandomPicker(), tasks, budget=32, active_fraction=0.1, seed=0)
    >>> result.mean_hits
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.domains.types import FloatArray, IntArray

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pool:
    """One task's candidate pool.

    Attributes:
        task_id: The task's identifier.
        items: (n,) rows of the candidates in the feature/embedding matrix.
        rewards: (n,) 0/1 reward of picking each candidate (hidden from pickers).
    """

    task_id: str
    items: IntArray
    rewards: IntArray

    def __len__(self) -> int:
        """Number of candidates."""
        return int(self.items.shape[0])

    @property
    def n_hits(self) -> int:
        """Number of rewarding candidates in the pool."""
        return int(self.rewards.sum())


def subsample_pool(task: Task, active_fraction: float, rng: np.random.Generator) -> Pool:
    """All inactives plus a random subset of actives making up ``active_fraction`` of the pool.

    At least 2 actives are kept (fewer only if the task has fewer); ``active_fraction >= 1`` keeps
    the task as it is. Candidate order is shuffled so that file order carries no signal.
    """
    if not 0.0 < active_fraction <= 1.0:
        raise ConfigError(f"active_fraction must be in (0, 1], got {active_fraction}")
    labels = (task.labels > 0.5).astype(np.int64)
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    if active_fraction < 1.0:
        n_keep = round(active_fraction / (1.0 - active_fraction) * len(neg))
        n_keep = min(len(pos), max(2, n_keep))
        pos = rng.choice(pos, size=n_keep, replace=False) if n_keep < len(pos) else pos
    keep = rng.permutation(np.concatenate([pos, neg]))
    return Pool(task.task_id, task.item_idx[keep].astype(np.int64), labels[keep])


def make_pools(
    tasks: Sequence[Task], active_fraction: float, seed: int | Sequence[int]
) -> list[Pool]:
    """One pool per task; each task's draw depends only on (seed, task position)."""
    base = [seed] if isinstance(seed, int) else list(seed)
    return [
        subsample_pool(t, active_fraction, np.random.default_rng([*base, i]))
        for i, t in enumerate(tasks)
    ]


class BatchEnv:
    """Screening episodes on several pools at once.

    Pools are padded to the largest; ``available`` marks candidates that may still be picked.
    History is kept in pick order (``init`` random picks first, which are not counted as hits).

    Shapes (B pools, N = largest pool, H = init + budget):
        items (B, N), rewards (B, N), valid (B, N), chosen (B, N),
        history (B, H) positions in the pool (-1 = empty), history_rewards (B, H)
    """

    def __init__(
        self,
        pools: Sequence[Pool],
        budget: int,
        batch: int = 1,
        init: int = 0,
        seeds: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Start episodes; ``init`` candidates per pool are revealed at random first.

        ``seeds[b]`` seeds pool b's own random stream (ties, random pickers, init picks), so a
        pool's episode does not depend on which other pools share the batch.
        """
        if budget < 1 or batch < 1 or init < 0:
            raise ConfigError(
                f"need budget ≥ 1, batch ≥ 1, init ≥ 0 (got {budget}, {batch}, {init})"
            )
        if not pools:
            raise ConfigError("no pool to simulate")
        self.pools = list(pools)
        self.budget, self.batch, self.init = budget, batch, init
        b, n = len(pools), max(len(p) for p in pools)
        self.items = np.zeros((b, n), np.int64)
        self.rewards = np.zeros((b, n), np.int64)
        self.valid = np.zeros((b, n), bool)
        for i, p in enumerate(pools):
            self.items[i, : len(p)] = p.items
            self.rewards[i, : len(p)] = p.rewards
            self.valid[i, : len(p)] = True
        self.chosen = np.zeros((b, n), bool)
        self.history = np.full((b, init + budget), -1, np.int64)
        self.history_rewards = np.zeros((b, init + budget), np.int64)
        self.history_len = np.zeros(b, np.int64)
        self.picks_done = 0  # budgeted picks made so far (the same for every pool)
        self.hits = np.zeros(b, np.int64)
        self.curve: list[FloatArray] = []  # cumulative hits per pool after each step
        seeds = seeds if seeds is not None else [[0, i] for i in range(b)]
        if len(seeds) != b:
            raise ConfigError(f"{len(seeds)} seeds for {b} pools")
        self.rngs = [np.random.default_rng(list(s)) for s in seeds]
        if init:
            self._reveal(self.select(self.random(), init))
        self.hits_available = (self.rewards * (self.valid & ~self.chosen)).sum(1)

    @classmethod
    def from_history(
        cls, labels: Sequence[float], n_candidates: int, budget: int, seed: Sequence[int] = (0,)
    ) -> BatchEnv:
        """One pool whose first ``len(labels)`` positions were assayed with ``labels``.

        The other ``n_candidates`` positions are unlabelled candidates (their rewards are unknown
        and set to 0; pickers never read rewards). ``picks_done`` is the number assayed, capped
        at ``budget``, so ``t_frac`` and the remaining budget follow the campaign. Pool position
        i is row i of whatever the caller's pickers index (history rows first).
        """
        n_h = len(labels)
        if n_candidates < 1:
            raise ConfigError("no candidate to pick from")
        rewards = np.concatenate([(np.asarray(labels, float) > 0.5), np.zeros(n_candidates)])
        pool = Pool("propose", np.arange(n_h + n_candidates), rewards.astype(np.int64))
        env = cls([pool], max(1, budget), seeds=[list(seed)])
        env.history = np.full((1, n_h + env.budget), -1, np.int64)
        env.history_rewards = np.zeros((1, n_h + env.budget), np.int64)
        if n_h:
            env._reveal(np.arange(n_h)[None, :])
        env.picks_done = min(n_h, env.budget)
        env.hits_available = np.zeros(1, np.int64)
        return env

    @property
    def n_pools(self) -> int:
        """B."""
        return int(self.items.shape[0])

    @property
    def available(self) -> np.ndarray:
        """(B, N) candidates that may still be picked."""
        return self.valid & ~self.chosen

    @property
    def t_frac(self) -> float:
        """Fraction of the budget spent."""
        return self.picks_done / self.budget

    @property
    def done(self) -> bool:
        """Budget spent, or no pool has a candidate left."""
        return self.picks_done >= self.budget or not self.available.any()

    def step_size(self) -> int:
        """Picks in the next step: ``batch``, or what is left of the budget."""
        return min(self.batch, self.budget - self.picks_done)

    def random(self) -> np.ndarray:
        """(B, N) uniform draws from each pool's own stream (0 on padding)."""
        out = np.zeros(self.items.shape)
        for b, (rng, p) in enumerate(zip(self.rngs, self.pools, strict=True)):
            out[b, : len(p)] = rng.random(len(p))
        return out

    def select(self, scores: np.ndarray, k: int) -> np.ndarray:
        """(B, k) positions of the ``k`` best available candidates per pool (-1 where none left).

        Ties are broken at random from each pool's own stream.
        """
        scores = np.where(self.available, np.asarray(scores, np.float64), -np.inf)
        tie = self.random()
        order = np.lexsort((tie, -scores), axis=1)[:, :k]
        ok = np.take_along_axis(self.available, order, axis=1)
        return np.where(ok, order, -1)

    def _reveal(self, picks: np.ndarray) -> np.ndarray:
        """Mark ``picks`` (B, k) chosen and append them to the history; returns their rewards."""
        picks = np.asarray(picks, np.int64)
        if picks.ndim != 2 or picks.shape[0] != self.n_pools:
            raise ConfigError(f"picks must have shape (B={self.n_pools}, k), got {picks.shape}")
        rows = np.arange(self.n_pools)
        out = np.zeros(picks.shape, np.int64)
        for j in range(picks.shape[1]):
            p = picks[:, j]
            live = p >= 0
            if (p[live] >= self.items.shape[1]).any():
                raise ConfigError("a pick is outside the pool")
            bad = live & ~self.available[rows, np.where(live, p, 0)]
            if bad.any():
                raise ConfigError(
                    f"pool {int(np.flatnonzero(bad)[0])}: candidate picked twice or padding picked"
                )
            r = np.where(live, self.rewards[rows, np.where(live, p, 0)], 0)
            self.chosen[rows[live], p[live]] = True
            pos = self.history_len[live]
            self.history[rows[live], pos] = p[live]
            self.history_rewards[rows[live], pos] = r[live]
            self.history_len[live] += 1
            out[:, j] = r
        return out

    def step(self, picks: np.ndarray) -> np.ndarray:
        """Reveal ``picks`` (B, k ≤ step_size()); returns (B, k) rewards and counts hits."""
        if self.picks_done >= self.budget:
            raise ConfigError("the budget is spent")
        picks = np.asarray(picks, np.int64)
        if picks.ndim == 1:
            picks = picks[:, None]
        if picks.shape[1] > self.step_size():
            raise ConfigError(f"{picks.shape[1]} picks exceed the step size {self.step_size()}")
        rewards = self._reveal(picks)
        self.hits += rewards.sum(1)
        self.picks_done += picks.shape[1]
        self.curve.append(self.hits.astype(np.float32).copy())
        return rewards


class Picker(Protocol):
    """Scores the candidates of every pool in a ``BatchEnv``; higher is picked first."""

    name: str

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) scores; unavailable positions are ignored. Randomness: ``env.random()``."""
        ...


def next_picks(env: BatchEnv, picker: Picker, k: int) -> np.ndarray:
    """(B, k) positions ``picker`` picks next, all chosen before any of their labels is seen.

    A picker with its own ``select(env, k)`` (e.g. Thompson sampling: one draw per pick) uses
    it; any other takes the top ``k`` of one ``scores`` call. The simulator's batch rounds and
    ``propose --k`` both call this, so a plate is picked the same way in both.
    """
    select = getattr(picker, "select", None)
    if callable(select):
        return np.asarray(select(env, k), np.int64)
    return env.select(picker.scores(env), k)


def run_env(env: BatchEnv, picker: Picker) -> np.ndarray:
    """Step ``env`` to the end of its budget with ``picker``; returns the (B, steps) curve."""
    while not env.done:
        env.step(next_picks(env, picker, env.step_size()))
    return np.stack(env.curve, axis=1)


@dataclass(slots=True)
class SimulationResult:
    """Cumulative-hit curves of one picker over tasks × repeats."""

    policy: str
    budget: int
    batch: int
    init: int
    active_fraction: float
    repeats: int
    seed: int
    curves: np.ndarray  # (n_tasks, repeats, steps)
    hit_fraction: np.ndarray  # (n_tasks, repeats)
    task_ids: list[str]
    pool_sizes: np.ndarray  # (n_tasks, repeats)
    pool_hits: np.ndarray  # (n_tasks, repeats)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task_curves(self) -> np.ndarray:
        """(n_tasks, steps) curve of each task averaged over repeats."""
        return self.curves.mean(1)

    @property
    def mean_hits(self) -> float:
        """Mean over tasks of cumulative hits at the end of the budget."""
        return float(self.task_curves[:, -1].mean())

    @property
    def mean_hit_fraction(self) -> float:
        """Mean over tasks of hits / min(budget, hits available in the pool)."""
        return float(np.nanmean(self.hit_fraction.mean(1)))

    def curve_ci(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean curve, 95% half-width) over tasks, each task averaged over repeats first."""
        tc = self.task_curves
        half = (
            1.96 * tc.std(0, ddof=1) / math.sqrt(len(tc)) if len(tc) > 1 else np.zeros(tc.shape[1])
        )
        return tc.mean(0), half

    def to_json(self) -> dict[str, Any]:
        """The ``simulate`` command's JSON contract."""
        mean, half = self.curve_ci()
        final = self.task_curves[:, -1]
        ci = 1.96 * final.std(ddof=1) / math.sqrt(len(final)) if len(final) > 1 else 0.0
        return {
            "metric": "hits",
            "budget": self.budget,
            "batch": self.batch,
            "init": self.init,
            "active_fraction": self.active_fraction,
            "n_tasks": len(self.task_ids),
            "repeats": self.repeats,
            "seed": self.seed,
            "mean_hits": self.mean_hits,
            "mean_hits_ci95": float(ci),
            "mean_hit_fraction": self.mean_hit_fraction,
            "curve": [round(float(v), 4) for v in mean],
            "curve_ci95": [round(float(v), 4) for v in half],
            "picks_per_step": [
                min(self.batch, self.budget - i * self.batch) for i in range(len(mean))
            ],
            "median_pool_size": float(np.median(self.pool_sizes)),
            "median_pool_hits": float(np.median(self.pool_hits)),
            "per_task": {
                tid: {
                    "mean_hits": float(self.curves[i, :, -1].mean()),
                    "hits": [int(v) for v in self.curves[i, :, -1]],
                    "hit_fraction": float(self.hit_fraction[i].mean()),
                    "pool_size": int(self.pool_sizes[i, 0]),
                    "pool_hits": int(self.pool_hits[i, 0]),
                }
                for i, tid in enumerate(self.task_ids)
            },
            "policy": self.policy,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Policy ``a`` − policy ``b`` over the tasks both ran (``to_json`` dicts on the same pools).

    Mean per-task difference of mean hits with its 95% interval (normal approximation over
    tasks), the ratio of mean hits, and on how many tasks each was better.
    """
    ta, tb = a["per_task"], b["per_task"]
    common = sorted(set(ta) & set(tb))
    if not common:
        raise ValueError("the two results share no task")
    if any(len(ta[t]["hits"]) != len(tb[t]["hits"]) for t in common):
        raise ValueError("the two results used different repeats")
    d = np.array([ta[t]["mean_hits"] - tb[t]["mean_hits"] for t in common])
    ma = float(np.mean([ta[t]["mean_hits"] for t in common]))
    mb = float(np.mean([tb[t]["mean_hits"] for t in common]))
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return {
        "n_tasks": len(common),
        "mean_diff": float(d.mean()),
        "mean_diff_ci95": float(half),
        "ratio": ma / mb if mb > 0 else math.inf,
        "tasks_better": int((d > 0).sum()),
        "tasks_worse": int((d < 0).sum()),
    }


def simulate(
    picker: Picker,
    tasks: Sequence[Task],
    budget: int = 32,
    batch: int = 1,
    init: int = 0,
    active_fraction: float = 0.1,
    repeats: int = 5,
    seed: int = 0,
    chunk: int = 16,
    progress: bool = False,
) -> SimulationResult:
    """Run ``picker`` on every task ``repeats`` times (pools and ties drawn from ``seed``).

    Repeat ``r`` draws its pools from ``(seed, r)``, so every picker meets the same pools; each
    episode's random stream depends on (seed, r, task position) only, not on ``chunk``.
    """
    if not tasks:
        raise ConfigError("no task to simulate")
    start = time.perf_counter()
    n_steps = math.ceil(budget / batch)
    curves = np.zeros((len(tasks), repeats, n_steps), np.float32)
    frac = np.zeros((len(tasks), repeats), np.float64)
    sizes = np.zeros((len(tasks), repeats), np.int64)
    n_hits = np.zeros((len(tasks), repeats), np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks) * repeats, desc=f"simulate {picker.name}", unit="episode")
    for r in range(repeats):
        all_pools = make_pools(tasks, active_fraction, [seed, r])
        # Batch pools of similar size together: padding to the largest pool dominates the cost.
        order = np.argsort([len(p) for p in all_pools], kind="stable")
        for lo in range(0, len(tasks), chunk):
            idx = order[lo : lo + chunk]
            pools = [all_pools[i] for i in idx]
            seeds = [[seed, r, int(i), 1] for i in idx]
            env = BatchEnv(pools, budget, batch, init, seeds)
            curve = run_env(env, picker)
            if curve.shape[1] < n_steps:  # every pool ran out of candidates: hits stay flat
                curve = np.concatenate(
                    [curve, np.repeat(curve[:, -1:], n_steps - curve.shape[1], 1)], 1
                )
            curves[idx, r] = curve
            denom = np.minimum(budget, env.hits_available)
            frac[idx, r] = np.where(denom > 0, env.hits / np.maximum(denom, 1), np.nan)
            sizes[idx, r] = [len(p) for p in pools]
            n_hits[idx, r] = [p.n_hits for p in pools]
            if bar is not None:
                bar.update(len(pools))
    if bar is not None:
        bar.close()
    return SimulationResult(
        policy=picker.name,
        budget=budget,
        batch=batch,
        init=init,
        active_fraction=active_fraction,
        repeats=repeats,
        seed=seed,
        curves=curves,
        hit_fraction=frac,
        task_ids=[t.task_id for t in tasks],
        pool_sizes=sizes,
        pool_hits=n_hits,
        seconds=time.perf_counter() - start,
    )


class RandomPicker:
    """Uniformly random picks."""

    name = "random"

    def scores(self, env: BatchEnv) -> np.ndarray:
        """Random scores."""
        return env.random()
