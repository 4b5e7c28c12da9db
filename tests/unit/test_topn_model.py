"""The top-N recommender: its closed-form item-item backbone, the model, loss, ONNX graph."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError, TaskTooSmallError
from metascreen.models.features.itemitem import (
    UserItemMatrices,
    fit_item_item,
    log_popularity,
    user_item_matrices,
)
from metascreen.models.learners.topn import TopNRecommender, catalogue_softmax_loss
from metascreen.models.workflows.topn_training import (
    ColdUser,
    TopNEpisodeSampler,
    cold_users,
    ndcg_at,
)

pytestmark = pytest.mark.unit


def _ratings() -> pd.DataFrame:
    rows = [
        ("a", "1", 5), ("a", "2", 4), ("a", "3", 1),
        ("b", "1", 4), ("b", "3", 5), ("b", "4", 2),
        ("c", "2", 5), ("c", "4", 4), ("c", "9", 3),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]).astype(
        {"rating": np.float32}
    )


def test_user_item_matrices_mark_rated_and_liked_in_catalogue_order() -> None:
    m = user_item_matrices(_ratings(), ["1", "2", "3", "4"])  # item 9 is not in the catalogue
    assert m.user_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(m.rated.toarray(), [[1, 1, 1, 0], [1, 0, 1, 1], [0, 1, 0, 1]])
    np.testing.assert_array_equal(m.liked.toarray(), [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]])
    assert m.rows({"c", "zz"}).user_ids == ["c"]
    np.testing.assert_allclose(log_popularity(m), np.log1p([2, 2, 1, 1]))


def test_item_item_is_the_expected_episode_least_squares_fit() -> None:
    """With each rating kept with probability 1 − p, the exact expectation over every dropout
    mask of ‖Y − (X∘M)B‖² is minimised by fit_item_item's matrix (λ = 0) times 1/(1 − p)."""
    x = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], float)
    y = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1]], float)
    p = 0.4
    nz = list(zip(*np.nonzero(x), strict=True))
    gram, cross = np.zeros((3, 3)), np.zeros((3, 3))
    for keep in itertools.product([0, 1], repeat=len(nz)):
        prob = np.prod([(1 - p) if k else p for k in keep])
        xm = np.zeros_like(x)
        for (i, j), k in zip(nz, keep, strict=True):
            xm[i, j] = k
        gram += prob * xm.T @ xm
        cross += prob * xm.T @ y
    want = np.linalg.solve(gram, cross)
    m = UserItemMatrices(["u"] * 4, sp.csr_matrix(x), sp.csr_matrix(y))
    got = fit_item_item(m, lam=0.0, dropout=p) / (1 - p)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_item_item_refuses_bad_settings() -> None:
    m = user_item_matrices(_ratings(), ["1", "2"])
    with pytest.raises(ConfigError):
        fit_item_item(m, lam=1.0, dropout=1.0)
    with pytest.raises(ConfigError):
        fit_item_item(m, lam=-1.0, dropout=0.5)


def _model(n: int = 12, seed: int = 0) -> TopNRecommender:
    gen = torch.Generator().manual_seed(seed)
    return TopNRecommender(torch.randn(n, n, generator=gen), torch.rand(n, generator=gen), dim=4)


def test_model_starts_as_the_item_item_backbone_and_ignores_padding() -> None:
    model = _model().eval()
    items = torch.tensor([[3, 5, 0, 0], [1, 2, 3, 4]])
    ratings = torch.tensor([[5.0, 1.0, 1.0, 1.0], [4.0, 4.0, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    with torch.no_grad():
        out = model(items, ratings, mask)
        alone = model(items[:1, :2], ratings[:1, :2], mask[:1, :2])
    want = 20.0 * (model.item_item[3] + model.item_item[5])
    torch.testing.assert_close(out[0], want, atol=1e-3, rtol=0)  # item terms start near zero
    torch.testing.assert_close(out[0], alone[0])
    torch.testing.assert_close(
        out[1], 20.0 * model.item_item[[1, 2, 3, 4]].sum(0), atol=1e-3, rtol=0
    )


def test_catalogue_softmax_loss_excludes_the_support_and_averages_targets() -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0, 0.5]])
    targets = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    excluded = torch.tensor([[0.0, 0.0, 1.0, 0.0]])  # item 2 is in the support
    logp = torch.log_softmax(torch.tensor([1.0, 2.0, 0.5]), 0)
    want = -(logp[1] + logp[2]) / 2
    torch.testing.assert_close(catalogue_softmax_loss(scores, targets, excluded), want)
    none = catalogue_softmax_loss(scores, torch.zeros_like(targets), excluded)
    assert float(none) == 0.0


