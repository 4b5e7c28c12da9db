"""The screening simulator: pools, determinism, no repeated picks, reward accounting."""

from __future__ import annotations

import numpy as np
import pytest

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.models.screening.pickers import GPPicker, GreedyPicker, KnnPicker, tanimoto
from metascreen.models.screening.simulator import (
    BatchEnv,
    Pool,
    RandomPicker,
    make_pools,
    run_env,
    simulate,
    subsample_pool,
)

pytestmark = pytest.mark.unit


def _tasks(n_tasks: int = 5, seed: int = 0) -> list[Task]:
    rng = np.random.default_rng(seed)
    tasks, start = [], 0
    for i in range(n_tasks):
        n = int(rng.integers(30, 80))
        labels = (rng.random(n) < 0.45).astype(np.float32)
        labels[:2] = 1.0
        tasks.append(Task(f"T{i}", np.arange(start, start + n, dtype=np.int64), labels))
        start += n
    return tasks


def test_subsample_keeps_inactives_and_the_active_fraction() -> None:
    task = _tasks(1)[0]
    n_neg = int((task.labels == 0).sum())
    pool = subsample_pool(task, 0.1, np.random.default_rng(0))
    assert int((pool.rewards == 0).sum()) == n_neg
    assert pool.n_hits == max(2, round(n_neg / 9))
    assert set(pool.items.tolist()) <= set(task.item_idx.tolist())
    # labels travel with their items
    lookup = dict(zip(task.item_idx.tolist(), task.labels.tolist(), strict=True))
    assert all(
        lookup[i] == r for i, r in zip(pool.items.tolist(), pool.rewards.tolist(), strict=True)
    )
    full = subsample_pool(task, 1.0, np.random.default_rng(0))
    assert len(full) == len(task) and full.n_hits == task.n_positive
    with pytest.raises(ConfigError):
        subsample_pool(task, 0.0, np.random.default_rng(0))


def test_at_least_two_actives_are_kept() -> None:
    labels = np.array([1, 1, 1] + [0] * 5, np.float32)
    pool = subsample_pool(Task("t", np.arange(8), labels), 0.05, np.random.default_rng(1))
    assert pool.n_hits == 2


def test_reward_accounting_and_no_repeats() -> None:
    pools = [
        Pool("a", np.array([10, 11, 12, 13]), np.array([0, 1, 0, 1])),
        Pool("b", np.array([20, 21]), np.array([1, 0])),
    ]
    env = BatchEnv(pools, budget=3, batch=1)
    assert env.valid.tolist() == [[True] * 4, [True, True, False, False]]
    r = env.step(np.array([[1], [0]]))
    assert r.tolist() == [[1], [1]] and env.hits.tolist() == [1, 1]
    with pytest.raises(ConfigError, match="picked twice"):
        env.step(np.array([[1], [1]]))
    with pytest.raises(ConfigError, match="picked twice or padding"):
        env.step(np.array([[0], [3]]))  # padding position of pool b
    env.step(np.array([[3], [1]]))
    assert env.hits.tolist() == [2, 1]
    env.step(np.array([[0], [-1]]))  # pool b has nothing left
    assert env.done and env.hits.tolist() == [2, 1]
    assert env.history[0, :3].tolist() == [1, 3, 0]
    assert env.history_rewards[0, :3].tolist() == [1, 1, 0]
    assert np.stack(env.curve, 1).tolist() == [[1, 2, 2], [1, 1, 1]]
    with pytest.raises(ConfigError, match="budget"):
        env.step(np.array([[2], [-1]]))


def test_select_never_repeats_and_breaks_ties_at_random() -> None:
    pools = make_pools(_tasks(3), 1.0, 0)
    env = BatchEnv(pools, budget=20, batch=4)
    curve = run_env(env, RandomPicker())
    assert curve.shape == (3, 5)
    for b in range(3):
        picks = env.history[b, : env.history_len[b]]
        assert len(set(picks.tolist())) == len(picks) == 20
        assert env.hits[b] == env.rewards[b, picks].sum()
    # constant scores: picks differ between seeds (random ties), equal for the same seed
    runs = []
    for s in (1, 1, 2):
        e = BatchEnv(pools, budget=5, seeds=[[s, i] for i in range(3)])
        run_env(e, _Constant())
        runs.append(e.history.tolist())
    assert runs[0] == runs[1] != runs[2]


class _Constant:
    name = "constant"

    def scores(self, env: BatchEnv) -> np.ndarray:
        return np.zeros(env.items.shape)


class _Oracle:
    name = "oracle"

    def scores(self, env: BatchEnv) -> np.ndarray:
        return env.rewards.astype(float)


