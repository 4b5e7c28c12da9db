"""GPU paths: run where CUDA is present (``pytest -m gpu``); skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metascreen.domains.episodes import Task
from metascreen.models.encoders import EncoderConfig
from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.train import TrainConfig, meta_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_meta_train_on_cuda_with_amp(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 12)).astype(np.float32)
    tasks = [
        Task(
            f"T{t}",
            np.arange(t * 40, t * 40 + 40),
            (x[t * 40 : t * 40 + 40, t % 4] > 0).astype(np.float32),
        )
        for t in range(20)
    ]
    learner = build_learner(LearnerConfig(encoder=EncoderConfig(hidden=(32,), out_dim=16)), 12)
    cfg = TrainConfig(
        steps=60,
        tasks_per_step=8,
        support_sizes=(8,),
        query_size=16,
        lr=3e-3,
        eval_every=30,
        device="cuda",
        amp=True,
    )
    res = meta_train(learner, tasks[:16], x, tasks[16:], x, cfg, tmp_path, progress=False)
    assert next(learner.parameters()).device.type == "cuda"
    assert res.best_score > 0.1


def test_onnxruntime_cuda_provider_is_used() -> None:
    import onnxruntime as ort

    from metascreen.models.serving import available_providers

    assert "CUDAExecutionProvider" in ort.get_available_providers()
    assert available_providers("auto")[0] == "CUDAExecutionProvider"


def test_policy_trains_on_cuda_with_amp(tmp_path) -> None:
    from metascreen.models.policy import (
        PolicyConfig,
        PolicyTrainConfig,
        ScreeningPolicy,
        train_policy,
    )

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(1200, 16)).astype(np.float32)
    tasks = [
        Task(
            f"T{t}",
            np.arange(t * 60, t * 60 + 60),
            (emb[t * 60 : t * 60 + 60, t % 4] > 0.3).astype(np.float32),
        )
        for t in range(20)
    ]
    pol = ScreeningPolicy(16, PolicyConfig(d_model=16, heads=2))
    cfg = PolicyTrainConfig(
        warm_steps=20,
        rl_steps=4,
        pools_per_step=4,
        rl_pools_per_step=2,
        budget=8,
        max_pool=48,
        eval_every=12,
        valid_repeats=1,
        device="cuda",
        amp=True,
        warmup_steps=0,
    )
    res = train_policy(pol, emb, tasks[:16], emb, tasks[16:], cfg, tmp_path, progress=False)
    assert res.steps_done == 24 and np.isfinite(res.best_score)
