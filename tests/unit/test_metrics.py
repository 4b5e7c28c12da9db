from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from metascreen.domains.episodes import Task
from metascreen.models.evaluation.metrics import delta_auprc
from metascreen.models.evaluation.molecules import evaluate_tasks

pytestmark = pytest.mark.unit


def test_delta_auprc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + y
    assert delta_auprc(y, s) == pytest.approx(average_precision_score(y, s) - y.mean())


def test_delta_auprc_perfect_and_undefined() -> None:
    y = np.array([0, 0, 1, 1, 0])
    assert delta_auprc(y, y.astype(float)) == pytest.approx(1 - 0.4)
    assert math.isnan(delta_auprc(np.ones(4), np.arange(4)))


def test_evaluate_protocol_means_over_repeats_then_tasks() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    tasks = [
        Task(
            f"T{i}",
            np.arange(i * 50, i * 50 + 50),
            (x[i * 50 : i * 50 + 50, 0] > 0).astype(np.float32),
        )
        for i in range(4)
    ]

    def oracle(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        return qx[:, 0]

    res = evaluate_tasks(tasks, x, oracle, support_size=16, repeats=3, seed=0)
    assert res.n_tasks == 4 and res.n_draws == 12
    expected = []
    for t in tasks:
        q_frac = []
        for r in range(3):
            from metascreen.domains.molecules.tasks import StratifiedSupportSampler

            ep = StratifiedSupportSampler(16).sample(t, r)
            q_frac.append(1 - ep.query_labels.mean())
        expected.append(np.mean(q_frac))
    assert res.mean == pytest.approx(np.mean(expected))  # perfect ranking: AP = 1
