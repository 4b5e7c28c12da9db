"""The top-N recommender's ONNX graph, run with onnxruntime (no torch).

Inputs ``support_items`` (B, S) int64 catalogue positions, ``support_ratings`` (B, S) float32
and ``support_mask`` (B, S) float32 (0 on padding); output ``scores`` (B, n_items). Positions
are rows of the artifact's item table (``items.npz``), so the graph and the rating predictor
share one catalogue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metascreen.domains.errors import ArtifactMismatchError
from metascreen.models.serving.session import open_session

TOPN_ONNX_FILE = "topn.onnx"
TOPN_WEIGHTS_FILE = "topn_weights.pt.gz"
TOPN_INPUTS = ("support_items", "support_ratings", "support_mask")
TOPN_OUTPUTS = ("scores",)
OBJECTIVES = ("topn", "rating")
"""``topn``: rank by the top-N model ("will watch and like"); ``rating``: by predicted rating."""


def has_topn(metadata: dict[str, Any]) -> bool:
    """Whether a movielens artifact carries a top-N model."""
    return TOPN_ONNX_FILE in metadata.get("files", {}) and "topn" in metadata


def pad_supports(
    supports: list[np.ndarray], ratings: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items int64, ratings float32, mask float32), each (B, max S), zero-padded."""
    width = max([1, *(len(s) for s in supports)])
    idx = np.zeros((len(supports), width), np.int64)
    r = np.ones((len(supports), width), np.float32)
    mask = np.zeros((len(supports), width), np.float32)
    for b, (s, y) in enumerate(zip(supports, ratings, strict=True)):
        idx[b, : len(s)], r[b, : len(s)], mask[b, : len(s)] = s, y, 1.0
    return idx, r, mask


class TopNScorer:
    """The artifact's top-N graph (sha256-checked on open)."""

    def __init__(self, model_dir: Path, metadata: dict[str, Any], device: str = "auto") -> None:
        """Open ``model_dir``'s ``topn.onnx``; refuse an artifact without one."""
        if not has_topn(metadata):
            raise ArtifactMismatchError(
                f"{model_dir}: no top-N model in this artifact (trained before top-N existed, "
                "or with --topn-steps -1); retrain it, or rank by --objective rating"
            )
        self.n_items = int(metadata["topn"]["n_items"])
        self.session = open_session(
            Path(model_dir) / TOPN_ONNX_FILE,
            metadata["files"][TOPN_ONNX_FILE],
            device,
            what="top-N graph",
        )

    def scores(
        self, supports: list[np.ndarray], ratings: list[np.ndarray], batch: int = 256
    ) -> np.ndarray:
        """(U, n_items) scores of users given their support positions and ratings."""
        out = []
        for lo in range(0, len(supports), batch):
            idx, r, mask = pad_supports(supports[lo : lo + batch], ratings[lo : lo + batch])
            feeds = dict(zip(TOPN_INPUTS, (idx, r, mask), strict=True))
            out.append(self.session.run(None, feeds)[0])
        return np.concatenate(out) if out else np.zeros((0, self.n_items), np.float32)
