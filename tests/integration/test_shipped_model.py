"""The committed default model must keep loading, verifying and matching its torch weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metascreen.domains.molecules.featurize import parse_smiles
from metascreen.models.artifact import DEFAULT_MODEL_DIR
from metascreen.models.export import load_weights
from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.serving import OnnxPredictor
from tiny_data import make_smiles

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (DEFAULT_MODEL_DIR / "metadata.json").exists(), reason="no shipped model"
    ),
]


def test_shipped_model_verifies_and_matches_torch() -> None:
    pred = OnnxPredictor.load(DEFAULT_MODEL_DIR, device="cpu")  # sha256 + featurizer hash checks
    meta = pred.info.metadata
    assert meta["metrics"]["valid"]["16"]["n_tasks"] > 0
    for key in ("command", "seed", "training_data", "featurizer", "versions"):
        assert key in meta
    cfg = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    learner = build_learner(LearnerConfig.model_validate(cfg["learner"]), pred.featurizer.dim)
    learner.load_state_dict(load_weights(DEFAULT_MODEL_DIR, meta))
    learner.eval()
    rows = make_smiles(40, seed=5)
    x = pred.featurizer.transform([parse_smiles(s) for s, _ in rows])
    y = np.array([lab for _, lab in rows], np.float32)
    got = pred.logits(x[:13], y[:13], x[13:])
    with torch.no_grad():
        want = learner(
            torch.as_tensor(x[:13]), torch.as_tensor(y[:13]), torch.as_tensor(x[13:])
        ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
