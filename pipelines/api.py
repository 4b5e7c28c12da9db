"""A small Python API for notebooks and scripts: thin wrappers over ``metascreen.models``.

Each function forwards to the workflow or serving function of the same stage; the CLI
(``pipelines/cli/``) and the flows (``pipelines/flows.py``) call those functions directly, not
this module.

Example:
    >>> from metascreen.pipelines import api
    >>> tasks = api.load_tasks("data/fsmol-sample/valid")
    >>> results, label, n_invalid = api.evaluate("data/fsmol-sample/valid", model="knn")
    >>> results[16].mean
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metascreen.domains.episodes import TaskSet
from metascreen.domains.molecules.load import load_fsmol_dir, load_table_tasks
from metascreen.models.evaluation.molecules import EvalResult
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
from metascreen.models.serving.molecules import OnnxPredictor, ScoreReport, score_library

__all__ = [
    "DEFAULT_MODEL_DIR",
    "OnnxPredictor",
    "evaluate",
    "export",
    "load_table",
    "load_tasks",
    "score",
    "train",
]


def load_tasks(data_dir: str | Path, workers: int = 1) -> TaskSet:
    """FS-Mol-format task folder → ``TaskSet`` (canonical SMILES; invalid rows counted)."""
    return load_fsmol_dir(Path(data_dir), workers=workers)


def load_table(path: str | Path, **kwargs: Any) -> TaskSet:
    """CSV/Parquet/SDF/.smi with SMILES, optional assay column and label (or value + threshold)."""
    return load_table_tasks(Path(path), **kwargs)


def train(
    data_dir: str | Path, out_dir: str | Path, learner: str = "protonet", **train_options: Any
) -> Path:
    """Meta-train ``learner`` on ``data_dir`` (FS-Mol layout) and write an artifact."""
    from metascreen.models.workflows.molecules import train_model

    init_from = train_options.pop("init_from", None)
    return train_model(
        Path(data_dir), Path(out_dir), {"learner": learner}, train_options, init_from=init_from
    )


def evaluate(
    data_dir: str | Path,
    model: str | Path | None = None,
    support_sizes: tuple[int, ...] = (16,),
    repeats: int = 10,
    seed: int = 0,
) -> tuple[dict[int, EvalResult], str, int]:
    """FS-Mol protocol with an artifact (onnxruntime) or a baseline name (``rf``, ``knn``)."""
    from metascreen.models.workflows.molecules import evaluate_model

    return evaluate_model(Path(data_dir), model, support_sizes, repeats, seed, progress=False)


def export(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Re-export an artifact's weights to ONNX with a parity check."""
    from metascreen.models.workflows.molecules import export_model

    return export_model(Path(model_dir), Path(out_dir))


def score(
    model_dir: str | Path,
    support: str | Path,
    library: str | Path,
    output: str | Path,
    **kwargs: Any,
) -> ScoreReport:
    """Adapt to ``support`` and score ``library`` with onnxruntime (see ``serving.score_library``)."""
    return score_library(Path(model_dir), Path(support), Path(library), Path(output), **kwargs)
