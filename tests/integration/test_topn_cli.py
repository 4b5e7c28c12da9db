"""``metascreen evaluate movielens --protocol topn`` on a tiny generated folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metascreen.pipelines.cli.main import app
from topn_data import write_clustered_ml1m

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("topn") / "ml-1m"
    write_clustered_ml1m(root)
    return root


def _run(*args: str) -> object:
    return runner.invoke(app, ["evaluate", "movielens", *args])


def test_topn_writes_json_md_png_with_paired_intervals(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r" / "topn.json"
    res = _run(
        str(data), "--protocol", "topn", "--model", "popular,ease", "--model", "itemknn",
        "--support-n", "5,10", "--k", "5,10", "--holdout-fraction", "0.3", "--json", str(out),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").stat().st_size > 1000
    assert set(r["models"]) == {"popular", "ease", "itemknn"} and r["support_ns"] == [5, 10]
    ease = r["models"]["ease"]
    assert set(ease["fit"]["chosen"]) == {"5", "10"} and len(ease["fit"]["grid"]) >= 10
    s = ease["support"]["5"]
    assert s["n_users"] == len(s["per_user"]["user_id"]) == len(s["per_user"]["ndcg@10"]) > 10
    assert 0 < s["metrics"]["ndcg@5"] <= 1 and 0 < s["metrics"]["coverage@10"] <= 1
    # the default reference is the best by NDCG@10 at n = 10; the others are paired against it
    best = max(r["models"], key=lambda m: r["models"][m]["support"]["10"]["metrics"]["ndcg@10"])
    assert r["against"] == best and set(r["paired"]) == set(r["models"]) - {best}
    cell = next(iter(r["paired"].values()))["10"]["ndcg@10"]
    assert cell["ci95"][0] <= cell["mean_difference"] <= cell["ci95"][1]
    assert "N@10 vs" in res.output and "popular" in res.output
    # same users and draws on a rerun: identical figures
    again = _run(str(data), "--protocol", "topn", "--model", "ease", "--support-n", "5",
                 "--k", "5,10", "--holdout-fraction", "0.3", "--json", str(tmp_path / "b.json"))  # fmt: skip
    assert again.exit_code == 0, again.output
    b = json.loads((tmp_path / "b.json").read_text())["models"]["ease"]["support"]["5"]
    assert b["per_user"] == s["per_user"]
    # an earlier report's models join a new run without being evaluated again
    inc = _run(str(data), "--protocol", "topn", "--model", "mf", "--support-n", "5,10", "--k",
               "5,10", "--holdout-fraction", "0.3", "--include", str(out), "--json", str(tmp_path / "c.json"))  # fmt: skip
    assert inc.exit_code == 0, inc.output
    c = json.loads((tmp_path / "c.json").read_text())
    assert list(c["models"]) == ["mf", "popular", "ease", "itemknn"]
    n10 = {m: v["support"]["10"]["metrics"]["ndcg@10"] for m, v in c["models"].items()}
    assert c["against"] == max(n10, key=lambda m: n10[m]) and len(c["paired"]) == 3
    assert c["models"]["ease"]["included_from"] == str(out)
    assert c["models"]["ease"]["support"]["5"] == ease["support"]["5"]
    bad = _run(str(data), "--protocol", "topn", "--model", "mf", "--support-n", "5", "--k", "5,10",
               "--holdout-fraction", "0.3", "--include", str(out))  # fmt: skip
    assert bad.exit_code == 2 and "--include" in bad.output
    other = _run(str(data), "--protocol", "topn", "--model", "mf", "--support-n", "5,10", "--k",
                 "5,10", "--holdout-fraction", "0.2", "--include", str(out))  # fmt: skip
    assert other.exit_code == 2 and "another protocol" in other.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--protocol", "topn", "--model", "ease", "--support-n", "0"], "--support-n"),
        (["--protocol", "topn", "--model", "ease", "--k", "a"], "--k"),
        (["--protocol", "topn", "--model", "ease", "--users", "all"], "--users"),
        (["--protocol", "topn", "--model", "nope"], "nope"),
        (["--protocol", "topn", "--model", "ease", "--against", "mf"], "--against"),
        (["--model", "mf,ease", "--users", "holdout"], "one model"),
        (["--model", "mf", "--support-n", "5"], "--support-n"),
    ],
)
def test_bad_options_are_one_error_line(data: Path, args: list[str], needle: str) -> None:
    res = _run(str(data), "--holdout-fraction", "0.3", *args)
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], res.output


@pytest.fixture(scope="module")
def rating_model(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from metascreen.models.workflows.movielens import train_rating_model

    out = tmp_path_factory.mktemp("topn-model") / "m"
    return train_rating_model(
        data,
        out,
        {"folds": 2, "hidden": 16, "heads": 2, "dim": 4},
        {"steps": 8, "tasks_per_step": 4, "eval_every": 4, "checkpoint_every": 4, "device": "cpu"},
        holdout_fraction=0.3,
        split_seed=0,
        run_dir=out.parent / "run",
        progress=False,
        policy_cfg={"warm_steps": 0},
        topn_cfg={"lams": (50.0,), "dropouts": (0.8,), "steps": 4, "eval_every": 2, "folds": 2},
    )


def test_an_artifact_ranks_by_predicted_rating_on_its_own_hold_out(
    data: Path, rating_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "a.json"
    args = ["--protocol", "topn", "--support-n", "5", "--k", "5,10"]
    res = _run(str(data), "--model", f"{rating_model},popular", *args, "--objective", "rating",
               "--json", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["holdout"]["fraction"] == 0.3 and r["against"] == "popular"
    assert r["models"]["m"]["fit"] == {"objective": "rating"}
    assert r["models"]["m"]["support"]["5"]["n_users"] > 10
    by_topn = _run(str(data), "--model", str(rating_model), *args, "--json", str(out))
    assert by_topn.exit_code == 0, by_topn.output  # the default objective: its top-N model
    t = json.loads(out.read_text())["models"]["m"]
    assert t["fit"] == {"objective": "topn"}
    assert t["support"]["5"]["n_users"] == r["models"]["m"]["support"]["5"]["n_users"]
    old = tmp_path / "old"
    shutil.copytree(rating_model, old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["topn"]
    (old / "metadata.json").write_text(json.dumps(meta))
    no_topn = _run(str(data), "--model", str(old), *args)
    assert no_topn.exit_code == 2 and "no top-N model" in no_topn.output
    other = _run(str(data), "--model", str(rating_model), *args, "--holdout-fraction", "0.2",
                 "--objective", "rating")  # fmt: skip
    assert other.exit_code == 2 and "seen in training" in other.output


def test_the_evaluate_flow_passes_the_protocol_through(data: Path) -> None:
    from metascreen.pipelines import flows

    r = flows._evaluate_topn.fn(
        str(data), ["popular", "ease"], 0, 0.3, 0, {"support_ns": [5], "ks": [10]}
    )
    assert r["protocol"] == "topn" and r["against"] == "ease" and set(r["paired"]) == {"popular"}
    assert r["models"]["ease"]["support"]["5"]["n_users"] > 10


def test_an_in_memory_ranker_beside_the_references_and_the_training_slice(data: Path) -> None:
    import pandas as pd

    from metascreen.domains.recommendation.load import load_interactions
    from metascreen.domains.recommendation.tasks import catalogue, split_users
    from metascreen.models.evaluation.topn import evaluate_topn
    from metascreen.models.evaluation.topn_refs import item_counts, training_slice
    from metascreen.models.workflows.movielens_topn import evaluate_topn_movielens

    def build(train: object, items: list[str]) -> object:
        counts = item_counts(train, items)  # type: ignore[arg-type]
        return lambda uid, s, sy: -counts  # the least popular first: a bad ranker

    r = evaluate_topn_movielens(data, ["popular"], (5,), (10,), holdout_fraction=0.3,
                                extra={"unpopular": build})  # fmt: skip
    assert r["models"]["unpopular"]["reference"] is False
    m = {k: v["support"]["5"]["metrics"]["ndcg@10"] for k, v in r["models"].items()}
    assert m["unpopular"] < m["popular"]
    # the references' tuning slice: training users only, disjoint from the users fitted on
    inter = load_interactions(data)
    train, items = split_users(inter, 0.3, 0).train, catalogue(inter)
    fit, slice_users = training_slice(train, items)
    assert isinstance(fit, pd.DataFrame) and not {u.user_id for u in slice_users} & set(
        fit["user_id"]
    )
    res = evaluate_topn(slice_users, len(items), build(fit, items), item_counts(fit, items), 5)  # type: ignore[arg-type]
    assert res.user_ids
