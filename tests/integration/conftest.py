from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metascreen.models.nn.encoders import EncoderConfig
from tiny_data import tiny_featurizer


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One embedded Prefect backend for the whole session (~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_model(tiny_fsmol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small ProtoNet artifact trained on the tiny data (fingerprint-only featurizer for speed)."""
    from metascreen.models.workflows.molecules import train_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    return train_model(
        tiny_fsmol,
        out,
        {"learner": "protonet", "encoder": EncoderConfig(hidden=(64,), out_dim=32).model_dump()},
        {"steps": 30, "tasks_per_step": 4, "eval_every": 15, "device": "cpu"},
        featurizer=tiny_featurizer(tiny_fsmol),
        cache_dir=None,
        run_dir=out.parent / "run",
        eval_support_sizes=(8,),
        eval_repeats=2,
        workers=1,
        progress=False,
    )


@pytest.fixture(scope="session")
def tiny_policy(
    tiny_fsmol: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A small screening policy on the tiny model's frozen encoder (budget 8)."""
    import torch

    from metascreen.models.workflows.policy import train_policy_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("policies") / "tiny-policy"
    return train_policy_model(
        tiny_fsmol,
        out,
        {"d_model": 16, "heads": 2},
        {
            "warm_steps": 20,
            "rl_steps": 4,
            "pools_per_step": 4,
            "budget": 8,
            "eval_every": 10,
            "lr": 3e-3,
            "warmup_steps": 0,
            "device": "cpu",
        },
        model_dir=tiny_model,
        cache_dir=None,
        run_dir=out.parent / "run",
        eval_repeats=1,
        workers=1,
        progress=False,
    )
