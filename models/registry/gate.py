"""Champion/challenger gate: promote a new model only if it beats the current one by a margin.

Both models are evaluated by ``workflows.evaluate_model`` (the ``evaluate`` command's code path:
onnxruntime on the registered ONNX graphs) on the same validation tasks, support sizes, repeats
and seeds, so they see exactly the same episodes. The score is the mean ΔAUPRC over the support
sizes. Every decision, with both figures, goes to the log and to the registry's
``decisions.jsonl``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metascreen.domains.errors import ConfigError
from metascreen.domains.molecules.load import find_task_files
from metascreen.models.registry.store import DEFAULT_NAME, ModelRegistry
from metascreen.models.serving.artifact import read_artifact

logger = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.005
"""ΔAUPRC the challenger must gain; about the standard error of the mean on FS-Mol's 39 valid tasks."""


@dataclass(frozen=True, slots=True)
class GateConfig:
    """How champion and challenger are compared."""

    valid_dir: str
    support_sizes: tuple[int, ...] = (16,)
    repeats: int = 10
    seed: int = 0
    margin: float = DEFAULT_MARGIN
    cache_dir: str | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        """Validate the settings."""
        if not self.support_sizes or min(self.support_sizes) < 2:
            raise ConfigError(f"gate support sizes {self.support_sizes}: need sizes >= 2")
        if self.repeats < 1:
            raise ConfigError(f"gate repeats {self.repeats}: need >= 1")


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The outcome of one comparison (what ``decisions.jsonl`` records)."""

    promote: bool
    reason: str
    challenger: str
    challenger_score: float
    champion: str | None
    champion_score: float | None
    margin: float
    per_size: dict[str, dict[str, float | None]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def score_model(model_dir: Path, cfg: GateConfig) -> dict[int, float]:
    """Mean ΔAUPRC over tasks for each support size (FS-Mol protocol, seeds ``seed + r``)."""
    from metascreen.models.workflows.molecules import evaluate_model

    results, _, _ = evaluate_model(
        Path(cfg.valid_dir),
        Path(model_dir),
        tuple(cfg.support_sizes),
        cfg.repeats,
        cfg.seed,
        Path(cfg.cache_dir) if cfg.cache_dir else None,
        cfg.workers,
        progress=False,
    )
    return {n: r.mean for n, r in results.items()}


def decide(
    challenger: str,
    challenger_scores: dict[int, float],
    champion: str | None,
    champion_scores: dict[int, float] | None,
    margin: float,
) -> tuple[bool, str, float, float | None]:
    """(promote?, reason, challenger score, champion score); NaN never wins."""
    ch = float(np.mean(list(challenger_scores.values())))
    if not np.isfinite(ch):
        return False, "challenger has no valid ΔAUPRC (NaN)", ch, None
    if champion is None or champion_scores is None:
        return True, "no champion yet: the first model is promoted", ch, None
    cp = float(np.mean(list(champion_scores.values())))
    gain = ch - cp
    if not np.isfinite(cp) or gain > margin:
        return True, f"challenger wins by {gain:+.4f} (> margin {margin})", ch, cp
    return False, f"challenger gain {gain:+.4f} does not exceed margin {margin}", ch, cp


def gate_challenger(
    registry: ModelRegistry,
    challenger_dir: Path,
    cfg: GateConfig,
    name: str = DEFAULT_NAME,
    note: str | None = None,
) -> GateDecision:
    """Register ``challenger_dir``, evaluate it next to the current version, promote if it wins.

    The challenger is always registered (so every decision points at an immutable artifact);
    ``current`` moves only when the challenger's mean ΔAUPRC exceeds the champion's by more than
    ``cfg.margin``.
    """
    read_artifact(Path(challenger_dir))  # refuse a wrong or damaged challenger before any work
    find_task_files(Path(cfg.valid_dir))
    champion = registry.current_version(name)
    champion_scores = None
    if champion is not None:
        champion_scores = score_model(registry.resolve(name, champion), cfg)
    mv = registry.register(challenger_dir, name, note=note)
    challenger_scores = score_model(registry.resolve(name, mv.version), cfg)
    promote, reason, ch, cp = decide(
        mv.version, challenger_scores, champion, champion_scores, cfg.margin
    )
    per_size = {
        str(n): {
            "challenger": challenger_scores[n],
            "champion": champion_scores[n] if champion_scores else None,
        }
        for n in cfg.support_sizes
    }
    decision = GateDecision(
        promote=promote,
        reason=reason,
        challenger=mv.version,
        challenger_score=ch,
        champion=champion,
        champion_score=cp,
        margin=cfg.margin,
        per_size=per_size,
        config=asdict(cfg),
    )
    logger.info(
        "gate %s: challenger %s ΔAUPRC %.4f vs champion %s %s -> %s (%s)",
        name,
        mv.version,
        ch,
        champion,
        f"{cp:.4f}" if cp is not None else "n/a",
        "PROMOTE" if promote else "KEEP CHAMPION",
        reason,
    )
    record = {"action": "gate", **decision.to_json()}
    with registry.locked(name):  # compare-and-swap: the champion must still be current
        now = registry.current_version(name)
        if now != champion:
            raise ConfigError(
                f"{name}: current changed from {champion} to {now} while the gate ran; "
                "rerun the gate against the new champion"
            )
        if promote:
            registry.set_current_unlocked(name, mv.version, record)
        else:
            registry.log_decision(name, {**record, "from": champion, "to": champion})
    return decision
