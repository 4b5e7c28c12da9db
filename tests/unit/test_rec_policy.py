"""The recommendation policy's domain parts: item embedding, catalogue pools, policy histories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from metascreen.domains.recommendation.tasks import user_tasks
from metascreen.models.features.ratings import PolicyItems, fit_policy_items
from metascreen.models.nn.policy import PolicyConfig, ScreeningPolicy
from metascreen.models.training.policy import PolicyTrainConfig, train_policy
from metascreen.models.workflows.movielens_policy import RecPolicyConfig, catalogue_sampler

pytestmark = pytest.mark.unit


def _ratings(n_users: int = 40, n_items: int = 60, seed: int = 0) -> pd.DataFrame:
    # two taste groups, each rating (and mostly liking) its own half of the catalogue
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        half = np.arange(n_items // 2) + (n_items // 2) * (u % 2)
        for i in rng.choice(half, size=int(rng.integers(13, 25)), replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.choice([3, 4, 5], p=[0.2, 0.4, 0.4]))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


def test_item_embedding_blocks_round_trip_and_similarity() -> None:
    ratings = _ratings()
    items = [f"i{i}" for i in range(60)]
    cfg = RecPolicyConfig(liked_dim=4, rated_dim=2)
    pi = fit_policy_items(ratings, items, np.zeros((60, 3), np.float32), cfg)
    assert pi.emb.shape == (60, 4 + 2 + 6 + 3) and pi.blocks["liked_svd"] == 4
    back = PolicyItems.from_bytes(pi.to_bytes())
    assert back.item_ids == items and back.blocks == pi.blocks
    np.testing.assert_array_equal(back.emb, pi.emb)
    al = back.aligned(["i3", "nope", "i0"])
    np.testing.assert_array_equal(al[0], pi.emb[3])
    assert not al[1].any()
    # items liked by the same users are closer in the liked-SVD block than items of the other group
    v = pi.emb[:, :4] / np.linalg.norm(pi.emb[:, :4], axis=1, keepdims=True)
    sim = v @ v.T
    assert sim[:30, :30].mean() > sim[:30, 30:].mean() + 0.3


def test_catalogue_pools_and_policy_sampled_histories_are_seeded(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ratings = _ratings()
    items = [f"i{i}" for i in range(60)]
    tasks = user_tasks(ratings, items)
    assert len(tasks) == 40 and all(len(t) == 60 for t in tasks)
    pi = fit_policy_items(
        ratings, items, np.zeros((60, 0), np.float32), RecPolicyConfig(liked_dim=4)
    )
    cfg = PolicyTrainConfig(
        warm_steps=8,
        rl_steps=0,
        pools_per_step=4,
        budget=6,
        max_pool=24,
        warm_history="policy",
        warmup_steps=0,
        eval_every=4,
        valid_fractions=(1.0,),
        valid_repeats=1,
        device="cpu",
    )
    pools = catalogue_sampler(tasks, cfg, np.random.default_rng(0))
    assert len(pools) == 4 and all(len(p) == 24 and p.n_hits >= 1 for p in pools)

    def run(d: Path) -> tuple[ScreeningPolicy, float]:
        torch.manual_seed(0)
        pol = ScreeningPolicy(pi.emb.shape[1], PolicyConfig(d_model=16, heads=2, layers=1))
        res = train_policy(
            pol, pi.emb, tasks[:30], pi.emb, tasks[30:], cfg, d, False, catalogue_sampler
        )
        return pol, res.best_score

    a, sa = run(tmp_path / "a")
    b, sb = run(tmp_path / "b")
    assert sa == sb and np.isfinite(sa)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
