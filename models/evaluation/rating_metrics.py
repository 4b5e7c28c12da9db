"""Rating-prediction metrics of MeLU's protocol: MAE and nDCG@k with the true rating as gain."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def ndcg_at_k(true: npt.ArrayLike, pred: npt.ArrayLike, k: int) -> float:
    """nDCG@k of the items ranked by ``pred`` (ties kept in input order), gain = true rating.

    ``DCG@k = Σ_{r=1..k} rating_r / log2(r + 1)``, divided by the DCG of the ideal order.
    """
    t = np.asarray(true, dtype=np.float64)
    order = np.argsort(-np.asarray(pred, dtype=np.float64), kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.sort(t)[::-1][:k]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return float((t[order] * disc[: len(order)]).sum() / idcg) if idcg > 0 else float("nan")


def mae(true: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(true, np.float64) - np.asarray(pred, np.float64))))
