"""metascreen: few-shot, meta-learned screening and recommendation.

Subpackages: ``metascreen.domains`` (data loading, featurizing, task and episode sampling;
numpy only), ``metascreen.models`` (learners, training loop, ONNX export and onnxruntime
serving), ``metascreen.pipelines`` (Prefect flows, the typer CLI and the Python API in
``metascreen.pipelines.api``).

The in-memory API is available from here: ``metascreen.FewShotClassifier``,
``metascreen.propose``, ``metascreen.Recommender`` and ``metascreen.prepare_tasks``. They resolve on first access (module
``__getattr__``), so ``import metascreen`` loads neither torch nor prefect, nor the API itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("FewShotClassifier", "Recommender", "prepare_tasks", "propose")
__all__ = ["FewShotClassifier", "Recommender", "__version__", "prepare_tasks", "propose"]

if TYPE_CHECKING:
    from metascreen.pipelines.api import FewShotClassifier, Recommender, prepare_tasks, propose


def __getattr__(name: str) -> Any:
    """Import the API object ``name`` from ``metascreen.pipelines.api`` when first asked for."""
    if name in _API:
        from metascreen.pipelines import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metascreen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