def test_init_picks_are_history_not_hits() -> None:
    pools = make_pools(_tasks(2), 1.0, 0)
    env = BatchEnv(pools, budget=4, init=3)
    assert env.history_len.tolist() == [3, 3] and env.hits.tolist() == [0, 0]
    assert env.picks_done == 0
    run_env(env, _Oracle())
    assert env.history_len.tolist() == [7, 7] and env.hits.tolist() == [4, 4]


def test_simulate_is_deterministic_and_bounded() -> None:
    tasks = _tasks(6)
    a = simulate(RandomPicker(), tasks, budget=10, active_fraction=0.2, repeats=3, seed=5, chunk=4)
    b = simulate(RandomPicker(), tasks, budget=10, active_fraction=0.2, repeats=3, seed=5)
    assert np.array_equal(a.curves, b.curves)
    c = simulate(RandomPicker(), tasks, budget=10, active_fraction=0.2, repeats=3, seed=6)
    assert not np.array_equal(a.curves, c.curves)
    oracle = simulate(_Oracle(), tasks, budget=10, active_fraction=0.2, repeats=3, seed=5)
    # the oracle finds min(budget, actives) hits: hit fraction exactly 1
    assert oracle.mean_hit_fraction == pytest.approx(1.0)
    assert np.array_equal(oracle.pool_hits, a.pool_hits)  # same pools for every picker
    assert oracle.mean_hits > a.mean_hits
    j = a.to_json()
    for key in (
        "metric",
        "budget",
        "batch",
        "active_fraction",
        "n_tasks",
        "mean_hits",
        "mean_hit_fraction",
        "curve",
        "per_task",
        "policy",
        "seconds",
    ):
        assert key in j
    assert j["n_tasks"] == 6 and len(j["curve"]) == 10
    assert j["curve"][-1] == pytest.approx(j["mean_hits"], abs=1e-3)
    assert all(x <= y for x, y in zip(j["curve"], j["curve"][1:], strict=False))


def test_batch_curve_has_one_point_per_step() -> None:
    res = simulate(_Oracle(), _tasks(3), budget=10, batch=4, active_fraction=1.0, repeats=1)
    assert res.curves.shape == (3, 1, 3)
    assert res.to_json()["picks_per_step"] == [4, 4, 2]


def test_baseline_pickers_beat_random_on_learnable_data() -> None:
    # items whose bit 0 is set are active; a few noise bits
    rng = np.random.default_rng(0)
    n = 400
    bits = rng.random((n, 32)) < 0.2
    y = rng.random(n) < 0.3
    bits[:, 0] = y
    bits[:, 1] = y
    tasks = [
        Task(f"T{i}", np.arange(i * 80, (i + 1) * 80), y[i * 80 : (i + 1) * 80].astype(np.float32))
        for i in range(5)
    ]
    kw = {"budget": 20, "active_fraction": 0.2, "repeats": 3, "seed": 0}
    rand = simulate(RandomPicker(), tasks, **kw).mean_hits
    feats = bits.astype(np.float32)

    def proto(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        pos, neg = sx[sy > 0.5].mean(0), sx[sy < 0.5].mean(0)
        return -((qx - pos) ** 2).sum(1) + ((qx - neg) ** 2).sum(1)

    for picker in (GreedyPicker(proto, feats), KnnPicker(bits), GPPicker(bits)):
        assert simulate(picker, tasks, **kw).mean_hits > rand + 1.0, picker.name


def test_tanimoto() -> None:
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0], [1, 1, 0, 0]], bool)
    assert tanimoto(a, b).tolist() == [[pytest.approx(1 / 3), 1.0], [0.0, 0.0]]


def test_paired_difference_over_common_tasks() -> None:
    from metascreen.models.screening.simulator import paired_difference

    def res(hits: dict[str, list[int]]) -> dict:
        return {
            "per_task": {t: {"hits": h, "mean_hits": float(np.mean(h))} for t, h in hits.items()}
        }

    a = res({"A": [4, 6], "B": [2, 2], "C": [3, 3]})
    b = res({"A": [2, 2], "B": [2, 2], "C": [4, 4], "D": [9, 9]})
    pr = paired_difference(a, b)
    assert pr["n_tasks"] == 3 and pr["tasks_better"] == 1 and pr["tasks_worse"] == 1
    assert abs(pr["mean_diff"] - (3 + 0 - 1) / 3) < 1e-12
    assert abs(pr["ratio"] - (5 + 2 + 3) / (2 + 2 + 4)) < 1e-12
    with pytest.raises(ValueError, match="repeats"):
        paired_difference(a, res({"A": [1, 1, 1]}))
