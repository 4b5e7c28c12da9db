"""The layout's import contracts (pyproject ``[tool.importlinter]``), checked by ``lint-imports``.

Layers pipelines > models > domains; prefect only in pipelines/; domains/ and the serving-side
models/ packages never import torch or torch_geometric; nn/learners/training never import RDKit;
the CLI verb modules never import each other. What a module loads at import time is checked by
``test_module_imports.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import metascreen

pytestmark = pytest.mark.unit

ROOT = Path(metascreen.__file__).resolve().parent


def test_import_linter_contracts_hold() -> None:
    pytest.importorskip("importlinter")
    exe = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run(
        [str(exe), "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout
