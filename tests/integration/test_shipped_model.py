"""The committed default model must keep loading, verifying and matching its torch weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metascreen.domains.molecules.featurize import parse_smiles
from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
from metascreen.models.serving.molecules import OnnxPredictor
from metascreen.models.training.export import load_weights
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


def test_shipped_policy_verifies_matches_torch_and_proposes(tmp_path) -> None:
    from metascreen.models.nn.policy import PolicyConfig, ScreeningPolicy
    from metascreen.models.serving.policy import DEFAULT_POLICY_DIR, PolicyRunner, propose
    from metascreen.models.training.export import policy_parity_cases

    if not (DEFAULT_POLICY_DIR / "metadata.json").exists():
        pytest.skip("no shipped policy")
    runner = PolicyRunner.load(DEFAULT_POLICY_DIR, device="cpu")  # both graphs' sha256 checked
    meta = runner.info.metadata
    assert meta["metrics"]["valid"]["0.1"]["n_tasks"] > 0
    # The policy carries the encoder of the predictor it was trained with; the baselines'
    # cold start embeds with the predictor they run (its own graph), whatever policy is shipped.
    from metascreen.models.serving.policy import predictor_embeddings

    source = meta["encoder_onnx"]["from_model_onnx_sha256"]
    shipped_meta = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())
    shipped = shipped_meta["onnx"]["sha256"]
    assert len(source) == 64
    # the predictor reads its own featurizer's rows (a union featurizer's are wider)
    pred_dim = int(shipped_meta["onnx"]["inputs"]["query_x"][1])
    x = np.random.default_rng(0).random((3, pred_dim)).astype(np.float32)
    emb = predictor_embeddings(DEFAULT_MODEL_DIR, x)
    assert emb is not None and emb.shape == (3, meta["embedding_dim"])
    if source == shipped:
        np.testing.assert_allclose(emb, runner.embed(x), rtol=1e-5, atol=1e-5)
    cfg = json.loads((DEFAULT_POLICY_DIR / "config.json").read_text())
    state = load_weights(DEFAULT_POLICY_DIR, meta)
    pol = ScreeningPolicy(meta["embedding_dim"], PolicyConfig.model_validate(cfg["policy"]))
    pol.load_state_dict(
        {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
    )
    pol.eval()
    case = policy_parity_cases(meta["embedding_dim"], seed=11)[1]
    names = [i.name for i in runner.graph.session.get_inputs()]
    got = runner.run({n: t.numpy() for n, t in zip(names, case, strict=True)})[0]
    with torch.no_grad():
        want = pol(*case)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the bundled support set as "assayed", the bundled library's first 300 rows as the pool
    import pandas as pd

    from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR as model_dir

    data = model_dir.parent.parent
    pool = tmp_path / "pool.csv"
    pd.read_csv(data / "library" / "library.csv").head(300).to_csv(pool, index=False)
    rep = propose(data / "library" / "support.csv", pool, tmp_path / "next.csv", k=8)
    assert rep.n_proposed == 8
    assert rep.n_pool_rows == rep.n_scored + rep.n_already_assayed + rep.n_pool_quarantined
