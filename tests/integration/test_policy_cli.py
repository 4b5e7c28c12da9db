"""``simulate molecules``, ``propose`` and the policy artifact, end to end on tiny data."""

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

from metascreen.pipelines.cli.main import app
from tiny_data import make_smiles

pytestmark = pytest.mark.integration
runner = CliRunner()

CONTRACT = (
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
)


def test_baselines_embed_with_the_predictors_own_graph(
    tiny_model: Path, tiny_policy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """greedy's cold start embeds with the predictor it runs, cut out of that predictor's graph."""
    import torch

    from metascreen.domains.io import sha256_file
    from metascreen.models.learners.registry import LearnerConfig, build_learner
    from metascreen.models.serving.artifact import read_artifact
    from metascreen.models.serving.policy import (
        PolicyRunner,
        PredictorEmbedder,
        predictor_embeddings,
    )
    from metascreen.models.training.export import load_weights

    info = read_artifact(tiny_model)
    emb = PredictorEmbedder(info)
    pol = PolicyRunner.load(tiny_policy, device="cpu")
    x = np.random.default_rng(3).random((37, pol.featurizer.dim)).astype(np.float32)
    got = emb.embed(x, batch=16)  # batches join in order
    assert got.shape == (37, pol.info.metadata["embedding_dim"])
    # the policy's encoder.onnx is exported from the same predictor: same numbers
    np.testing.assert_allclose(got, pol.embed(x), rtol=1e-5, atol=1e-5)
    cfg = json.loads((tiny_model / "config.json").read_text())
    learner = build_learner(LearnerConfig.model_validate(cfg["learner"]), pol.featurizer.dim)
    learner.load_state_dict(load_weights(tiny_model, info.metadata))
    learner.eval()
    with torch.no_grad():
        want = learner.encoder(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert predictor_embeddings(tiny_model, x[:0]).shape == (0, got.shape[1])
    # a graph with no shared encoder output: no embeddings, said in the log (ECFP fallback)
    fake = tmp_path / "fake"
    shutil.copytree(tiny_model, fake)
    meta = json.loads((fake / "metadata.json").read_text())
    shutil.copy(tiny_policy / "policy.onnx", fake / "model.onnx")
    meta["onnx"]["sha256"] = sha256_file(fake / "model.onnx")
    (fake / "metadata.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING"):
        assert predictor_embeddings(fake, x) is None
    assert "no shared encoder output" in caplog.text


def test_train_prior_and_the_prior_cold_start(
    tiny_fsmol: Path, tiny_model: Path, tiny_policy: Path, tmp_path: Path
) -> None:
    prior = tmp_path / "prior.json"
    args = ["train", "prior", str(tiny_fsmol / "train"), "--out", str(prior)]
    res = runner.invoke(app, [*args, "--model", str(tiny_model), "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    doc = json.loads(prior.read_text())
    meta = json.loads((tiny_model / "metadata.json").read_text())
    assert doc["predictor_onnx_sha256"] == meta["onnx"]["sha256"]
    assert (
        len(doc["weights"])
        == json.loads((tiny_policy / "metadata.json").read_text())["embedding_dim"]
    )
    td = doc["training_data"]
    assert td["n_rows_fitted"] == td["n_rows"] == 6 * 48 and 0 < td["active_rate"] < 1
    out = tmp_path / "sim.json"
    sim = ["simulate", "molecules", str(tiny_fsmol / "valid"), "--policy", "greedy"]
    sim += ["--budget", "8", "--repeats", "1", "--model", str(tiny_model)]
    opts = ["--option", "cold_start=prior", "--option", f"prior_file={prior}"]
    res = runner.invoke(app, [*sim, *opts, "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert got["options"] == {"cold_start": "prior", "prior_file": str(prior), "prior_weight": 1.0}
    # greedy-prior is greedy with that cold start
    res = runner.invoke(
        app, [*sim[:4], "greedy-prior", *sim[5:], opts[2], opts[3], "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["options"] == got["options"]
    # a prior fitted on another predictor is refused, by name (the shipped prior, too: it was
    # fitted on the shipped predictor, not on the tiny one)
    doc["predictor_onnx_sha256"] = "0" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    res = runner.invoke(app, [*sim, *opts[:2], "--option", f"prior_file={other}"])
    assert res.exit_code == 2 and "other.json" in res.output and "train prior" in res.output
    res = runner.invoke(app, [*sim[:4], "greedy-prior", *sim[5:]])
    assert res.exit_code == 2 and "activity-prior-default.json" in res.output


def test_policy_artifact_metadata(tiny_policy: Path) -> None:
    meta = json.loads((tiny_policy / "metadata.json").read_text())
    assert meta["kind"] == "molecules-policy"
    assert meta["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert meta["encoder_onnx"]["parity_max_abs_diff"] <= 1e-4
    assert set(meta["metrics"]["valid"]) == {"0.1", "1.0"}
    for key in ("seed", "command", "training_data", "featurizer", "versions", "weights"):
        assert key in meta


def test_policy_stores_the_float16_predictors_encoder_as_float16(
    tiny_policy: Path, tiny_model: Path
) -> None:
    """The tiny predictor is float16-stored, so the encoder the policy carries is float16-exact:
    the policy artifact stores it as float16 too (losslessly) in encoder.onnx and weights.pt.gz."""
    import gzip
    import io

    import onnx
    import torch

    from metascreen.models.serving.artifact import read_artifact
    from metascreen.models.training.export import load_learner, load_weights

    meta = json.loads((tiny_policy / "metadata.json").read_text())
    assert meta["weights"]["float16_tensors"] >= 1
    graph = onnx.load(str(tiny_policy / "encoder.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
    raw = gzip.decompress((tiny_policy / "weights.pt.gz").read_bytes())
    stored = torch.load(io.BytesIO(raw), weights_only=True)
    assert any(k.startswith("encoder.") and t.dtype == torch.float16 for k, t in stored.items())
    # widened, what it stores is the predictor's encoder exactly
    info = read_artifact(tiny_model)
    learner, _ = load_learner(tiny_model, info, info.metadata["onnx"]["inputs"]["query_x"][1])
    state = load_weights(tiny_policy, meta)
    for k, t in learner.encoder.state_dict().items():
        torch.testing.assert_close(state[f"encoder.{k}"], t, rtol=0, atol=0)


def test_simulate_contract_with_comparison(
    tiny_fsmol: Path, tiny_model: Path, tiny_policy: Path, tmp_path: Path
) -> None:
    out, png = tmp_path / "sim.json", tmp_path / "sim.png"
    res = runner.invoke(
        app,
        [
            "simulate",
            "molecules",
            str(tiny_fsmol / "valid"),
            "--policy",
            str(tiny_policy),
            "--budget",
            "8",
            "--active-fraction",
            "0.2",
            "--repeats",
            "2",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--compare",
            "random,greedy,knn,gp",
            "--model",
            str(tiny_model),
        ],
    )
    assert res.exit_code == 0, res.output
    j = json.loads(out.read_text())
    for key in CONTRACT:
        assert key in j, key
    assert j["policy"] == "tiny-policy" and j["n_tasks"] == 3 and len(j["curve"]) == 8
    assert set(j["compare"]) == {"random", "greedy", "knn", "gp"}
    for r in (j, *j["compare"].values()):
        assert 0 <= r["mean_hits"] <= 8 and 0 <= r["mean_hit_fraction"] <= 1
        assert r["curve"] == sorted(r["curve"])
        # every policy met the same pools
        assert [t["pool_hits"] for t in r["per_task"].values()] == [
            t["pool_hits"] for t in j["per_task"].values()
        ]
    assert png.stat().st_size > 1000
    # paired differences on the same pools, checked against the per-task figures
    g = j["paired"]["greedy"]
    want = np.mean(
        [
            j["per_task"][t]["mean_hits"] - j["compare"]["greedy"]["per_task"][t]["mean_hits"]
            for t in j["per_task"]
        ]
    )
    assert g["n_tasks"] == 3 and abs(g["mean_diff"] - want) < 1e-9
    assert g["tasks_better"] + g["tasks_worse"] <= 3


def _files(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    rows = make_smiles(30, seed=77)
    assayed = pd.DataFrame(
        {"SMILES": [s for s, _ in rows[:5]] + ["C1CC"], "label": [y for _, y in rows[:5]] + [1]}
    )
    pool_smiles = [s for s, _ in rows[3:]] + ["not-a-smiles", "", rows[10][0]]
    a, p = tmp_path / "assayed.csv", tmp_path / "pool.csv"
    assayed.to_csv(a, index=False)
    pd.DataFrame({"SMILES": pool_smiles, "id": range(len(pool_smiles))}).to_csv(p, index=False)
    return a, p, [s for s, _ in rows[:5]]


def test_propose_never_reproposes_and_reconciles(tiny_policy: Path, tmp_path: Path) -> None:
    assayed, pool, assayed_smiles = _files(tmp_path)
    out = tmp_path / "next.csv"
    res = runner.invoke(
        app,
        [
            "propose",
            "--assayed",
            str(assayed),
            "--pool",
            str(pool),
            "--k",
            "8",
            "--output",
            str(out),
            "--policy",
            str(tiny_policy),
        ],
    )
    assert res.exit_code == 0, res.output
    got = pd.read_csv(out)
    assert len(got) == 8 and got["rank"].tolist() == list(range(1, 9))
    assert not set(got["canonical_smiles"]) & set(assayed_smiles)
    assert got["score"].is_monotonic_decreasing
    q = pd.read_csv(tmp_path / "next.quarantine.csv")
    reasons = " | ".join(q["reason"])
    assert "already assayed" in reasons and "duplicate of pool row" in reasons
    assert q["reason"].str.contains("assayed.csv").sum() == 1  # the invalid assayed row
    # pool rows: 27 listed + 3 extra = 30 = scored + already assayed (2) + quarantined (3)
    assert "proposed 8 of 25 candidates (2 already assayed, 3 pool rows quarantined" in res.output


def test_propose_with_nothing_assayed_runs_without_torch(tiny_policy: Path, tmp_path: Path) -> None:
    _, pool, _ = _files(tmp_path)
    empty = tmp_path / "none.csv"
    empty.write_text("SMILES,label\n")
    code = textwrap.dedent(
        f"""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch.") or name.startswith("torch_geometric"):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, _Block())
        from metascreen.models.serving.policy import propose
        a = propose({str(empty)!r}, {str(pool)!r}, {str(tmp_path / "a.csv")!r}, 4, {str(tiny_policy)!r})
        b = propose(None, {str(pool)!r}, {str(tmp_path / "b.csv")!r}, 4, {str(tiny_policy)!r})
        assert "torch" not in sys.modules
        print(a.n_proposed, a.n_scored, b.n_scored)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "27", "27"]
    assert pd.read_csv(tmp_path / "a.csv").equals(pd.read_csv(tmp_path / "b.csv"))


def test_tampered_policy_is_refused(tiny_policy: Path, tmp_path: Path) -> None:
    _, pool, _ = _files(tmp_path)
    for name in ("policy.onnx", "encoder.onnx"):
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(tiny_policy, bad)
        with open(bad / name, "ab") as fh:
            fh.write(b"\0")
        res = runner.invoke(
            app,
            [
                "propose",
                "--pool",
                str(pool),
                "--output",
                str(tmp_path / "x.csv"),
                "--policy",
                str(bad),
            ],
        )
        assert res.exit_code == 2 and "sha256" in res.output, res.output


def test_bad_training_options_are_one_clear_line(tiny_fsmol: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "train",
            "policy",
            str(tiny_fsmol),
            "--out",
            str(tmp_path / "p"),
            "--keep",
            "newest",
            "--rl-baseline",
            "mean",
        ],
    )
    assert res.exit_code == 2, res.output
    # checked by the CLI before any work (choices declared on the options): the first bad one
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    assert "'--keep'" in errors[0] and "'best', 'last'" in errors[0]
    assert "Traceback" not in res.output and not (tmp_path / "p").exists()


def test_propose_plate_keeps_the_policy_scores(tiny_policy: Path, tmp_path: Path) -> None:
    """The plate path (history rows masked among the candidates) = one direct policy call."""
    from metascreen.domains.molecules.featurize import canonicalize
    from metascreen.models.serving.policy import PolicyRunner, propose

    assayed, pool, _ = _files(tmp_path)
    rep = propose(assayed, pool, tmp_path / "p.csv", 6, tiny_policy)
    got = pd.read_csv(tmp_path / "p.csv")
    run = PolicyRunner.load(tiny_policy)
    adf = pd.read_csv(assayed).iloc[:5]  # the valid assayed rows
    h = run.embed(run.featurizer.transform_smiles([canonicalize(s) for s in adf["SMILES"]]))
    c_smiles = [s for s in dict.fromkeys(canonicalize(s) for s in pd.read_csv(pool)["SMILES"])]
    c_smiles = [s for s in c_smiles if s and s not in {canonicalize(x) for x in adf["SMILES"]}]
    c = run.embed(run.featurizer.transform_smiles(c_smiles))
    logits, _ = run.run(
        {
            "candidates": c[None],
            "candidate_mask": np.ones((1, len(c)), np.float32),
            "history": h[None],
            "history_labels": adf["label"].to_numpy(np.float32)[None],
            "history_mask": np.ones((1, len(h)), np.float32),
            "t_frac": np.array([5 / 8], np.float32),
        }
    )
    want = dict(zip(c_smiles, logits[0].tolist(), strict=True))
    assert rep.n_scored == len(c_smiles)
    np.testing.assert_allclose(
        got["logit"], [want[s] for s in got["canonical_smiles"]], rtol=1e-4, atol=1e-5
    )
    # the plate is the 6 highest logits of the direct call, in order (equal to float rounding:
    # the plate call has other shapes, so onnxruntime may sum in another order)
    np.testing.assert_allclose(
        got["logit"], sorted(want.values(), reverse=True)[:6], rtol=1e-5, atol=1e-6
    )
    assert (np.diff(got["logit"].to_numpy()) <= 0).all()


def test_propose_with_baselines(tiny_model: Path, tmp_path: Path) -> None:
    assayed, pool, assayed_smiles = _files(tmp_path)
    for name in ("greedy", "thompson", "knn"):
        out = tmp_path / f"{name}.csv"
        args = ["propose", "--assayed", str(assayed), "--pool", str(pool), "--k", "5"]
        args += ["--output", str(out), "--policy", name, "--model", str(tiny_model)]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        got = pd.read_csv(out)
        assert len(got) == 5 and got["canonical_smiles"].is_unique
        assert not set(got["canonical_smiles"]) & set(assayed_smiles)
        assert got["logit"].isna().all() == (name == "thompson")
    res = runner.invoke(app, [*args[:-2], "--policy", "greedy", "--option", "nope=1"])
    assert res.exit_code == 2 and "unknown picker option" in res.output


def test_simulate_report_regimes_and_merge(
    tiny_fsmol: Path, tiny_model: Path, tiny_policy: Path, tmp_path: Path
) -> None:
    base = [
        "simulate",
        "molecules",
        str(tiny_fsmol / "valid"),
        "--policy",
        str(tiny_policy),
        "--budget",
        "8",
        "--repeats",
        "1",
        "--model",
        str(tiny_model),
        "--compare",
        "greedy,greedy-random-start,ens,thompson,random",
    ]
    a, b = tmp_path / "a_f0.1", tmp_path / "b"
    res = runner.invoke(app, [*base, "--report", str(a), "--regimes", "f0.1-batch1,f0.1-batch8"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--report", str(b), "--regimes", "f1-batch1"])
    assert res.exit_code == 0, res.output
    ja = json.loads((tmp_path / "a_f0.1.json").read_text())
    r8 = ja["regimes"]["f0.1-batch8"]
    assert r8["batch"] == 8 and len(ja["results"]["f0.1-batch8"]["tiny-policy"]["curve"]) == 1
    best = r8["best_baseline"]
    assert r8["mean_hits"][best] == max(v for k, v in r8["mean_hits"].items() if k != "tiny-policy")
    assert r8["vs_best"] == r8["paired"][best]
    assert ja["results"]["f0.1-batch1"]["greedy"]["options"] == {"cold_start": "far"}
    out = tmp_path / "merged"
    res = runner.invoke(
        app, ["simulate", "merge", str(out), str(tmp_path / "a_f0.1.json"), str(b) + ".json"]
    )
    assert res.exit_code == 0, res.output
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert list(merged["regimes"]) == ["f0.1-batch1", "f1-batch1", "f0.1-batch8"]
    md = (tmp_path / "merged.md").read_text()
    assert md.count("tiny-policy − best baseline") == 3
    assert (tmp_path / "merged.png").stat().st_size > 1000
    res = runner.invoke(app, ["simulate", "merge", str(out), str(b) + ".json", str(b) + ".json"])
    assert res.exit_code == 2 and "two of the reports" in res.output
    # another policy on the same pools joins the comparison without re-running the baselines
    other = [*base[:4], "knn", *base[5:-1], "random"]
    c = tmp_path / "c"
    res = runner.invoke(app, [*other, "--report", str(c), "--regimes", "f1-batch1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        ["simulate", "merge", str(out), str(b) + ".json", str(c) + ".json"] + ["--main", "knn"],
    )
    assert res.exit_code == 0, res.output
    merged = json.loads((tmp_path / "merged.json").read_text())
    r1 = merged["regimes"]["f1-batch1"]
    assert merged["main"] == "knn" and "tiny-policy" in r1["paired"]
    jb = json.loads((Path(str(b) + ".json")).read_text())["results"]["f1-batch1"]
    assert r1["mean_hits"]["tiny-policy"] == round(jb["tiny-policy"]["mean_hits"], 4)
    assert r1["best_baseline"] != "knn"
    # other pools (another seed) are refused, by regime and field
    d = tmp_path / "d"
    res = runner.invoke(app, [*other, "--seed", "1", "--report", str(d), "--regimes", "f1-batch1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["simulate", "merge", str(out), str(b) + ".json", str(d) + ".json"])
    assert res.exit_code == 2 and "f1-batch1" in res.output and "seed" in res.output
    # a file that is not a report is refused by name, not with a traceback
    (tmp_path / "not_a_report.json").write_text('{"a": 1}')
    res = runner.invoke(app, ["simulate", "merge", str(out), str(tmp_path / "not_a_report.json")])
    assert res.exit_code == 2 and "not_a_report.json" in res.output and "missing main" in res.output


def test_train_policy_holds_out_the_simulate_train_slice(
    tiny_fsmol: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """``holdout_slice`` keeps exactly the files ``simulate --train-slice`` draws out of training;
    an activity prior fitted without that slice becomes a frozen feature of the policy."""
    import json

    import torch

    from metascreen.domains.errors import ConfigError
    from metascreen.domains.molecules.load import find_task_files
    from metascreen.models.workflows.policy import (
        fit_activity_prior,
        train_policy_model,
        train_slice_files,
    )

    torch.set_num_threads(1)
    prior = tmp_path / "prior.json"
    fit_activity_prior(
        tiny_fsmol / "train", prior, tiny_model, 0.5, 3, cache_dir=None, workers=1, progress=False
    )
    # a prior that has seen the selection slice is refused before any training
    leaky = json.loads(prior.read_text())
    leaky["training_data"]["slice_seed"] = 4
    (tmp_path / "leaky.json").write_text(json.dumps(leaky))
    with pytest.raises(ConfigError, match="leaky.json.*selection slice"):
        train_policy_model(
            tiny_fsmol,
            tmp_path / "leaky-policy",
            {"prior_file": str(tmp_path / "leaky.json")},
            model_dir=tiny_model,
            cache_dir=None,
            holdout_slice=0.5,
            slice_seed=3,
        )
    assert not (tmp_path / "leaky-policy").exists()
    out = train_policy_model(
        tiny_fsmol,
        tmp_path / "held-policy",
        {"d_model": 16, "heads": 2, "prior_file": str(prior)},
        {
            "warm_steps": 4,
            "rl_steps": 0,
            "pools_per_step": 2,
            "budget": 8,
            "eval_every": 4,
            "warmup_steps": 0,
            "device": "cpu",
        },
        model_dir=tiny_model,
        cache_dir=None,
        run_dir=tmp_path / "run",
        eval_repeats=1,
        workers=1,
        progress=False,
        holdout_slice=0.5,
        slice_seed=3,
        slice_min_task_size=1,
    )
    meta = json.loads((out / "metadata.json").read_text())
    held = meta["training_data"]["held_out_slice"]
    # the checks during training read the slice, not valid; valid is read once at the end
    assert meta["selection"]["split"] == "train slice" and meta["selection"]["n_tasks"] > 0
    assert meta["trained_on"]["device"] == "cpu" and meta["trained_on"]["requested"] == "cpu"
    assert "best_train_slice_hits" in meta["metrics"]["train"]
    assert set(meta["metrics"]["selection"]) == {"0.1", "1.0"}
    assert set(meta["metrics"]["valid"]) == {"0.1", "1.0"}
    sel = meta["metrics"]["selection"]["0.1"]
    assert (
        sel["n_tasks"] == meta["selection"]["n_tasks"]
        and "--train-slice 0.5" in sel["measured_with"]
    )
    train_dir = tiny_fsmol / "train"
    want = sorted(f.name for f in train_slice_files(train_dir, 0.5, 3))
    assert held["task_files"] == want and held["slice_seed"] == 3
    n_all = len(find_task_files(train_dir))
    assert 0 < len(want) < n_all
    assert meta["training_data"]["n_train_tasks"] <= n_all - len(want)
    # the prior is recorded and frozen into the policy's weights (and so into policy.onnx)
    assert meta["prior"]["file"] == str(prior) and len(meta["prior"]["sha256"]) == 64
    assert json.loads((out / "config.json").read_text())["policy"]["prior"] is True
    import gzip
    import io

    with gzip.open(out / "weights.pt.gz") as fh:
        state = torch.load(io.BytesIO(fh.read()), weights_only=True)
    doc = json.loads(prior.read_text())
    assert torch.allclose(state["policy.prior_w"].float(), torch.tensor(doc["weights"]))
    assert float(state["policy.prior_b"]) == pytest.approx(doc["bias"])


def test_train_policy_passes_the_selection_options(
    tiny_fsmol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--check-repeats and the slice options reach the training function as given."""
    from metascreen.models.workflows import policy as workflow

    seen: dict = {}

    def fake(data_dir, out, policy_cfg, train_cfg, *args, **kwargs):
        seen.update(train_cfg=train_cfg, policy_cfg=policy_cfg, **kwargs)
        out.mkdir(parents=True)
        (out / "metadata.json").write_text(json.dumps({"metrics": {}}))
        return out

    monkeypatch.setattr(workflow, "train_policy_model", fake)
    args = ["train", "policy", str(tiny_fsmol), "--out", str(tmp_path / "p")]
    opts = ["--check-repeats", "4", "--holdout-slice", "0.2", "--slice-seed", "5", "--workers", "3"]
    prior = ["--prior", str(tmp_path / "p.json")]
    res = runner.invoke(
        app,
        [*args, *opts, "--slice-min-task-size", "64", *prior, "--anchor", "--aux-bce", "0"],
    )
    assert res.exit_code == 0, res.output
    assert seen["policy_cfg"]["prior_file"] == str(tmp_path / "p.json")
    assert seen["policy_cfg"]["anchor"] is True and seen["train_cfg"]["aux_bce"] == 0
    assert seen["train_cfg"]["valid_repeats"] == 4 and seen["workers"] == 3
    assert (seen["holdout_slice"], seen["slice_seed"], seen["slice_min_task_size"]) == (0.2, 5, 64)
    res = runner.invoke(app, [*args, "--holdout-slice", "1"])
    assert res.exit_code == 2 and "must be in (0, 1)" in res.output
    # the anchor is greedy-prior's score: without the prior or the head it is refused up front
    for extra in ([], [*prior, "--no-predictor-head"], [*prior, "--no-history"]):
        res = runner.invoke(app, [*args, "--anchor", *extra])
        assert res.exit_code == 2 and "'--anchor'" in res.output and "needs --prior" in res.output
