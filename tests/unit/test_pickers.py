"""Baseline pickers: greedy cold starts, ENS lookahead, Thompson draws, plates, the factory."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.domains.molecules.load import slice_task_files
from metascreen.models.screening.factory import MOLECULE_PICKERS, picker_option
from metascreen.models.screening.pickers import (
    EnsPicker,
    GreedyPicker,
    ThompsonPicker,
    ens_scores,
)
from metascreen.models.screening.simulator import (
    BatchEnv,
    Pool,
    RandomPicker,
    next_picks,
    simulate,
)

pytestmark = pytest.mark.unit


def _proto(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
    """Prototype predictor; with inactives only, distance from their prototype."""
    neg = ((qx - sx[sy < 0.5].mean(0)) ** 2).sum(1) if (sy < 0.5).any() else 0.0
    pos = ((qx - sx[sy > 0.5].mean(0)) ** 2).sum(1) if (sy > 0.5).any() else 0.0
    return np.asarray(neg - pos, np.float64)


def _clustered(n_tasks: int = 6, n: int = 60, seed: int = 0) -> tuple[list[Task], np.ndarray]:
    """Actives share bits 0..7, inactives bits 8..15 (plus noise): far-from-inactives finds them."""
    rng = np.random.default_rng(seed)
    y = rng.random(n_tasks * n) < 0.3
    bits = rng.random((n_tasks * n, 32)) < 0.1
    bits[y, :8] |= rng.random((int(y.sum()), 8)) < 0.8
    bits[~y, 8:16] |= rng.random((int((~y).sum()), 8)) < 0.8
    tasks = [
        Task(f"T{i}", np.arange(i * n, (i + 1) * n), y[i * n : (i + 1) * n].astype(np.float32))
        for i in range(n_tasks)
    ]
    return tasks, bits


def _env_with_history(labels: list[int], n_cand: int = 6) -> BatchEnv:
    return BatchEnv.from_history(labels, n_cand, budget=10, seed=(3,))


def test_far_cold_start_picks_away_from_the_inactives() -> None:
    # history: two inactives at the origin; candidates at increasing distance
    feats = np.zeros((8, 2), np.float32)
    feats[2:, 0] = np.arange(6)  # candidate 2+i sits at distance i
    env = _env_with_history([0, 0])
    g = GreedyPicker(_proto, feats, cold_start="far")
    assert int(next_picks(env, g, 1)[0, 0]) == 7
    one = GreedyPicker(_proto, feats, cold_start="oneclass")
    assert int(next_picks(env, one, 1)[0, 0]) == 7
    # the old behaviour ignores the inactives: its picks follow the random stream only
    picks = {
        int(
            next_picks(
                BatchEnv.from_history([0, 0], 6, 10, (s,)),
                GreedyPicker(_proto, feats, cold_start="random"),
                1,
            )[0, 0]
        )
        for s in range(20)
    }
    assert len(picks) > 1
    with pytest.raises(ConfigError):
        GreedyPicker(_proto, feats, cold_start="nope")  # type: ignore[arg-type]


def test_prior_cold_start_ranks_by_the_prior_until_the_first_active() -> None:
    feats = np.zeros((8, 2), np.float32)
    feats[2:, 0] = np.arange(6)  # "far" would pick 7
    prior = np.array([0, 0, 0, 0, 5, 0, 0, 1], np.float64)  # the prior prefers candidate 4
    g = GreedyPicker(_proto, feats, cold_start="prior", prior=prior)
    assert int(next_picks(_env_with_history([0, 0]), g, 1)[0, 0]) == 4
    # nothing assayed yet: the first pick is the prior's best too (random would vary with seed)
    first = {int(next_picks(BatchEnv.from_history([], 8, 10, (s,)), g, 1)[0, 0]) for s in range(5)}
    assert first == {4}
    # once an active (row 1, at x = 3) and an inactive are known, the predictor ranks: the
    # prototype logit grows with x, so candidate 7, not the prior's 4
    feats[1, 0] = 3.0
    g = GreedyPicker(_proto, feats, cold_start="prior", prior=prior)
    assert int(next_picks(_env_with_history([0, 1]), g, 1)[0, 0]) == 7
    # ... unless the prior is weighted into the logits afterwards: logit(x) = 6x - 9, so a
    # weight of 10 on the prior's 5 lifts candidate 4 (x = 2: 3 + 50) over 7 (x = 5: 21 + 10)
    g = GreedyPicker(_proto, feats, cold_start="prior", prior=prior, prior_weight=10.0)
    assert int(next_picks(_env_with_history([0, 1]), g, 1)[0, 0]) == 4
    with pytest.raises(ConfigError, match="prior_file"):
        GreedyPicker(_proto, feats, cold_start="prior")


def test_far_cold_start_beats_random_start_before_the_first_hit() -> None:
    tasks, bits = _clustered()
    feats = bits.astype(np.float32)
    kw = {"budget": 8, "active_fraction": 0.1, "repeats": 3, "seed": 0}
    far = simulate(GreedyPicker(_proto, feats, cold_start="far", bits=bits), tasks, **kw)
    rnd = simulate(GreedyPicker(_proto, feats, cold_start="random"), tasks, **kw)
    assert far.mean_hits > rnd.mean_hits


def test_ens_scores_lookahead() -> None:
    p = np.array([0.5, 0.45, 0.1, 0.1, 0.1])
    w = np.zeros((5, 5))
    w[1, 2:] = w[2:, 1] = 1.0  # candidate 1 is similar to the three others
    assert np.allclose(ens_scores(p, w, k=0, m=5), p)  # no future: greedy
    s = ens_scores(p, w, k=3, m=5)
    # observing candidate 1 can lift its neighbours; candidate 0 teaches nothing
    assert s[1] > s[0]
    # by hand for candidate 0: its outcome changes nothing, future = best 3 of the others
    assert s[0] == pytest.approx(0.5 + 0.45 + 0.1 + 0.1)
    # only the top m get the lookahead; the others stay below them in order of p
    s2 = ens_scores(p, w, k=3, m=2)
    assert s2[2:].max() < s2[:2].min() and s2[0] == pytest.approx(s[0])


def test_ens_and_thompson_find_actives_and_are_seeded() -> None:
    tasks, bits = _clustered()
    feats = bits.astype(np.float32)
    kw = {"budget": 12, "active_fraction": 0.2, "repeats": 2, "seed": 0}
    rand = simulate(RandomPicker(), tasks, **kw).mean_hits
    for make in (
        lambda: EnsPicker(GreedyPicker(_proto, feats, bits=bits), bits, m=8),
        lambda: ThompsonPicker(GreedyPicker(_proto, feats, bits=bits), bits),
    ):
        a, b = simulate(make(), tasks, **kw), simulate(make(), tasks, **kw)
        assert a.mean_hits > rand + 1.0, a.policy
        np.testing.assert_array_equal(a.curves, b.curves)


def test_thompson_draws_center_on_the_predictor_and_shrink_near_the_history() -> None:
    bits = np.zeros((4, 16), bool)
    bits[0, :8] = bits[1, :8] = True  # candidate 1 duplicates assayed compound 0
    bits[2, 8:12] = True
    bits[3, 12:] = True
    logits = np.array([0.0, 0.0, 0.0])  # p = 0.5 everywhere

    class Fixed(GreedyPicker):
        def pool_scores(self, env, b, cand):  # type: ignore[no-untyped-def]
            return logits[: cand.size].copy(), True

    env = BatchEnv.from_history([0], 3, budget=10, seed=(1,))
    t = ThompsonPicker(Fixed(_proto, bits.astype(np.float32)), bits, noise=1e-3)
    draws = t._draws(env, 0, np.array([1, 2, 3]), 4000)
    assert np.allclose(draws.mean(0), 0.5, atol=0.03)
    assert draws[:, 0].std() < 0.05 < 0.4 < draws[:, 1].std()  # prior sd = sqrt(0.25) = 0.5
    picks = t.select(env, 3)[0]
    assert sorted(picks.tolist()) == [1, 2, 3]  # a plate never repeats a compound


def test_plate_is_one_round_of_the_simulator() -> None:
    """``next_picks`` on a history env = the simulator's batch round, for every picker kind."""
    tasks, bits = _clustered(1, 40)
    feats = bits.astype(np.float32)
    for make in (
        lambda: GreedyPicker(_proto, feats, bits=bits),
        lambda: ThompsonPicker(GreedyPicker(_proto, feats, bits=bits), bits),
    ):
        pool = Pool("T0", tasks[0].item_idx, tasks[0].labels.astype(np.int64))
        env = BatchEnv([pool], budget=16, batch=8, seeds=[[5]])
        env.step(next_picks(env, RandomPicker(), 8))  # first plate, labels now known
        hist = env.history[0, : env.history_len[0]]
        plate = next_picks(env, make(), 8)[0]
        # the same state rebuilt as ``propose`` sees it: history rows first, then candidates
        rest = np.flatnonzero(env.available[0])
        order = np.concatenate([hist, rest])
        env2 = BatchEnv.from_history(env.rewards[0, hist].tolist(), rest.size, budget=16, seed=(5,))
        env2.items[0] = pool.items[order]
        env2.rngs = [np.random.default_rng([5])]
        env.rngs = [np.random.default_rng([5])]
        plate = next_picks(env, make(), 8)[0]
        plate2 = next_picks(env2, make(), 8)[0]
        assert order[plate2].tolist() == plate.tolist()
        assert env2.t_frac == env.t_frac == 0.5


