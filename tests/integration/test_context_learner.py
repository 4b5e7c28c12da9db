"""The ``context`` learner end to end: CLI options → artifact → onnxruntime scoring and embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metascreen.pipelines.cli.main import app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def context_model(tiny_fsmol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ctx") / "m"
    args = ["train", "molecules", str(tiny_fsmol), "--learner", "context"]
    args += ["--context-memory", "8", "--context-dim", "4", "--input-dropout", "0.2"]
    args += ["--descriptors", "none", "--steps", "8", "--tasks-per-step", "2"]
    args += ["--support-sizes", "8", "--eval-every", "4", "--hidden", "32", "--out-dim", "16"]
    args += ["--out", str(out), "--run-dir", str(out.parent / "run"), "--workers", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def test_context_options_reach_the_artifact(context_model: Path) -> None:
    cfg = json.loads((context_model / "config.json").read_text())["learner"]
    assert cfg["learner"] == "context"
    assert (cfg["context_memory"], cfg["context_dim"]) == (8, 4)
    assert cfg["encoder"]["input_dropout"] == 0.2


def test_context_model_scores_each_molecule_independently(
    context_model: Path, tiny_fsmol: Path
) -> None:
    import torch

    from metascreen.domains.molecules.load import load_fsmol_dir
    from metascreen.models.learners.registry import LearnerConfig, build_learner
    from metascreen.models.serving.artifact import read_artifact
    from metascreen.models.serving.policy import PredictorEmbedder
    from metascreen.models.training.export import load_weights
    from metascreen.pipelines.api import FewShotClassifier

    ts = load_fsmol_dir(tiny_fsmol / "train")
    task = max(ts.tasks, key=len)
    smiles = [ts.items[i] for i in task.item_idx]
    y = task.labels.astype(int)
    support = np.r_[np.flatnonzero(y == 1)[:4], np.flatnonzero(y == 0)[:4]]
    rest = np.setdiff1d(np.arange(len(smiles)), support)[:12]
    clf = FewShotClassifier(model=context_model).fit(
        [smiles[i] for i in support], y[support].tolist()
    )
    together = clf.predict_proba([smiles[i] for i in rest])[:, 1]
    alone = np.array([clf.predict_proba([smiles[i]])[0, 1] for i in rest])
    assert np.isfinite(together).all() and together.std() > 0
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)

    # greedy's cold start cuts the encoder out of this graph too (the context stage is after it)
    info = read_artifact(context_model)
    cfg = json.loads((context_model / "config.json").read_text())
    dim = clf.support_x_.shape[1]
    x = np.random.default_rng(0).random((5, dim), np.float32)
    learner = build_learner(LearnerConfig.model_validate(cfg["learner"]), x.shape[1])
    learner.load_state_dict(load_weights(context_model, info.metadata))
    with torch.no_grad():
        want = learner.eval().encoder(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(PredictorEmbedder(info).embed(x), want, rtol=1e-4, atol=1e-4)


def test_context_refs_are_training_molecules_carried_in_the_artifact(
    tiny_fsmol: Path, tmp_path: Path
) -> None:
    from metascreen.domains.molecules.featurize import MoleculeFeaturizer
    from metascreen.domains.molecules.load import load_fsmol_dir
    from metascreen.models.serving.artifact import read_artifact
    from metascreen.models.training.export import load_weights
    from metascreen.pipelines.api import FewShotClassifier

    out = tmp_path / "m"
    args = ["train", "molecules", str(tiny_fsmol), "--learner", "context", "--context-refs", "6"]
    args += ["--context-dim", "4", "--descriptors", "none", "--steps", "4", "--tasks-per-step", "2"]
    args += ["--support-sizes", "8", "--eval-every", "4", "--hidden", "32", "--out-dim", "16"]
    args += ["--out", str(out), "--run-dir", str(tmp_path / "run"), "--workers", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["learner"]["context_refs"] == 6

    info = read_artifact(out)
    refs = load_weights(out, info.metadata)["ref_x"].float().numpy()
    meta = info.metadata["featurizer"]
    featurizer = MoleculeFeaturizer.from_spec(meta["spec"], meta["hash"])
    ts = load_fsmol_dir(tiny_fsmol / "train")
    x = featurizer.transform_smiles(ts.items, workers=1, progress=False)
    # every reference is the feature row of a training molecule (float16 storage), none empty
    gap = np.abs(refs[:, None, :] - x[None, :, :]).max(-1).min(1)
    assert refs.shape == (6, x.shape[1]) and (np.abs(refs).sum(1) > 0).all()
    assert gap.max() < 1e-2

    task = max(ts.tasks, key=len)
    smiles = [ts.items[i] for i in task.item_idx]
    y = task.labels.astype(int)
    support = np.r_[np.flatnonzero(y == 1)[:4], np.flatnonzero(y == 0)[:4]]
    clf = FewShotClassifier(model=out).fit([smiles[i] for i in support], y[support].tolist())
    assert np.isfinite(clf.predict_proba(smiles[:5])).all()
