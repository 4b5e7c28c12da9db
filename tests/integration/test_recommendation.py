from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from metascreen.domains.errors import ArtifactMismatchError
from metascreen.pipelines.cli.main import app
from rec_data import write_ml1m

pytestmark = pytest.mark.integration
runner = CliRunner()
ML100K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "movielens" / "ml-100k"
TINY_MODEL = {"folds": 2, "hidden": 16, "heads": 2, "dim": 4}
TINY_TRAIN = {
    "steps": 16,
    "tasks_per_step": 4,
    "eval_every": 8,
    "checkpoint_every": 8,
    "device": "cpu",
}
TINY_POLICY = {
    "warm_steps": 12,
    "eval_every": 6,
    "pools_per_step": 4,
    "max_pool": 40,
    "liked_dim": 4,
    "rated_dim": 2,
    "d_model": 16,
    "heads": 2,
    "layers": 1,
    "valid_users": 8,
}
TINY_TOPN = {"lams": (50.0, 200.0), "dropouts": (0.8,), "steps": 6, "eval_every": 3, "folds": 2}


@pytest.fixture(scope="module")
def tiny_ml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ml1m") / "ml-1m"
    write_ml1m(root)
    return root


@pytest.fixture(scope="module")
def rec_model(tiny_ml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from metascreen.models.workflows.movielens import train_rating_model

    out = tmp_path_factory.mktemp("recmodel") / "m"
    return train_rating_model(
        tiny_ml,
        out,
        TINY_MODEL,
        TINY_TRAIN,
        holdout_fraction=0.2,
        split_seed=0,
        run_dir=out.parent / "run",
        progress=False,
        policy_cfg=TINY_POLICY,
        topn_cfg=TINY_TOPN,
    )


def test_artifact_metadata_and_holdout_figures(rec_model: Path) -> None:
    meta = json.loads((rec_model / "metadata.json").read_text())
    assert meta["kind"] == "movielens-predictor"
    assert meta["training_data"]["holdout"] == {"fraction": 0.2, "split_seed": 0, "n_users": 12}
    assert meta["training_data"]["n_rejected_rows"] == 4
    assert len(meta["featurizer"]["hash"]) == 64 and "items.npz" in meta["files"]
    assert meta["onnx"]["parity_max_abs_diff"] < 1e-4
    hold = meta["metrics"]["holdout"]
    assert hold["n_users"] == 12 and 0 < hold["mae"] < 2
    train = meta["metrics"]["train"]
    assert "staircase" in train and isinstance(train["residual_used"], bool)
    assert (rec_model.parent / "run" / "quarantine" / "ratings.csv").exists()
    topn = meta["metrics"]["topn"]
    assert len(topn["grid"]) == 2 and topn["lam"] in (50.0, 200.0) and topn["dropout"] == 0.8
    assert topn["history"][0]["step"] == 0  # the closed-form state is validated first
    assert topn["selection_ndcg@10_meta_trained"] >= topn["selection_ndcg@10_item_item_only"]
    assert {"topn.onnx", "topn_weights.pt.gz"} <= set(meta["files"])
    assert meta["topn"]["parity_max_abs_diff"] < 1e-4 and meta["topn"]["n_items"] == 80
    hold = meta["metrics"]["holdout_topn"]
    assert hold["support_n"] == 10 and hold["n_users"] > 0 and 0 <= hold["ndcg@10"] <= 1


def test_evaluate_cli_contract_and_baselines(
    rec_model: Path, tiny_ml: Path, tmp_path: Path
) -> None:
    out = tmp_path / "e.json"
    res = runner.invoke(
        app, ["evaluate", "movielens", str(tiny_ml), "--model", str(rec_model), "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert {"mae", "ndcg@1", "ndcg@3", "n_users", "model", "seconds"} <= set(got)
    assert got["n_users"] == 60  # every user with 13–100 ratings, seen in training or not
    figures = {}
    for model in ("global-mean", "item-mean", "item-bias", "mf", "mf-staircase", str(rec_model)):
        res = runner.invoke(
            app,
            [
                "evaluate",
                "movielens",
                str(tiny_ml),
                "--model",
                model,
                "--users",
                "holdout",
                "--holdout-fraction",
                "0.2",
                "--json",
                str(tmp_path / "b.json"),
            ],
        )
        assert res.exit_code == 0, res.output
        figures[model] = json.loads((tmp_path / "b.json").read_text())
    assert {r["n_users"] for r in figures.values()} == {12}
    assert figures["item-bias"]["mae"] < figures["global-mean"]["mae"]
    # the staircase is strictly increasing: rankings (nDCG) are those of plain MF
    assert figures["mf-staircase"]["ndcg@3"] == pytest.approx(figures["mf"]["ndcg@3"])
    res = runner.invoke(app, ["evaluate", "movielens", str(tiny_ml), "--model", "mf"])
    assert res.exit_code == 2 and "--users holdout" in res.output


def _score_inputs(tmp_path: Path) -> tuple[Path, Path]:
    ratings = pd.DataFrame(
        {
            "user_id": ["u1"] * 6 + ["u2"] * 4 + ["u3"],
            "item_id": ["1", "2", "3", "4", "4", "999", "5", "6", "7", "8", "1"],
            "rating": [5, 4, 1, 3, 2, 4, 5, float("nan"), 9, 3, float("nan")],
        }
    )
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    cands = pd.DataFrame({"item_id": [str(i) for i in range(1, 41)] + ["12", "nope"]})
    cands.to_csv(tmp_path / "cands.csv", index=False)
    return tmp_path / "ratings.csv", tmp_path / "cands.csv"


def test_score_movielens_without_torch_quarantines_and_reconciles(
    rec_model: Path, tmp_path: Path
) -> None:
    ratings, cands = _score_inputs(tmp_path)
    out = tmp_path / "top.parquet"
    code = textwrap.dedent(
        f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, _Block())
        from metascreen.models.serving.ratings import score_users
        rep = score_users({str(rec_model)!r}, {str(ratings)!r}, {str(cands)!r}, {str(out)!r}, k=5)
        assert "torch" not in sys.modules
        import json; print(json.dumps(rep.to_json()))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["n_ratings_in"] == 11 == rep["n_ratings_used"] + rep["n_ratings_quarantined"]
    assert rep["n_ratings_quarantined"] == 5  # duplicate, unknown id, NaN, out of range, NaN
    assert (
        rep["n_candidates_in"] == 42 == rep["n_candidates_kept"] + rep["n_candidates_quarantined"]
    )
    assert rep["n_candidates_quarantined"] == 2  # duplicate and unknown
    assert rep["n_users"] == 2 and rep["n_users_without_ratings"] == 1
    top = pd.read_parquet(out)
    assert len(top) == 10 and set(top["user_id"]) == {"u1", "u2"}
    u1 = top[top["user_id"] == "u1"]
    assert not set(u1["item_id"]) & {"1", "2", "3", "4"}  # rated items are never recommended
    assert u1["score"].is_monotonic_decreasing
    q = pd.read_csv(rep["quarantine"])
    assert len(q) == 7 and q["reason"].str.len().min() > 5
    assert rep["objective"] == "topn"  # the artifact has a top-N model: it ranks by default


def test_score_movielens_objectives_and_implicit_feedback(rec_model: Path, tmp_path: Path) -> None:
    from metascreen.domains.quarantine import QuarantineRows
    from metascreen.models.serving.ratings import RatingPredictor, recommend_frame
    from metascreen.pipelines.api import Recommender

    ratings, cands = _score_inputs(tmp_path)
    by_rating = tmp_path / "rating.parquet"
    res = runner.invoke(
        app,
        [
            "score", "movielens", "--ratings", str(ratings), "--candidates", str(cands),
            "--output", str(by_rating), "--model", str(rec_model), "--k", "5",
            "--objective", "rating",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "by rating" in res.output
    rated = pd.read_parquet(by_rating)
    assert rated["score"].between(1, 5).all()  # predicted ratings
    model = RatingPredictor(rec_model)
    raw = pd.read_csv(ratings, dtype={"item_id": str})
    cand = pd.read_csv(cands, dtype={"item_id": str})
    topn, _ = recommend_frame(model, raw, cand, QuarantineRows(), 5, objective="topn")
    u1 = raw[(raw["user_id"] == "u1") & raw["rating"].between(1, 5)].drop_duplicates("item_id")
    u1 = u1[u1["item_id"] != "999"]
    s_pos = model.table.positions(u1["item_id"].tolist())
    want = model.topn.scores([s_pos], [u1["rating"].to_numpy(np.float32)])[0]
    got = topn[topn["user_id"] == "u1"]
    pos = model.table.positions(got["item_id"].tolist())
    np.testing.assert_allclose(got["score"].to_numpy(), want[pos], rtol=1e-6)
    allowed = set(cand["item_id"]) - set(u1["item_id"]) - {"nope"}
    best = sorted(allowed, key=lambda i: -want[model.table.positions([i])[0]])[:5]
    assert got["item_id"].tolist() == best  # the five best unrated candidates, in order
    per_user = pd.DataFrame(
        {"user_id": ["u1"] * 3 + ["u2"] * 2, "item_id": ["10", "11", "12", "13", "14"]}
    )
    pu = Recommender(rec_model).recommend(raw, per_user, k=5)  # each user's own candidates
    assert set(pu[pu["user_id"] == "u1"]["item_id"]) == {"10", "11", "12"}
    assert set(pu[pu["user_id"] == "u2"]["item_id"]) == {"13", "14"}
    implicit = pd.DataFrame({"user": ["z"] * 3, "item": ["3", "9", "27"]})  # no rating column
    top = Recommender(rec_model).recommend(implicit, k=4)
    assert len(top) == 4 and not set(top["item_id"]) & {"3", "9", "27"}


def test_score_refuses_topn_on_an_artifact_without_one(rec_model: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(rec_model, old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["topn"]
    (old / "metadata.json").write_text(json.dumps(meta))
    ratings, cands = _score_inputs(tmp_path)
    args = ["score", "movielens", "--ratings", str(ratings), "--candidates", str(cands)]
    args += ["--model", str(old), "--output", str(tmp_path / "o.parquet")]
    res = runner.invoke(app, [*args, "--objective", "topn"])
    assert res.exit_code == 2 and "no top-N model" in res.output
    res = runner.invoke(app, args)  # auto: falls back to predicted rating, and says so
    assert res.exit_code == 0 and "by rating" in res.output


def test_onnx_matches_torch_and_tampering_is_refused(rec_model: Path, tmp_path: Path) -> None:
    import torch

    from metascreen.models.learners.rating import AttentiveRatingLearner
    from metascreen.models.serving.ratings import RatingPredictor
    from metascreen.models.training.export import load_weights

    pred = RatingPredictor(rec_model, device="cpu")
    meta = json.loads((rec_model / "metadata.json").read_text())
    t = pred.table
    learner = AttentiveRatingLearner(
        t.mf.dim + 8 + t.side.shape[1], t.mf.dim, t.mf.mu, hidden=16, heads=2
    )
    learner.load_state_dict(load_weights(rec_model, meta))
    learner.eval()
    x = t.rows(t.item_ids)
    rng = np.random.default_rng(0)
    for n_s, n_q in ((1, 3), (17, 10), (90, 70)):
        s, q = rng.choice(len(x), n_s), rng.choice(len(x), n_q)
        sy = rng.integers(1, 6, n_s).astype(np.float32)
        with torch.no_grad():
            want = learner(
                torch.as_tensor(x[s]), torch.as_tensor(sy), torch.as_tensor(x[q])
            ).numpy()
        np.testing.assert_allclose(pred.predict(x[s], sy, x[q]), want, rtol=1e-4, atol=1e-4)
        assert ((want >= 1) & (want <= 5)).all()
    bad = tmp_path / "bad"
    shutil.copytree(rec_model, bad)
    z = bytearray((bad / "items.npz").read_bytes())
    z[-10] ^= 1
    (bad / "items.npz").write_bytes(bytes(z))
    with pytest.raises(ArtifactMismatchError):
        RatingPredictor(bad)
    res = runner.invoke(app, ["evaluate", "molecules", str(tmp_path), "--model", str(rec_model)])
    assert res.exit_code == 2 and "movielens-predictor" in res.output


def test_export_and_flows_take_the_domain(rec_model: Path, tiny_ml: Path, tmp_path: Path) -> None:
    from metascreen.pipelines import flows

    stats = flows.prepare_tasks_task.fn(str(tiny_ml), domain="movielens")
    assert stats["n_rejected"] == 4 and stats["n_rows"] == stats["n_ratings"] + 4
    res = flows.evaluate_task.fn(
        str(tiny_ml),
        "item-mean",
        [],
        0,
        0,
        None,
        "movielens",
        users="holdout",
        holdout_fraction=0.2,
    )
    assert res["n_users"] == 12
    new = flows.export_flow.fn(str(rec_model), str(tmp_path / "re"), domain="movielens")
    new_meta = json.loads((Path(new) / "metadata.json").read_text())
    assert new_meta["exported_from"] == str(rec_model)
    assert new_meta["policy"]["onnx"] == "policy.onnx" and "policy.onnx" in new_meta["files"]
    ratings, cands = _score_inputs(tmp_path)
    rep = flows.batch_score_task.fn(
        str(rec_model),
        str(ratings),
        str(cands),
        str(tmp_path / "t.parquet"),
        domain="movielens",
        k=3,
    )
    assert rep["n_rows_out"] == 6


def test_movielens_flow_runs_orchestrated(
    prefect_harness: None, rec_model: Path, tiny_ml: Path
) -> None:
    from metascreen.pipelines.flows import evaluate_flow

    res = evaluate_flow(
        str(tiny_ml),
        ["mf", str(rec_model)],
        domain="movielens",
        users="holdout",
        holdout_fraction=0.2,
    )
    assert {r["n_users"] for r in res.values()} == {12}


@pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="shared MovieLens 100K not present")
def test_real_ml100k_prepare_and_baselines(tmp_path: Path) -> None:
    from metascreen.models.workflows.movielens import evaluate_ratings, prepare_stats

    stats = prepare_stats(ML100K)
    assert stats["n_ratings"] == 100_000 and stats["n_users"] == 943 and stats["n_rejected"] == 0
    res = {
        m: evaluate_ratings(ML100K, m, users="holdout", holdout_fraction=0.2, split_seed=0)
        for m in ("item-mean", "mf")
    }
    assert res["mf"]["n_users"] == res["item-mean"]["n_users"] > 50
    assert res["mf"]["mae"] < res["item-mean"]["mae"] < 1.0


def test_simulate_movielens_baselines(rec_model: Path, tiny_ml: Path, tmp_path: Path) -> None:
    got = {}
    for policy in ("random", "popular", "greedy", "greedy-topn", "greedy-ease"):
        out = tmp_path / f"{policy}.json"
        res = runner.invoke(
            app,
            [
                "simulate",
                "movielens",
                str(tiny_ml),
                "--model",
                str(rec_model),
                "--policy",
                policy,
                "--budget",
                "5",
                "--users",
                "holdout",
                "--json",
                str(out),
                "--plot",
                str(tmp_path / "c.png"),
            ],
        )
        assert res.exit_code == 0, res.output
        got[policy] = json.loads(out.read_text())
    r = got["greedy"]
    assert {
        "metric",
        "cumulative_precision",
        "hits@5",
        "hits@10",
        "hits@20",
        "curve",
        "n_users",
        "policy",
        "seconds",
    } <= set(r)
    assert r["n_users"] == 12 and len(r["curve"]) == 5
    assert all(a <= b for a, b in zip(r["curve"], r["curve"][1:], strict=False))
    assert r["cumulative_precision"] == pytest.approx(r["curve"][-1] / 5, abs=1e-4)
    for name in ("greedy-topn", "greedy-ease"):  # the top-N rankers, re-scored on what is revealed
        assert got[name]["policy"] == name and got[name]["n_users"] == 12
        assert got[name]["cumulative_precision"] > got["random"]["cumulative_precision"]


def test_simulate_movielens_uses_the_learned_policy_by_default(
    rec_model: Path, tiny_ml: Path, tmp_path: Path
) -> None:
    out = tmp_path / "p.json"
    args = ["simulate", "movielens", str(tiny_ml), "--model", str(rec_model), "--budget", "5"]
    res = runner.invoke(app, [*args, "--users", "holdout", "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["policy"] == "policy" and r["metric"] == "hits" and r["n_users"] == 12
    assert len(r["curve"]) == 5 and 0.0 <= r["cumulative_precision"] <= 1.0
    res = runner.invoke(app, [*args, "--policy", "policy", "--users", "holdout"])
    assert res.exit_code == 0 and "policy: cumulative precision@5" in res.output
    res = runner.invoke(app, [*args, "--policy", "nope"])
    assert res.exit_code == 2 and "unknown policy" in res.output
    # a modified embedding table is refused
    bad = tmp_path / "bad"
    shutil.copytree(rec_model, bad)
    with open(bad / "policy_items.npz", "ab") as fh:
        fh.write(b"x")
    res = runner.invoke(app, ["simulate", "movielens", str(tiny_ml), "--model", str(bad)])
    assert res.exit_code != 0 and "sha256" in res.output


def test_policy_artifact_onnx_matches_torch(rec_model: Path, tiny_ml: Path) -> None:
    import torch

    from metascreen.domains.recommendation.load import load_interactions
    from metascreen.domains.recommendation.tasks import user_tasks
    from metascreen.models.nn.policy import PolicyConfig, ScreeningPolicy
    from metascreen.models.screening.movielens import load_policy_picker
    from metascreen.models.screening.simulator import BatchEnv, make_pools
    from metascreen.models.serving.policy import observation
    from metascreen.models.training.export import load_weights

    meta = json.loads((rec_model / "metadata.json").read_text())
    spec = meta["policy"]
    assert {"policy.onnx", "policy_items.npz", "policy_weights.pt.gz"} <= set(meta["files"])
    assert spec["parity_max_abs_diff"] <= 1e-4
    m = meta["metrics"]["policy"]
    assert m["n_valid_users"] >= 1 and 0.0 <= m["valid_cumulative_precision"] <= 1.0
    pol = ScreeningPolicy(spec["in_dim"], PolicyConfig(**spec["policy_config"]))
    w = {"file": spec["weights"], "sha256": meta["files"][spec["weights"]]}
    pol.load_state_dict(load_weights(rec_model, {"weights": w}))
    pol.eval()
    items = [str(i) for i in range(1, 81)]
    picker = load_policy_picker(rec_model, meta, items)
    tasks = user_tasks(load_interactions(tiny_ml).ratings, items)[:5]
    env = BatchEnv(make_pools(tasks, 1.0, 0), budget=6)
    for _ in range(4):  # empty history first, then histories of 1..3 picks
        obs = observation(env, picker.embeddings[env.items])
        want = pol(*(torch.as_tensor(obs[k]) for k in obs))[0].detach().numpy()
        got = picker.scores(env)
        np.testing.assert_allclose(got, want, atol=1e-4)
        env.step(env.select(got, 1))