def test_from_history_env() -> None:
    env = BatchEnv.from_history([1, 0, 0], 5, budget=4)
    assert env.available[0].tolist() == [False] * 3 + [True] * 5
    assert env.history_rewards[0, :3].tolist() == [1, 0, 0]
    assert env.picks_done == 3 and env.t_frac == 0.75
    full = BatchEnv.from_history([0] * 9, 2, budget=4)
    assert full.t_frac == 1.0
    with pytest.raises(ConfigError):
        BatchEnv.from_history([0], 0, budget=4)


def test_factory_builds_every_molecule_baseline() -> None:
    tasks, bits = _clustered(2, 30)
    ctx = SimpleNamespace(
        x=bits.astype(np.float32),
        bits=bits,
        predictor=SimpleNamespace(logits=_proto),
        options={"ens_m": "4"},
        prior=bits[:, :8].sum(1).astype(np.float64),  # greedy-prior's cold start
    )
    for name, spec in MOLECULE_PICKERS.items():
        if spec.needs == "policy":
            continue
        picker = spec.build(ctx)
        res = simulate(picker, tasks, budget=4, repeats=1, active_fraction=0.2)
        assert res.curves.shape == (2, 1, 4), name
    assert picker_option(ctx, "ens_m") == 4
    with pytest.raises(ConfigError):
        picker_option(SimpleNamespace(options={"nope": 1}), "nope")
    assert {"greedy", "greedy-random-start", "ens", "thompson", "knn", "gp", "random"} <= set(
        MOLECULE_PICKERS
    )


