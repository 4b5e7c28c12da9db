"""Few-shot classification metrics (numpy + scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score


def delta_auprc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """FS-Mol's ΔAUPRC: average precision of ``scores`` minus the fraction of actives.

    NaN (not 0.0) when the labels hold a single class, where AUPRC is undefined.
    """
    y = np.asarray(labels) > 0.5
    if y.all() or not y.any():
        return math.nan
    return float(average_precision_score(y, np.asarray(scores, dtype=np.float64)) - y.mean())
