"""Shared fixtures: tiny generated FS-Mol-format data (no network, no shared data needed)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Prefect must be configured before it is imported anywhere in the session.
_PREFECT_HOME = tempfile.mkdtemp(prefix="metascreen-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
# The suite runs in pytest-xdist workers (addopts: -n auto), one per core: one BLAS/OpenMP thread
# each (and in the CLIs they start), not one per core each. Set before torch is imported.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from tiny_data import make_smiles, write_task  # noqa: E402


@pytest.fixture(scope="session")
def tiny_fsmol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FS-Mol layout: train/ (6 tasks × 48, one with 2 invalid SMILES, one empty file) and valid/ (3 × 40)."""
    root = tmp_path_factory.mktemp("fsmol")
    for i in range(6):
        extra = (
            [
                json.dumps({"SMILES": "C1CC", "Property": "1.0"}),
                json.dumps({"SMILES": "", "Property": "0.0"}),
            ]
            if i == 0
            else None
        )
        write_task(root / "train" / f"CHEMBL9{i:03d}.jsonl.gz", make_smiles(48, seed=i), extra)
    write_task(root / "train" / "CHEMBL9999.jsonl.gz", [])
    for i in range(3):
        write_task(root / "valid" / f"CHEMBL8{i:03d}.jsonl.gz", make_smiles(40, seed=100 + i))
    return root


@pytest.fixture(scope="module")
def cached_cli() -> Iterator[None]:
    """typer rebuilds the click command on every ``CliRunner.invoke`` (~0.3 s); build it once.

    For modules that invoke the CLI hundreds of times (robustness, properties).
    """
    import typer.testing

    original = typer.testing._get_command
    cache: dict[int, Any] = {}

    def get(app: Any) -> Any:
        if id(app) not in cache:
            cache[id(app)] = original(app)
        return cache[id(app)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", get)
        yield