def test_cold_users_follow_the_protocol_and_ndcg_never_ranks_the_support() -> None:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", str(i), float(rng.integers(1, 6))) for u in range(4) for i in range(25)]
    rows += [("short", str(i), 5.0) for i in range(12)]  # fewer than support + 10 ratings
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    items = [str(i) for i in range(25)]
    m = user_item_matrices(df, items)
    users = cold_users(m, df, items, support_n=10, seed=3)
    assert [u.user_id for u in users] == ["u0", "u1", "u2", "u3"]
    again = cold_users(m, df, items, support_n=10, seed=3)
    assert all(np.array_equal(a.support, b.support) for a, b in zip(users, again, strict=True))
    u = users[0]
    assert len(u.support) == 10 and not set(u.support) & set(u.relevant)
    scores = np.zeros((1, 25))
    scores[0, u.support] = 100.0  # the support scores highest but must not be shown
    scores[0, u.relevant] = 1.0
    assert ndcg_at(scores, [u])[0] == pytest.approx(1.0)
    perfect_miss = ColdUser("x", np.array([0]), np.array([5.0]), np.array([1]))
    s2 = np.zeros((1, 25))
    s2[0, 1] = -1.0  # the one relevant item is ranked last
    assert ndcg_at(s2, [perfect_miss], k=10)[0] == 0.0


def test_selection_falls_back_to_fewer_given_ratings_on_small_data() -> None:
    from metascreen.models.workflows.topn_training import selection_users

    rows = [(f"u{u}", str(i), 5.0) for u in range(3) for i in range(16)]  # 16 ratings each
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    items = [str(i) for i in range(16)]
    users, n = selection_users(user_item_matrices(df, items), df, items, seed=0)
    assert n == 5 and len(users) == 3 and all(len(u.support) == 5 for u in users)
    few = df.groupby("user_id").head(8)
    with pytest.raises(ConfigError, match="--no-topn"):
        selection_users(user_item_matrices(few, items), few, items, seed=0)


def test_episode_sampler_leaves_items_to_find() -> None:
    task = Task("u", np.arange(12, dtype=np.int64), np.full(12, 4.0, np.float32))
    sampler = TopNEpisodeSampler(3, 30)
    for seed in range(20):
        ep = sampler.sample(task, seed)
        assert 3 <= len(ep.support) <= 7 and len(ep.support) + len(ep.query) == 12
    with pytest.raises(TaskTooSmallError):
        sampler.sample(Task("v", np.arange(6, dtype=np.int64), np.ones(6, np.float32)), 0)


def test_onnx_graph_matches_torch_at_new_shapes(tmp_path: Path) -> None:
    from metascreen.models.serving.topn import TopNScorer
    from metascreen.models.training.export import export_topn_onnx

    model = _model(n=30)
    with torch.no_grad():
        model.bias.copy_(torch.linspace(-1, 1, 30))
        model.pop.fill_(0.3)
    path = tmp_path / "topn.onnx"
    assert export_topn_onnx(model, path) <= 1e-4
    from metascreen.domains.io import sha256_file

    meta = {"files": {"topn.onnx": sha256_file(path)}, "topn": {"n_items": 30}}
    scorer = TopNScorer(tmp_path, meta, device="cpu")
    supports = [np.array([1, 7, 9]), np.array([4]), np.arange(11)]
    ratings = [np.array([5.0, 2.0, 4.0]), np.array([3.0]), np.full(11, 4.0)]
    got = scorer.scores(supports, ratings, batch=2)
    for n, (s, r) in enumerate(zip(supports, ratings, strict=True)):
        with torch.no_grad():
            want = model(
                torch.as_tensor(s)[None],
                torch.as_tensor(r, dtype=torch.float32)[None],
                torch.ones(1, len(s)),
            )[0].numpy()
        np.testing.assert_allclose(got[n], want, atol=1e-4)
