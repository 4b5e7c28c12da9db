"""The retrain flow: train a challenger and promote it only if it beats the current model.

``retrain_flow`` trains a challenger, registers it, evaluates it next to the registry's current
model on the same validation episodes and promotes it only when it wins by the margin
(``metascreen.models.registry.gate``). ``deploy/prefect.yaml`` schedules it nightly.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from prefect import flow, task

from metascreen.domains.errors import ConfigError
from metascreen.models.registry import gate
from metascreen.models.registry.store import DEFAULT_NAME, REGISTRY_ENV, ModelRegistry
from metascreen.models.serving.artifact import utc_now
from metascreen.models.workflows import molecules as workflows
from metascreen.models.workflows.common import DEFAULT_CACHE_DIR
from metascreen.pipelines.logs import run_logger
from metascreen.pipelines.results import publish_outputs, publish_summary

logger = logging.getLogger(__name__)


@task(name="train-challenger")
def train_challenger_task(
    data_dir: str,
    out_dir: str,
    learner: dict[str, Any],
    train: dict[str, Any],
    valid_dir: str | None,
    cache_dir: str | None,
    run_dir: str,
    eval_support_sizes: list[int],
    eval_repeats: int,
) -> str:
    """Meta-train the challenger into a staging folder; returns the artifact folder."""
    return str(
        workflows.train_model(
            Path(data_dir),
            Path(out_dir),
            learner,
            train,
            valid_dir=Path(valid_dir) if valid_dir else None,
            cache_dir=Path(cache_dir) if cache_dir else None,
            run_dir=Path(run_dir),
            eval_support_sizes=tuple(eval_support_sizes),
            eval_repeats=eval_repeats,
            progress=False,
            command="metascreen retrain flow",
        )
    )


@task(name="gate")
def gate_task(
    registry: str, name: str, challenger_dir: str, cfg: dict[str, Any], note: str | None = None
) -> dict[str, Any]:
    """Register the challenger, compare it with the champion, promote it if it wins."""
    decision = gate.gate_challenger(
        ModelRegistry(registry), Path(challenger_dir), gate.GateConfig(**cfg), name, note
    )
    return decision.to_json()


def _registry_root(registry: str | None) -> str:
    root = registry or os.environ.get(REGISTRY_ENV)
    if not root:
        raise ConfigError(f"no model registry: pass registry=... or set {REGISTRY_ENV}")
    return str(root)


@flow(name="retrain")
def retrain_flow(
    data_dir: str,
    registry: str | None = None,
    name: str = DEFAULT_NAME,
    learner: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    valid_dir: str | None = None,
    margin: float = gate.DEFAULT_MARGIN,
    support_sizes: list[int] | None = None,
    repeats: int = 10,
    seed: int = 0,
    cache_dir: str | None = str(DEFAULT_CACHE_DIR),
) -> dict[str, Any]:
    """Train a challenger and promote it only if it beats the current model by ``margin``.

    Args:
        data_dir: FS-Mol-format folder with ``train/`` (and ``valid/`` unless ``valid_dir``).
        registry: registry folder (default ``$METASCREEN_REGISTRY``).
        name: registered model name.
        learner: learner config (``metascreen.models.learners.registry.LearnerConfig`` fields).
        train: training config (``metascreen.models.training.loop.TrainConfig`` fields).
        valid_dir: validation tasks for early stopping and the gate (default ``data_dir/valid``).
        margin: ΔAUPRC the challenger must gain over the champion to be promoted.
        support_sizes: gate support sizes (default [16]); the gate score is their mean ΔAUPRC.
        repeats: draws per task in the gate (seeds ``seed + r``, the same for both models).
        seed: base seed of the gate's draws.
        cache_dir: feature cache shared by training and the gate.
    """
    root = _registry_root(registry)
    _, resolved_valid = workflows.resolve_splits(
        Path(data_dir), Path(valid_dir) if valid_dir else None
    )
    if resolved_valid is None:
        raise ConfigError(f"{data_dir}: no valid/ folder; pass valid_dir for the gate")
    sizes = list(support_sizes or [16])
    stamp = utc_now().replace(":", "").replace("-", "")
    base = ModelRegistry(root).model_dir(name)
    staging = base / ".staging" / stamp
    challenger = train_challenger_task(
        data_dir,
        str(staging),
        learner or {},
        train or {},
        str(resolved_valid),
        cache_dir,
        str(base / ".runs" / stamp),
        sizes,
        repeats,
    )
    cfg = {
        "valid_dir": str(resolved_valid),
        "support_sizes": tuple(sizes),
        "repeats": repeats,
        "seed": seed,
        "margin": margin,
        "cache_dir": cache_dir,
    }
    decision = gate_task(root, name, challenger, cfg, note=f"retrain flow {stamp}")
    shutil.rmtree(staging, ignore_errors=True)  # the registry holds its own verified copy
    champ = decision["champion_score"]
    run_logger(logger).info(
        "retrain %s: challenger %s ΔAUPRC %.4f, champion %s %s, margin %.4f -> %s: %s",
        name,
        decision["challenger"],
        decision["challenger_score"],
        decision["champion"],
        f"{champ:.4f}" if champ is not None else "n/a",
        margin,
        "promoted" if decision["promote"] else "kept champion",
        decision["reason"],
    )
    reg = ModelRegistry(root)
    current = reg.current_version(name)
    publish_summary(
        "retrain",
        {
            "data": str(Path(data_dir).resolve()),
            "challenger": decision["challenger"],
            "challenger_score": decision["challenger_score"],
            "champion": decision["champion"],
            "champion_score": champ,
            "margin": margin,
            "promoted": decision["promote"],
            "reason": decision["reason"],
            "model": name,
            "version": current or "",
        },
    )
    publish_outputs(
        "retrain",
        {
            "registry": Path(root).resolve(),
            "current": reg.model_dir(name) / current if current else None,
            "decisions": reg.model_dir(name) / "decisions.jsonl",
        },
    )
    return decision
