from __future__ import annotations

import pytest
import torch

from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.nn.encoders import EncoderConfig
from metascreen.models.training.export import ExportError, check_parity, export_onnx

pytestmark = pytest.mark.unit


def _wake_context(learner: torch.nn.Module) -> None:
    """Give a context stage's zero-initialised output projections weights, so it is not identity."""
    for name, p in learner.named_parameters():
        if "context." in name and ("_out." in name or "label_" in name):
            with torch.no_grad():
                p.normal_(0, 0.3)


@pytest.mark.parametrize(
    "name",
    [
        "protonet",
        "maml",
        "matching",
        "probe",
        "gp",
        "multihead",
        "gp:per-task",
        "multihead:per-task",
        "context",
    ],
)
def test_onnx_parity_at_new_shapes(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    learner_name, _, kernel = name.partition(":")
    learner = build_learner(
        LearnerConfig(
            learner=learner_name,  # type: ignore[arg-type]
            encoder=EncoderConfig(hidden=(32,), out_dim=16),
            gp_kernel=kernel or "global",  # type: ignore[arg-type]
        ),
        40,
    )
    _wake_context(learner)
    worst = export_onnx(
        learner, tmp_path / "m.onnx", 40
    )  # checks 3 shapes unlike the export example
    assert worst < 1e-4


def test_parity_check_catches_a_different_model(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = LearnerConfig(encoder=EncoderConfig(hidden=(32,), out_dim=16))
    a, b = build_learner(cfg, 40), build_learner(cfg, 40)
    export_onnx(a, tmp_path / "a.onnx", 40)
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(b.eval(), tmp_path / "a.onnx", 40)


def test_ensemble_exports_and_averages_probabilities(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = LearnerConfig(encoder=EncoderConfig(hidden=(16,), out_dim=8), ensemble_size=3)
    ens = build_learner(cfg, 20).eval()
    assert export_onnx(ens, tmp_path / "e.onnx", 20) < 1e-4
    sx, sy, qx = torch.rand(6, 20), torch.tensor([1.0, 0, 1, 0, 1, 0]), torch.rand(4, 20)
    with torch.no_grad():
        want = torch.stack([torch.sigmoid(m(sx, sy, qx)) for m in ens.members]).mean(0)
        torch.testing.assert_close(torch.sigmoid(ens(sx, sy, qx)), want, rtol=1e-4, atol=1e-5)
