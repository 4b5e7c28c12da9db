"""FS-Mol evaluation protocol, independent of the model: tasks × repeats, ΔAUPRC.

Repeat ``r`` of a task draws its support set with seed ``seed + r`` (FS-Mol's sampler); a draw
that cannot give both classes in support and query is skipped and counted; the task's figure is
the mean over its valid repeats, and the headline is the mean over tasks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from metascreen.domains.episodes import Episode, Task
from metascreen.domains.errors import SamplingError
from metascreen.domains.molecules.tasks import StratifiedSupportSampler
from metascreen.domains.types import FloatArray
from metascreen.models.evaluation.metrics import delta_auprc

logger = logging.getLogger(__name__)

PredictFn = Callable[[FloatArray, FloatArray, FloatArray], np.ndarray]
"""(support_x (S, D), support_y (S,), query_x (Q, D)) → (Q,) scores, higher = more active."""
EmbedFn = Callable[[FloatArray], FloatArray]
"""(n, D) features → (n, E) task-independent embeddings, computed once per task when given."""
PredictDrawsFn = Callable[[FloatArray, list[Episode]], list[np.ndarray]]
"""(a task's rows (n, D), its draws) → one (Q,) score array per draw: every draw in one call."""


@dataclass(slots=True)
class EvalResult:
    """One support size's evaluation over a set of tasks."""

    support_size: int
    n_tasks: int
    mean: float
    std: float
    per_task: dict[str, float]
    repeats: int
    seed: int
    n_draws: int
    n_skipped_draws: int
    tasks_without_draws: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self, model: str, n_invalid: int = 0) -> dict[str, Any]:
        """The evaluation contract's JSON object (plus protocol details)."""
        d = asdict(self)
        return {
            "metric": "delta_auprc",
            "support_size": self.support_size,
            "n_tasks": self.n_tasks,
            "mean": self.mean,
            "std": self.std,
            "per_task": self.per_task,
            "model": model,
            "seconds": round(self.seconds, 3),
            "repeats": self.repeats,
            "seed": self.seed,
            "n_draws": self.n_draws,
            "n_skipped_draws": self.n_skipped_draws,
            "tasks_without_draws": d["tasks_without_draws"],
            "n_invalid_smiles_excluded": n_invalid,
        }


def evaluate_tasks(
    tasks: Sequence[Task],
    features: FloatArray,
    predict: PredictFn,
    support_size: int = 16,
    repeats: int = 10,
    seed: int = 0,
    progress: bool = False,
    embed: EmbedFn | None = None,
    predict_draws: PredictDrawsFn | None = None,
) -> EvalResult:
    """Run the FS-Mol protocol with ``predict`` on every task (features indexed by item row).

    With ``embed``, each task's rows are embedded once and ``predict`` receives embeddings: the
    same result for learners whose encoder does not adapt, at a fraction of the cost. With
    ``predict_draws``, a task's draws are scored in one call (e.g. a batched head) instead of
    ``predict`` per draw.
    """
    start = time.perf_counter()
    sampler = StratifiedSupportSampler(support_size)
    per_task: dict[str, float] = {}
    no_draws: list[str] = []
    n_draws = n_skipped = 0
    iterator: Any = tasks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(tasks, desc=f"evaluate n={support_size}", unit="task")
    for task in iterator:
        x_task = features[task.item_idx]
        if embed is not None:
            x_task = embed(x_task)
        draws = []
        for r in range(repeats):
            try:
                draws.append(sampler.sample(task, seed + r))
            except SamplingError:
                n_skipped += 1
        n_draws += len(draws)
        if predict_draws is not None and draws:
            all_scores = predict_draws(x_task, draws)
        else:
            all_scores = [
                predict(x_task[ep.support], ep.support_labels, x_task[ep.query]) for ep in draws
            ]
        values = [
            delta_auprc(ep.query_labels, sc) for ep, sc in zip(draws, all_scores, strict=True)
        ]
        if values:
            per_task[task.task_id] = float(np.mean(values))
        else:
            no_draws.append(task.task_id)
    if n_skipped:
        logger.info(
            "support %d: skipped %d of %d draws (a fold would lack a class)",
            support_size,
            n_skipped,
            n_skipped + n_draws,
        )
    if no_draws:
        logger.warning(
            "support %d: %d tasks had no valid draw and are excluded: %s",
            support_size,
            len(no_draws),
            no_draws[:10],
        )
    vals = np.array(list(per_task.values()), dtype=np.float64)
    return EvalResult(
        support_size=support_size,
        n_tasks=len(per_task),
        mean=float(vals.mean()) if vals.size else math.nan,
        std=float(vals.std()) if vals.size else math.nan,
        per_task=per_task,
        repeats=repeats,
        seed=seed,
        n_draws=n_draws,
        n_skipped_draws=n_skipped,
        tasks_without_draws=no_draws,
        seconds=time.perf_counter() - start,
    )
