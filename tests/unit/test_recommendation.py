from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ArtifactMismatchError, InputError, SchemaError
from metascreen.domains.recommendation.featurize import ItemFeaturizer
from metascreen.domains.recommendation.load import load_interactions, load_table
from metascreen.domains.recommendation.tasks import (
    MeluSampler,
    RatingEpisodeSampler,
    build_user_tasks,
    holdout_users,
)
from metascreen.models.evaluation.rating_metrics import mae, ndcg_at_k
from metascreen.models.features.mf import fit_mf
from rec_data import write_ml1m

pytestmark = pytest.mark.unit


def test_ml1m_loader_quarantines_bad_rows_and_reconciles(tmp_path: Path) -> None:
    counts = write_ml1m(tmp_path / "ml")
    inter = load_interactions(tmp_path / "ml")
    assert inter.fmt == "ml-1m"
    assert inter.n_input == counts["n_good"] + counts["n_bad"]
    assert len(inter.ratings) + inter.n_rejected == inter.n_input
    reasons = " ".join(r for _, _, r in inter.rejected)
    for needle in ("NaN", "outside [1, 5]", "not a number", "duplicate"):
        assert needle in reasons
    assert inter.items is not None and inter.items.loc["6", "title"].startswith("Café")
    assert inter.users is not None and len(inter.users) == 60
    q = tmp_path / "q.csv"
    assert inter.write_quarantine(q) == 4
    assert len(pd.read_csv(q)) == 4


def test_ratings_dat_with_timestamps_and_wrong_files(tmp_path: Path) -> None:
    write_ml1m(tmp_path / "ts", timestamps=True, bad_rows=False)
    assert load_interactions(tmp_path / "ts").n_rejected == 0
    (tmp_path / "junk").mkdir()
    with pytest.raises(InputError, match="not a MovieLens folder"):
        load_interactions(tmp_path / "junk")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ratings.dat").write_text("1::2::9\n1::3::8\n1::4::3\n")
    with pytest.raises(InputError, match="2 of 3 rating rows are invalid"):
        load_interactions(bad)
    (bad / "ratings.dat").write_text("1,2,3\n")
    with pytest.raises(SchemaError, match="line 1"):
        load_interactions(bad)


def test_ml100k_and_generic_table(tmp_path: Path) -> None:
    d = tmp_path / "ml100k"
    d.mkdir()
    (d / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250949\n2\t1\t4\t1\n")
    flags = "|".join(["0"] * 18 + ["1"])
    (d / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n2|Heat (1995)|01-Jan-1995||http://x|{flags}\n",
        encoding="latin-1",
    )
    (d / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    inter = load_interactions(d)
    assert inter.fmt == "ml-100k" and len(inter.ratings) == 3
    assert inter.items is not None and inter.items.loc["1", "genres"] == "Western"
    csv = tmp_path / "interactions.csv"
    pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"], "rating": [4, None, 2]}).to_csv(
        csv, index=False
    )
    t = load_table(csv, max_bad_fraction=0.5)
    assert len(t.ratings) == 2 and t.rejected[0][2].startswith("rating is NaN")


def test_melu_sampler_is_seeded_per_user() -> None:
    task = Task("42", np.arange(30), np.ones(30, np.float32))
    a, b = MeluSampler().sample(task, 0), MeluSampler().sample(task, 0)
    assert len(a.query) == 10 and len(a.support) == 20
    assert set(a.query) | set(a.support) == set(range(30))
    np.testing.assert_array_equal(a.query, b.query)
    assert not np.array_equal(a.query, MeluSampler().sample(task, 1).query)
    other = Task("43", np.arange(30), np.ones(30, np.float32))
    assert not np.array_equal(a.query, MeluSampler().sample(other, 0).query)
    big = Task("7", np.arange(300), np.ones(300, np.float32))
    ep = RatingEpisodeSampler().sample(big, 3)
    assert len(ep.query) == 10 and 13 <= len(ep.query) + len(ep.support) <= 100


def test_user_tasks_and_holdout(tmp_path: Path) -> None:
    write_ml1m(tmp_path / "ml")
    inter = load_interactions(tmp_path / "ml")
    items = sorted(inter.ratings["item_id"].unique())
    ts = build_user_tasks(inter.ratings, items)
    assert all(13 <= len(t) <= 100 for t in ts.tasks)
    users = inter.ratings["user_id"].unique().tolist()
    h = holdout_users(users, 0.1, 0)
    assert len(h) == 6 and h == holdout_users(list(reversed(users)), 0.1, 0)
    assert h != holdout_users(users, 0.1, 1)


def test_ndcg_and_mae_by_hand() -> None:
    true = [5, 3, 4]
    assert ndcg_at_k(true, [3.0, 2.0, 1.0], 1) == 1.0
    assert ndcg_at_k(true, [1.0, 3.0, 2.0], 1) == pytest.approx(3 / 5)
    dcg = 4 + 5 / np.log2(3) + 3 / np.log2(4)
    ideal = 5 + 4 / np.log2(3) + 3 / np.log2(4)
    assert ndcg_at_k(true, [2.0, 1.0, 3.0], 3) == pytest.approx(dcg / ideal)
    assert mae([1, 2], [2, 2]) == 0.5


def test_mf_fold_in_beats_the_mean_on_low_rank_data() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(200, 3)), rng.normal(size=(50, 3))
    u = np.repeat(np.arange(200), 30)
    i = np.concatenate([rng.choice(50, 30, replace=False) for _ in range(200)])
    r = np.clip(3 + (p[u] * q[i]).sum(1) * 0.7, 1, 5).astype(np.float32)
    mf = fit_mf(u, i, r, 200, 50, dim=3, reg=1.0, reg_bias=1.0, iters=8)
    new = rng.normal(size=3)
    items = rng.choice(50, 25, replace=False)
    y = np.clip(3 + q[items] @ new * 0.7, 1, 5).astype(np.float32)
    pred = mf.predict_user(items[:15], y[:15], items[15:])
    assert mae(y[15:], pred) < 0.5 * mae(y[15:], np.full(10, y[:15].mean()))


def test_item_featurizer_spec_round_trip(tmp_path: Path) -> None:
    write_ml1m(tmp_path / "ml")
    inter = load_interactions(tmp_path / "ml")
    fz = ItemFeaturizer().fit(inter.items)
    x = fz.transform(["1", "2", "nope"], inter.items)
    assert x.shape == (3, fz.dim) and x[0, : len(fz.genres)].sum() >= 1
    assert x[2, len(fz.genres) + 1] == 1.0  # unknown item: year missing flag
    again = ItemFeaturizer.from_spec(fz.spec(), expected_hash=fz.hash)
    np.testing.assert_array_equal(again.transform(["1"], inter.items), x[:1])
    with pytest.raises(ArtifactMismatchError):
        ItemFeaturizer.from_spec(fz.spec(), expected_hash="0" * 64)


def test_staircase_is_strictly_increasing_and_snaps() -> None:
    import torch

    from metascreen.models.learners.rating import staircase

    p = torch.linspace(0.5, 5.5, 4001)
    y = staircase(p, torch.tensor(0.3))
    assert bool((y[1:] > y[:-1]).all())
    assert float((staircase(torch.tensor([3.2]), torch.tensor(0.3)) - 3.0).abs()) < 0.01
    torch.testing.assert_close(staircase(p, torch.tensor(0.0)), p)
    from metascreen.models.features.mf import staircase as staircase_np

    np.testing.assert_allclose(staircase_np(p.numpy(), 0.3), y.numpy(), atol=1e-5)
