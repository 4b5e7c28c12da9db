"""The demo: prepare → meta-train → evaluate → score on the bundled FS-Mol sample → report.

``run_demo`` takes its stages as an object: ``LocalStages`` calls the functions directly, the
Prefect ``demo_flow`` (``pipelines/flows.py``) passes stages that run each step as a task. No
prefect import.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from metascreen.domains.io import atomic_write_json, atomic_write_text
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
from metascreen.models.workflows import molecules as workflows
from metascreen.pipelines.domain import evaluate_json, prepare_stats, score_json
from metascreen.pipelines.report import plot_evaluation, render_demo_markdown

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_DIR = DATA_DIR / "fsmol-sample"
LIBRARY = DATA_DIR / "library" / "library.csv"
SUPPORT = DATA_DIR / "library" / "support.csv"


# loggers whose warnings repeat when several stages read the same data (prepare, then train)
_REPEATING_LOGGERS = ("metascreen.domains.molecules.load", "metascreen.domains.recommendation.load")


class _OnceFilter(logging.Filter):
    """Pass each distinct (logger, level, message) once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextlib.contextmanager
def warn_once(names: tuple[str, ...] = _REPEATING_LOGGERS) -> Iterator[None]:
    """Within the block, each distinct message of the data loaders is logged once."""
    once = _OnceFilter()
    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addFilter(once)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(once)


class Stages(Protocol):
    """The demo's steps; the Prefect flow runs each as a task, tests call functions directly."""

    def prepare(self, data_dir: str) -> dict[str, Any]: ...  # noqa: D102
    def train(
        self,
        data_dir: str,
        out_dir: str,
        learner: dict[str, Any],
        train: dict[str, Any],
        **kwargs: Any,
    ) -> str: ...  # noqa: D102
    def evaluate(
        self, data_dir: str, model: str, support_sizes: list[int], repeats: int, seed: int
    ) -> dict[str, Any]: ...  # noqa: D102
    def score(self, model_dir: str, support: str, library: str, output: str) -> dict[str, Any]: ...  # noqa: D102
    def publish(self, markdown: str) -> None: ...  # noqa: D102


class LocalStages:
    """Demo stages as plain function calls (no Prefect)."""

    def prepare(self, data_dir: str) -> dict[str, Any]:  # noqa: D102
        return prepare_stats(data_dir)

    def train(
        self,
        data_dir: str,
        out_dir: str,
        learner: dict[str, Any],
        train: dict[str, Any],
        **kwargs: Any,
    ) -> str:  # noqa: D102
        return str(workflows.train_model(Path(data_dir), Path(out_dir), learner, train, **kwargs))

    def evaluate(
        self, data_dir: str, model: str, support_sizes: list[int], repeats: int, seed: int
    ) -> dict[str, Any]:  # noqa: D102
        return evaluate_json(data_dir, model, support_sizes, repeats, seed)

    def score(self, model_dir: str, support: str, library: str, output: str) -> dict[str, Any]:  # noqa: D102
        return score_json(model_dir, support, library, output)

    def publish(self, markdown: str) -> None:  # noqa: D102
        return None


def run_demo(
    out_dir: Path,
    steps: int = 300,
    repeats: int = 5,
    workers: int = 2,
    stages: Stages | None = None,
    data_dir: Path = SAMPLE_DIR,
) -> Path:
    """Prepare → meta-train → evaluate (vs. rf/knn and the shipped model) → score a library → report.

    The stages read the same sample more than once; its data warnings are logged once.
    """
    with warn_once():
        return _run_demo(out_dir, steps, repeats, workers, stages or LocalStages(), data_dir)


def _run_demo(
    out_dir: Path, steps: int, repeats: int, workers: int, stages: Stages, data_dir: Path
) -> Path:
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"data": str(data_dir)}
    summary["prepare"] = {s: stages.prepare(str(data_dir / s)) for s in ("train", "valid")}
    model_dir = out_dir / "model"
    summary["model"] = stages.train(
        str(data_dir),
        str(model_dir),
        {"learner": "protonet"},
        {
            "steps": steps,
            "eval_every": max(50, steps // 4),
            "checkpoint_every": max(50, steps // 4),
            "seed": 0,
        },
        eval_support_sizes=(16,),
        eval_repeats=repeats,
        run_dir=out_dir / "run",
        cache_dir=None,
        workers=workers,
        progress=False,
        command=f"metascreen demo (steps={steps})",
    )
    models = {"demo-protonet": str(model_dir), "rf": "rf", "knn": "knn"}
    if (DEFAULT_MODEL_DIR / "metadata.json").exists():
        models = {"shipped-default": str(DEFAULT_MODEL_DIR), **models}
    evals = {
        name: stages.evaluate(str(data_dir / "valid"), m, [16], repeats, 0)
        for name, m in models.items()
    }
    summary["evaluation"] = {
        k: {n: {kk: vv for kk, vv in v.items() if kk != "per_task"} for n, v in r.items()}
        for k, r in evals.items()
    }
    plot_evaluation(
        evals,
        out_dir / "evaluation.png",
        f"FS-Mol sample valid ({next(iter(evals.values()))['16']['n_tasks']} tasks)",
    )
    scorer = str(DEFAULT_MODEL_DIR) if "shipped-default" in models else str(model_dir)
    summary["scoring"] = stages.score(
        scorer, str(SUPPORT), str(LIBRARY), str(out_dir / "scores.parquet")
    )
    summary["seconds"] = round(time.perf_counter() - start, 1)
    md = render_demo_markdown(summary, evals)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_json(out_dir / "report.json", summary)
    stages.publish(md)
    logger.info("demo report in %s (%.0fs)", out_dir, summary["seconds"])
    return out_dir