def test_train_slice_is_seeded_and_nested() -> None:
    files = [Path(f"CHEMBL{i}.jsonl.gz") for i in range(200)]
    a = slice_task_files(files, 0.1, seed=0)
    assert a == slice_task_files(list(reversed(files)), 0.1, seed=0) and len(a) == 20
    assert set(slice_task_files(files, 0.05, seed=0)) <= set(a)
    assert a != slice_task_files(files, 0.1, seed=1)
    assert len(slice_task_files(files, 0.001, seed=0)) == 1
    with pytest.raises(ConfigError):
        slice_task_files(files, 0.0, seed=0)


def test_activity_prior_file_is_checked_naming_the_file(tmp_path: Path) -> None:
    from metascreen.domains.errors import ArtifactMismatchError, InputError
    from metascreen.models.serving.policy import ActivityPrior

    meta = {"onnx": {"sha256": "a" * 64}}
    path = tmp_path / "prior.json"
    with pytest.raises(InputError, match="prior.json: prior file not found"):
        ActivityPrior.load(path, meta)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ArtifactMismatchError, match="prior.json: not a prior file"):
        ActivityPrior.load(path, meta)
    path.write_text('{"weights": [1.0, 2.0], "bias": 0.5}', encoding="utf-8")
    with pytest.raises(ArtifactMismatchError, match="predictor_onnx_sha256"):
        ActivityPrior.load(path, meta)
    doc = {"weights": [1.0, 2.0], "bias": 0.5, "predictor_onnx_sha256": "b" * 64}
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ArtifactMismatchError, match="not on this one"):
        ActivityPrior.load(path, meta)
    doc["predictor_onnx_sha256"] = "a" * 64
    path.write_text(json.dumps(doc), encoding="utf-8")
    prior = ActivityPrior.load(path, meta)
    np.testing.assert_allclose(prior.scores(np.array([[1.0, 1.0]])), [3.5])
