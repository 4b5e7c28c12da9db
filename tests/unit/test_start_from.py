"""``train --init-from``: which weights each member starts from (``start_from``)."""

from __future__ import annotations

import pytest
import torch

from metascreen.domains.errors import ConfigError
from metascreen.models.learners.ensemble import EnsembleLearner
from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.nn.encoders import EncoderConfig
from metascreen.models.workflows.molecules import start_from

pytestmark = pytest.mark.unit
CFG = LearnerConfig(learner="multihead", encoder=EncoderConfig(hidden=(16,), out_dim=8))


def _ensemble(seed: int, n: int = 2, cfg: LearnerConfig = CFG) -> EnsembleLearner:
    torch.manual_seed(seed)
    return EnsembleLearner([build_learner(cfg, 12) for _ in range(n)])


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_member_k_starts_from_member_k_head_included() -> None:
    src, dst = _ensemble(0), _ensemble(1)
    with torch.no_grad():
        for m in src.members:  # heads differ from a fresh learner's
            for name, p in m.named_parameters():
                if "encoder." not in name:
                    p.add_(0.5)
    start_from(dst, src.state_dict(), "src")
    assert _same(dst.state_dict(), src.state_dict())


def test_a_single_model_seeds_every_member() -> None:
    src = build_learner(CFG, 12)
    dst = _ensemble(2)
    start_from(dst, src.state_dict(), "src")
    for m in dst.members:
        assert _same(m.state_dict(), src.state_dict())


def test_an_encoder_that_does_not_fit_is_refused() -> None:
    other = LearnerConfig(learner="multihead", encoder=EncoderConfig(hidden=(32,), out_dim=8))
    with pytest.raises(ConfigError, match="no encoder weights"):
        start_from(_ensemble(0), _ensemble(1, cfg=other).state_dict(), "src")
