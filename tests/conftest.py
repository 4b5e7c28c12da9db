"""Shared fixtures: tiny generated FS-Mol-format data (no network, no shared data needed)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

# Prefect must be configured before it is imported anywhere in the session.
_PREFECT_HOME = tempfile.mkdtemp(prefix="metascreen-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

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
