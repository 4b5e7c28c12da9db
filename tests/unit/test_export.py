from __future__ import annotations

import pytest
import torch

from metascreen.models.encoders import EncoderConfig
from metascreen.models.export import ExportError, check_parity, export_onnx
from metascreen.models.learners.registry import LearnerConfig, build_learner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["protonet", "maml", "matching", "probe"])
def test_onnx_parity_at_new_shapes(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    learner = build_learner(
        LearnerConfig(learner=name, encoder=EncoderConfig(hidden=(32,), out_dim=16)), 40
    )
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
