from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedShuffleSplit

from metascreen.domains.episodes import Task
from metascreen.domains.errors import TaskTooSmallError
from metascreen.domains.molecules.tasks import StratifiedSupportSampler, TrainingEpisodeSampler

pytestmark = pytest.mark.unit


def _task(n: int = 60, n_pos: int = 25, seed: int = 0) -> Task:
    labels = np.zeros(n, np.float32)
    labels[np.random.default_rng(seed).choice(n, n_pos, replace=False)] = 1.0
    return Task("T1", np.arange(100, 100 + n, dtype=np.int64), labels)


def test_same_seed_same_episode_and_different_seed_differs() -> None:
    task, sampler = _task(), StratifiedSupportSampler(16)
    a, b, c = sampler.sample(task, 3), sampler.sample(task, 3), sampler.sample(task, 4)
    np.testing.assert_array_equal(a.support, b.support)
    np.testing.assert_array_equal(a.query, b.query)
    assert not np.array_equal(np.sort(a.support), np.sort(c.support))


def test_support_is_stratified_and_query_is_the_rest() -> None:
    task = _task(n=100, n_pos=30)
    for seed in range(20):
        ep = StratifiedSupportSampler(16).sample(task, seed)
        assert len(ep.support) == 16
        assert sorted(np.concatenate([ep.support, ep.query]).tolist()) == list(range(100))
        # 30% actives → round(16 * 0.3) = 5 (sklearn allocates by class frequency)
        assert int(ep.support_labels.sum()) in (4, 5)
        assert 0 < ep.query_labels.sum() < len(ep.query)


def test_matches_fsmol_sklearn_split() -> None:
    """Same split as FS-Mol: negatives then positives in input order, StratifiedShuffleSplit(seed)."""
    task = _task(n=50, n_pos=20, seed=7)
    ep = StratifiedSupportSampler(16).sample(task, 11)
    neg, pos = np.flatnonzero(task.labels < 0.5), np.flatnonzero(task.labels > 0.5)
    order = np.concatenate([neg, pos])
    y = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
    sup, qry = next(
        StratifiedShuffleSplit(n_splits=1, train_size=16, test_size=34, random_state=11).split(
            np.zeros(50), y
        )
    )
    np.testing.assert_array_equal(ep.support, order[sup])
    np.testing.assert_array_equal(ep.query, order[qry])


@pytest.mark.parametrize(("n", "n_pos", "support"), [(17, 8, 16), (40, 1, 16), (40, 39, 16)])
def test_impossible_draws_raise(n: int, n_pos: int, support: int) -> None:
    with pytest.raises(TaskTooSmallError):
        StratifiedSupportSampler(support).sample(_task(n=n, n_pos=n_pos), 0)


def test_training_sampler_deterministic_and_disjoint() -> None:
    task = _task()
    a = TrainingEpisodeSampler(16, 32).sample(task, 5)
    b = TrainingEpisodeSampler(16, 32).sample(task, 5)
    np.testing.assert_array_equal(a.support, b.support)
    assert not set(a.support.tolist()) & set(a.query.tolist())
    assert 0 < a.support_labels.sum() < 16
