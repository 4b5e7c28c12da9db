"""An ensemble combined from separately trained runs is the ensemble ``train --ensemble`` trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from metascreen.domains.errors import ArtifactMismatchError, ConfigError
from metascreen.models.nn.encoders import EncoderConfig
from tiny_data import tiny_featurizer

pytestmark = pytest.mark.integration

# tiny_model's recipe (tests/integration/conftest.py), with another seed or as an ensemble
LEARNER = {"learner": "protonet", "encoder": EncoderConfig(hidden=(64,), out_dim=32).model_dump()}
TRAIN = {"steps": 30, "tasks_per_step": 4, "eval_every": 15, "device": "cpu"}


def _train(root: Path, out: Path, learner: dict, seed: int, **kwargs: object) -> Path:
    """tiny_model's recipe (``featurizer`` defaults to the tiny featurizer)."""
    from metascreen.models.workflows.molecules import train_model

    featurizer = kwargs.pop("featurizer", None) or tiny_featurizer(root)
    return train_model(
        root,
        out,
        learner,
        {**TRAIN, "seed": seed},
        featurizer=featurizer,  # type: ignore[arg-type]
        cache_dir=None,
        run_dir=out.parent / f"{out.name}-run",
        eval_support_sizes=(8,),
        eval_repeats=2,
        workers=1,
        progress=False,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def seed1(tiny_fsmol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model's run with seed 1."""
    torch.set_num_threads(1)
    return _train(tiny_fsmol, tmp_path_factory.mktemp("seed1") / "seed1", LEARNER, 1)


def _other_learner(root: Path, tmp_path: Path) -> Path:
    """A short run of another learner configuration on the same data."""
    other = {"learner": "protonet", "encoder": EncoderConfig(hidden=(32,), out_dim=32).model_dump()}
    return _train(root, tmp_path / "other-learner", other, 0)


@pytest.fixture(scope="module")
def combined(tiny_model: Path, seed1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model and its seed-1 run, combined (the first member is tiny_model)."""
    from metascreen.models.workflows.molecules import combine_models

    return combine_models([tiny_model, seed1], tmp_path_factory.mktemp("ens") / "combined")


def test_combined_runs_equal_the_trained_ensemble(
    tiny_fsmol: Path, tiny_model: Path, seed1: Path, tmp_path: Path
) -> None:
    from metascreen.models.serving.molecules import OnnxPredictor
    from metascreen.models.training.export import load_weights
    from metascreen.models.workflows.molecules import combine_models

    torch.set_num_threads(1)
    # Every run here trains at one thread (sums reduce in another order at two), so seed 0 is
    # trained afresh rather than taken from tiny_model, whose thread count depends on test order.
    seed0 = _train(tiny_fsmol, tmp_path / "seed0", LEARNER, 0)
    trained = _train(tiny_fsmol, tmp_path / "ens", {**LEARNER, "ensemble_size": 2}, 0)
    combined = combine_models([seed0, seed1], tmp_path / "combined")

    meta = json.loads((combined / "metadata.json").read_text())
    assert [m["seed"] for m in meta["combined_from"]] == [0, 1]
    assert meta["learner"] == "ensemble-2xprotonet"
    a = load_weights(trained, json.loads((trained / "metadata.json").read_text()))
    b = load_weights(combined, meta)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    pa, pb = OnnxPredictor.load(trained, device="cpu"), OnnxPredictor.load(combined, device="cpu")
    x = np.random.default_rng(0).random((30, pa.featurizer.dim)).astype(np.float32)
    y = (np.arange(10) % 3 == 0).astype(np.float32)
    np.testing.assert_array_equal(pa.logits(x[:10], y, x[10:]), pb.logits(x[:10], y, x[10:]))

    with pytest.raises(ConfigError, match="at least two"):
        combine_models([tiny_model], tmp_path / "one")
    # an ensemble contributes its members: (seed0 + seed1) + seed1 is seed0 + seed1 + seed1
    nested = combine_models([combined, seed1], tmp_path / "nested")
    flat = combine_models([seed0, seed1, seed1], tmp_path / "flat")
    nested_meta = json.loads((nested / "metadata.json").read_text())
    assert nested_meta["learner"] == "ensemble-3xprotonet"
    assert [m["seed"] for m in nested_meta["combined_from"][0]["combined_from"]] == [0, 1]
    assert len(json.loads((nested / "config.json").read_text())["members_train"]) == 3
    c = load_weights(flat, json.loads((flat / "metadata.json").read_text()))
    n = load_weights(nested, nested_meta)
    assert c.keys() == n.keys()
    for k in c:
        torch.testing.assert_close(c[k], n[k], rtol=0, atol=0, msg=k)
    with pytest.raises(ConfigError, match="learner configuration differs"):
        combine_models([combined, _other_learner(tiny_fsmol, tmp_path)], tmp_path / "mixed")
    weightless = tmp_path / "int8-like"
    shutil.copytree(seed1, weightless)
    doc = json.loads((weightless / "metadata.json").read_text())
    del doc["weights"]
    (weightless / "metadata.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="no torch weights"):
        combine_models([tiny_model, weightless], tmp_path / "weightless")
    other = tmp_path / "other-featurizer"
    shutil.copytree(seed1, other)
    doc = json.loads((other / "metadata.json").read_text())
    doc["featurizer"]["hash"] = "0" * 64
    (other / "metadata.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactMismatchError, match="featurizer hash"):
        combine_models([tiny_model, other], tmp_path / "mismatch")
    assert not (tmp_path / "mismatch").exists()


def test_members_on_two_fingerprint_radii_combine_over_the_union_featurizer(
    tiny_fsmol: Path, seed1: Path, tmp_path: Path
) -> None:
    """An ECFP4 and an ECFP6 run average over one row holding both fingerprints: each member
    reads its own columns, so the ensemble scores what the members score on their own rows."""
    from dataclasses import replace

    from metascreen.domains.molecules.featurize import MoleculeFeaturizer, parse_smiles
    from metascreen.models.serving.molecules import OnnxPredictor
    from metascreen.models.serving.policy import PredictorEmbedder
    from metascreen.models.training.export import load_weights
    from metascreen.models.workflows.molecules import combine_models
    from tiny_data import make_smiles

    torch.set_num_threads(1)
    r3 = _train(
        tiny_fsmol,
        tmp_path / "r3",
        LEARNER,
        2,
        featurizer=replace(tiny_featurizer(tiny_fsmol), radius=3),
    )
    mixed = combine_models([seed1, r3], tmp_path / "mixed", weights_dtype="int8")
    meta = json.loads((mixed / "metadata.json").read_text())
    assert meta["featurizer"]["spec"]["params"]["extra_radii"] == [3]
    ranges = json.loads((mixed / "config.json").read_text())["learner"]["member_input_ranges"]
    assert ranges == [[[0, 512], [1024, 1027]], [[512, 1027]]]
    ens = OnnxPredictor.load(mixed, device="cpu")
    parts = [OnnxPredictor.load(d, device="cpu") for d in (seed1, r3)]
    assert ens.featurizer.dim == 2 * 512 + 3
    mols = [parse_smiles(s) for s, _ in make_smiles(40, seed=6)]
    y = (np.arange(10) % 3 == 0).astype(np.float32)
    x = ens.featurizer.transform(mols)
    probs = []
    for p in parts:
        xp = p.featurizer.transform(mols)
        probs.append(1 / (1 + np.exp(-p.logits(xp[:10], y, xp[10:]))))
    got = 1 / (1 + np.exp(-ens.logits(x[:10], y, x[10:])))
    # the members' weights are int8-rounded in the ensemble, so equal up to that rounding
    np.testing.assert_allclose(got, np.mean(probs, axis=0), atol=0.02)
    assert np.corrcoef(got, np.mean(probs, axis=0))[0, 1] > 0.999
    # the pickers embed with the first member's encoder, reading its own columns
    e_ens = PredictorEmbedder(ens.info, "cpu").embed(x)
    e_first = PredictorEmbedder(parts[0].info, "cpu").embed(parts[0].featurizer.transform(mols))
    assert e_ens.shape == e_first.shape
    assert np.corrcoef(e_ens.ravel(), e_first.ravel())[0, 1] > 0.999
    assert MoleculeFeaturizer.from_spec(meta["featurizer"]["spec"]).radii == (2, 3)
    with pytest.raises(ConfigError, match="several featurizers"):
        combine_models([mixed, seed1], tmp_path / "nested-mixed")

    # one command: train --ensemble 2 --member-radii 2,3 --seed 1 is the combine of both runs
    mixed16 = combine_models([seed1, r3], tmp_path / "mixed16")  # the runs' float16 storage
    trained = _train(
        tiny_fsmol, tmp_path / "trained", {**LEARNER, "ensemble_size": 2}, 1, member_radii=(2, 3)
    )
    a = load_weights(trained, json.loads((trained / "metadata.json").read_text()))
    b = load_weights(mixed16, json.loads((mixed16 / "metadata.json").read_text()))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert json.loads((trained / "config.json").read_text())["learner"]["member_input_ranges"] == (
        ranges
    )
    with pytest.raises(ConfigError, match="member radii for an ensemble of 2"):
        _train(tiny_fsmol, tmp_path / "bad", {**LEARNER, "ensemble_size": 2}, 0, member_radii=(2,))


def test_a_policy_on_an_ensemble_predictor_embeds_with_its_first_member(
    tiny_fsmol: Path, combined: Path, tiny_policy: Path, tmp_path: Path
) -> None:
    from metascreen.models.serving.policy import PolicyRunner
    from metascreen.models.workflows.policy import train_policy_model

    torch.set_num_threads(1)
    policy = train_policy_model(
        tiny_fsmol,
        tmp_path / "policy",
        {"d_model": 16, "heads": 2},
        {"warm_steps": 4, "rl_steps": 1, "pools_per_step": 2, "budget": 8, "eval_every": 4}
        | {"warmup_steps": 0, "device": "cpu"},
        model_dir=combined,
        cache_dir=None,
        run_dir=tmp_path / "run",
        eval_repeats=1,
        workers=1,
        progress=False,
    )
    a = PolicyRunner.load(policy, device="cpu")
    b = PolicyRunner.load(tiny_policy, device="cpu")  # trained on tiny_model, the first member
    x = np.random.default_rng(1).random((7, a.featurizer.dim)).astype(np.float32)
    emb = a.embed(x)
    assert emb.shape == (7, 32)  # the first member's encoder, not the ensemble's identity
    np.testing.assert_allclose(emb, b.embed(x), rtol=1e-5, atol=1e-6)


def test_init_from_an_ensemble_starts_from_its_first_member(
    tiny_fsmol: Path, tiny_model: Path, combined: Path, tmp_path: Path
) -> None:
    from metascreen.models.training.export import load_weights
    from metascreen.models.workflows.molecules import train_model

    torch.set_num_threads(1)
    probe = train_model(
        tiny_fsmol,
        tmp_path / "probe",
        {**LEARNER, "learner": "probe"},
        {**TRAIN, "seed": 0},
        init_from=combined,
        cache_dir=None,
        run_dir=tmp_path / "probe-run",
        eval_support_sizes=(8,),
        eval_repeats=1,
        workers=1,
        progress=False,
    )
    got = load_weights(probe, json.loads((probe / "metadata.json").read_text()))
    want = load_weights(tiny_model, json.loads((tiny_model / "metadata.json").read_text()))
    enc = [k for k in want if k.startswith("encoder.")]
    assert enc
    for k in enc:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)


def test_combine_records_the_ensembles_figures_on_the_members_slice_and_valid(
    tiny_fsmol: Path, tmp_path: Path
) -> None:
    """``models combine --data-dir`` measures the ensemble as train measures a model."""
    from typer.testing import CliRunner

    from metascreen.models.workflows.molecules import combine_models, split_holdout
    from metascreen.pipelines.cli.main import app

    torch.set_num_threads(1)
    held = {"holdout_slice": 0.4, "slice_seed": 1}
    a, b = (_train(tiny_fsmol, tmp_path / f"s{k}", LEARNER, k, **held) for k in (0, 1))
    out = tmp_path / "ens"
    res = CliRunner().invoke(
        app,
        ["models", "combine", str(a), str(b), "--out", str(out), "--data-dir", str(tiny_fsmol)]
        + ["--cache-dir", str(tmp_path / "cache"), "--workers", "1"],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metadata.json").read_text())["metrics"]
    slice_files = split_holdout(tiny_fsmol / "train", 0.4, 1)[1]
    sel, valid = metrics["selection"]["16"], metrics["valid"]["16"]
    assert 0 < sel["n_tasks"] <= len(slice_files) and sel["repeats"] == 3
    assert "--train-slice 0.4 --slice-seed 1 " in sel["measured_with"]
    assert valid["n_tasks"] == 3 and valid["repeats"] == 10
    assert "64" not in metrics["selection"]  # 48-row tasks serve no support of 64
    # the members' own figures (support 8, as they were trained) stay under combined_from
    meta = json.loads((out / "metadata.json").read_text())
    assert [m["metrics"]["selection"] for m in meta["combined_from"]] == [
        json.loads((d / "metadata.json").read_text())["metrics"]["selection"] for d in (a, b)
    ]
    assert set(meta["combined_from"][0]["metrics"]["selection"]) == {"8"}

    # a train folder whose slice is not the members' is refused before anything is written
    other = tmp_path / "other"
    shutil.copytree(tiny_fsmol, other)
    changed = other / "train" / slice_files[0].name
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="not the ones the models kept out"):
        combine_models([a, b], tmp_path / "mismatch", data_dir=other, cache_dir=None, workers=1)
    assert not (tmp_path / "mismatch").exists()
