"""The top-N protocol (models/evaluation/topn.py) and its reference rankers (topn_refs.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metascreen.domains.errors import ConfigError
from metascreen.models.evaluation.topn import (
    RatedUser,
    draw_support,
    evaluate_topn,
    popularity_rank,
    top_items,
    user_metrics,
)
from metascreen.models.evaluation.topn_refs import (
    REFERENCES,
    ease_weights,
    item_counts,
    knn_weights,
    rated_users,
    reference_fns,
)
from topn_data import clustered_ratings

pytestmark = pytest.mark.unit


def test_popularity_rank_shares_ties() -> None:
    ranks = popularity_rank(np.array([5, 3, 3, 10, 0, 1, 1, 1]))
    np.testing.assert_allclose(ranks, [2, 3.5, 3.5, 1, 8, 6, 6, 6])


def test_user_metrics_by_hand() -> None:
    pop = popularity_rank(np.array([5, 3, 3, 10, 0, 1, 1, 1]))
    m = user_metrics(np.array([3, 1, 4, 0, 2]), np.array([1, 2, 7]), (2, 5), pop)
    l2, l6 = 1 / math.log2(3), 1 / math.log2(6)
    assert m["recall@2"] == pytest.approx(1 / 3)  # RecBole: hits / all relevant
    assert m["ndcg@2"] == pytest.approx(l2 / (1 + l2))  # ideal: min(3, 2) hits on top
    assert m["hit@2"] == 1.0 and m["mrr@2"] == 0.5
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((l2 + l6) / (1 + l2 + 0.5))
    assert m["mrr@5"] == 0.5 and m["hit@5"] == 1.0
    assert m["poprank@2"] == pytest.approx((1 + 3.5) / 2)
    assert m["poprank@5"] == pytest.approx((1 + 3.5 + 8 + 2 + 3.5) / 5)
    miss = user_metrics(np.array([0, 3]), np.array([1]), (2,), pop)
    assert miss["recall@2"] == miss["ndcg@2"] == miss["hit@2"] == miss["mrr@2"] == 0.0


def test_top_items_masks_support_nan_last_and_ties_by_position() -> None:
    s = np.array([1.0, 5.0, np.nan, 5.0, 2.0, 9.0])
    assert top_items(s, np.array([5]), 6).tolist() == [1, 3, 4, 0, 2]
    assert top_items(np.zeros(4), np.array([0, 2]), 3).tolist() == [1, 3]


def _users(n: int = 3) -> list[RatedUser]:
    out = []
    for u in range(n):
        pos = np.arange(u, u + 16, dtype=np.int64)
        out.append(RatedUser(f"u{u}", pos, np.where(pos % 2 == 0, 5.0, 2.0).astype(np.float32)))
    return out


def test_evaluate_never_ranks_support_and_counts_skips() -> None:
    users = _users(1)
    seen: list[np.ndarray] = []

    def support_first(uid: str, s: np.ndarray, sy: np.ndarray) -> np.ndarray:
        seen.append(s)
        out = np.zeros(30)
        out[s] = 1e9  # a model that loves what the user gave: the evaluator masks it
        return out

    res = evaluate_topn(users, 30, support_first, np.ones(30), support_n=5, ks=(10,))
    assert not res.shown[10][seen[0]].any() and res.shown[10].sum() == 10
    assert res.coverage[10] == pytest.approx(10 / 30)
    short = [RatedUser("s", np.arange(12), np.full(12, 5.0, np.float32))]
    dull = [RatedUser("d", np.arange(20), np.full(20, 3.0, np.float32))]
    r2 = evaluate_topn(short + dull + users, 30, support_first, np.ones(30), 5, (10,))
    assert (r2.n_too_few_ratings, r2.n_no_relevant, r2.user_ids) == (1, 1, ["u0"])
    with pytest.raises(ValueError, match="shape"):
        evaluate_topn(users, 30, lambda u, s, sy: np.zeros(3), np.ones(30), 5)
    with pytest.raises(ConfigError):
        evaluate_topn(users, 30, support_first, np.ones(30), 0)


def test_support_draw_is_seeded_per_user() -> None:
    u = _users(1)[0]
    a, b = draw_support(u, 5, 0), draw_support(u, 5, 0)
    assert a[0].tolist() == b[0].tolist() and len(a[0]) == 5 and len(a[1]) == 11
    assert draw_support(u, 5, 1)[0].tolist() != a[0].tolist()
    assert sorted(np.concatenate(a).tolist()) == list(range(16))
    rng = np.random.default_rng(3)
    fn = lambda uid, s, sy: rng.random(30)  # noqa: E731 - scores differ call to call
    r1 = evaluate_topn(_users(), 30, lambda uid, s, sy: np.arange(30.0), np.ones(30), 5)
    r2 = evaluate_topn(_users(), 30, lambda uid, s, sy: np.arange(30.0), np.ones(30), 5)
    assert r1.to_json() == r2.to_json()
    assert evaluate_topn(_users(), 30, fn, np.ones(30), 5).user_ids == r1.user_ids


def test_ease_and_knn_closed_forms() -> None:
    g = np.array([[3.0, 2.0, 0.0], [2.0, 4.0, 1.0], [0.0, 1.0, 2.0]])
    b = ease_weights(g, 1.0)
    assert np.allclose(np.diag(b), 0)
    p = np.linalg.inv(g + np.eye(3))
    assert b[0, 1] == pytest.approx(-p[0, 1] / p[1, 1], rel=1e-5)
    from metascreen.models.evaluation.topn_refs import rated_row_sum_fn, row_sum_fn

    s, sy = np.array([0, 2]), np.array([5.0, 1.0], np.float32)
    np.testing.assert_allclose(row_sum_fn(b)("u", s, sy), b[0] + b[2], rtol=1e-6)
    np.testing.assert_allclose(rated_row_sum_fn(b)("u", s, sy), 5 * b[0] + b[2], rtol=1e-6)
    w = knn_weights(g, 1, 0.0)
    assert w[1, 0] == pytest.approx(2 / math.sqrt(12), rel=1e-5) and (w != 0).sum(axis=0).max() == 1


def test_ials_fold_in_is_the_least_squares_solution() -> None:
    from metascreen.models.evaluation.topn_refs import binary_matrix, ials_fit, ials_fn

    df = clustered_ratings(n_users=30)
    items = sorted(df["item_id"].unique(), key=int)
    model = ials_fit(binary_matrix(df, items), 8, 3.0, 5.0, seed=0)
    y = np.asarray(model.item_factors, np.float64)
    s = np.array([1, 4, 9], dtype=np.int64)
    a = y.T @ y + 3.0 * np.eye(8) + 4.0 * y[s].T @ y[s]
    expected = y @ np.linalg.solve(a, 5.0 * y[s].sum(axis=0))
    np.testing.assert_allclose(ials_fn(model, len(items))("u", s, s * 0.0), expected, atol=1e-4)


@pytest.fixture(scope="module")
def split() -> tuple[object, list[RatedUser], list[str], np.ndarray]:
    df = clustered_ratings()
    items = sorted(df["item_id"].unique(), key=int)
    test_ids = {str(u) for u in range(1, 91, 6)}
    train = df[~df["user_id"].isin(test_ids)]
    users = rated_users(df[df["user_id"].isin(test_ids)], items)
    return train, users, items, item_counts(train, items)


@pytest.mark.parametrize("name", REFERENCES)
def test_references_beat_random_and_are_deterministic(
    split: tuple, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metascreen.models.evaluation import topn_refs

    # grids for 60 items (the defaults are placed for ML-1M's 3.9k); an iALS fit costs ~0.5 s
    monkeypatch.setattr(topn_refs, "IALS_GRID", ((16, 1.0, 10.0), (16, 10.0, 10.0)))
    monkeypatch.setattr(topn_refs, "KNN_GRID", ((50, 0.0), (0, 0.0)))
    train, users, items, pop = split
    fns, info = reference_fns(name, train, items, (5,), seed=0)
    res = evaluate_topn(users, len(items), fns[5], pop, 5, (10,))
    rng = np.random.default_rng(0)
    rnd = evaluate_topn(users, len(items), lambda u, s, sy: rng.random(len(items)), pop, 5, (10,))
    margin = 0.03 if name == "popular" else 0.2  # the fixture's popularity skew is mild
    assert res.means()["ndcg@10"] > rnd.means()["ndcg@10"] + margin, name
    again = evaluate_topn(users, len(items), reference_fns(name, train, items, (5,))[0][5], pop, 5)
    assert np.allclose(again.per_user["ndcg@10"], res.per_user["ndcg@10"])
    if name in ("ease", "itemknn", "ials"):
        assert (
            set(info["chosen"]) == {"5"} and info["grid"] and info["tuned_on"]["n_users"]["5"] > 0
        )


def test_ease_grid_extends_at_its_ends() -> None:
    from metascreen.models.evaluation.topn_refs import _extend_ease

    assert _extend_ease([500.0, 1000.0], 1) == 2000.0
    assert _extend_ease([500.0, 1000.0], 0) == 250.0
    assert _extend_ease([500.0, 1000.0, 2000.0], 1) is None
    assert _extend_ease([1.0, 2.0, 4.0], 0) is None
    with pytest.raises(ConfigError, match="unknown reference"):
        reference_fns("nope", None, [], (5,))  # type: ignore[arg-type]


def test_tuning_extends_the_grid_while_an_end_wins(
    split: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from metascreen.models.evaluation import topn_refs

    peak = {5: 16.0, 10: 0.5}  # n = 5 peaks above the grid, n = 10 below it

    def fake_eval(users: list, n_items: int, fn: object, pop: object, n: int, *a: object) -> object:
        lam = fn.lam  # type: ignore[attr-defined]
        score = -abs(math.log2(lam) - math.log2(peak[n]))
        return SimpleNamespace(per_user={"ndcg@10": np.array([score])}, user_ids=["u"])

    def make(state: object, lam: float) -> object:
        fn = SimpleNamespace(lam=lam)
        return fn

    monkeypatch.setattr(topn_refs, "evaluate_topn", fake_eval)
    train, _, items, _ = split
    fns, info = topn_refs.tune_and_fit(
        lambda df, it: None, make, (2.0, 4.0), train, items, (5, 10), extend=topn_refs._extend_ease
    )
    # one point at a time, each support size's end in turn, until neither best is at an end
    # (λ is never halved below 1)
    assert [g["params"] for g in info["grid"]] == [2.0, 4.0, 1.0, 8.0, 16.0, 32.0]
    assert info["chosen"] == {"5": 16.0, "10": 1.0} and fns[5].lam == 16.0  # type: ignore[attr-defined]
