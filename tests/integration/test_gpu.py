"""GPU paths: run where CUDA is present (``pytest -m gpu``); skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metascreen.domains.episodes import Task
from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.nn.encoders import EncoderConfig
from metascreen.models.training.loop import TrainConfig, meta_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _has_onnxruntime_gpu() -> bool:
    from importlib import metadata

    try:
        metadata.version("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        return False
    return True


# the project installs onnxruntime-gpu; where only CPU onnxruntime is present (a bare CUDA image),
# the CUDA-provider tests say so instead of failing; with onnxruntime-gpu they must find CUDA
needs_ort_gpu = pytest.mark.skipif(
    not _has_onnxruntime_gpu(), reason="onnxruntime-gpu is not installed (CPU onnxruntime only)"
)


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
    from metascreen.models.training.seeding import device_info

    info = device_info("auto")
    assert info["device"] == "cuda" and info["bf16_autocast"] and info["name"]


@needs_ort_gpu
def test_onnxruntime_cuda_provider_is_used() -> None:
    import onnxruntime as ort

    from metascreen.models.serving.session import available_providers

    assert "CUDAExecutionProvider" in ort.get_available_providers()
    assert available_providers("auto")[0] == "CUDAExecutionProvider"


@pytest.mark.parametrize(
    "extra",
    [{}, {"rl_baseline": "greedy", "lr_schedule": "cosine", "ema_decay": 0.9}],
    ids=["value-baseline", "self-critical-ema"],
)
def test_policy_trains_on_cuda_with_amp(tmp_path, extra: dict) -> None:
    from metascreen.models.nn.policy import PolicyConfig, ScreeningPolicy
    from metascreen.models.training.policy import PolicyTrainConfig, train_policy

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
        **extra,
    )
    res = train_policy(pol, emb, tasks[:16], emb, tasks[16:], cfg, tmp_path, progress=False)
    assert res.steps_done == 24 and np.isfinite(res.best_score)


@needs_ort_gpu
def test_batch_scoring_on_the_cuda_provider(tiny_model, tmp_path) -> None:
    import pandas as pd

    from metascreen.models.serving.molecules import score_library
    from tiny_data import make_smiles

    rows = make_smiles(80, seed=1)
    pd.DataFrame(rows[:12], columns=["SMILES", "label"]).to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame({"SMILES": [s for s, _ in rows[12:]]}).to_csv(tmp_path / "l.csv", index=False)
    gpu = score_library(
        tiny_model, tmp_path / "s.csv", tmp_path / "l.csv", tmp_path / "g.parquet",
        device="cuda", progress=False,
    )  # fmt: skip
    cpu = score_library(
        tiny_model, tmp_path / "s.csv", tmp_path / "l.csv", tmp_path / "c.parquet",
        device="cpu", progress=False,
    )  # fmt: skip
    assert gpu.providers[0] == "CUDAExecutionProvider"
    a, b = pd.read_parquet(gpu.output), pd.read_parquet(cpu.output)
    np.testing.assert_allclose(a["logit"], b["logit"], rtol=1e-3, atol=1e-3)


@needs_ort_gpu
def test_dask_chunk_scoring_on_cuda(tiny_model, tmp_path) -> None:
    import pandas as pd

    from metascreen.models.serving import chunked
    from tiny_data import make_smiles

    rows = make_smiles(60, seed=2)
    pd.DataFrame(rows[:12], columns=["SMILES", "label"]).to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame({"SMILES": [s for s, _ in rows[12:]]}).to_csv(tmp_path / "l.csv", index=False)
    job = chunked.prepare_job(
        tiny_model, tmp_path / "s.csv", tmp_path / "l.csv", tmp_path / "o.parquet", 16,
        device="cuda",
    )  # fmt: skip
    df = pd.read_csv(tmp_path / "l.csv").assign(row=lambda d: range(len(d)))
    df = df[["row", "SMILES"]]
    out = chunked.score_chunk(job, 0, df)
    assert out["n_scored"] == 48
    predictor = chunked._predictor(job.model_dir, "cuda")
    assert predictor.session.get_providers()[0] == "CUDAExecutionProvider"


@needs_ort_gpu
def test_int8_model_runs_with_the_cuda_provider_requested() -> None:
    from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
    from metascreen.models.serving.molecules import OnnxPredictor

    int8 = DEFAULT_MODEL_DIR.parent / "molecules-default-int8"
    pred = OnnxPredictor.load(int8, device="cuda")
    d = pred.featurizer.dim
    rng = np.random.default_rng(0)
    sx = (rng.random((16, d)) < 0.05).astype(np.float32)
    sy = (np.arange(16) % 2).astype(np.float32)
    out = pred.logits(sx, sy, (rng.random((64, d)) < 0.05).astype(np.float32))
    assert out.shape == (64,) and np.isfinite(out).all()
