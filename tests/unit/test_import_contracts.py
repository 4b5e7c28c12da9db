"""The layout's import contracts (pyproject ``[tool.importlinter]``) and what modules load."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import metascreen

pytestmark = pytest.mark.unit

ROOT = Path(metascreen.__file__).resolve().parent
# packages that serve or orchestrate: importing any of their modules must not load torch / PyG
TORCH_FREE = (
    "metascreen.domains",
    "metascreen.models.evaluation",
    "metascreen.models.features",
    "metascreen.models.registry",
    "metascreen.models.screening",
    "metascreen.models.serving",
    "metascreen.models.workflows",
)


def _modules(prefix: str) -> list[str]:
    """``prefix`` and every module below it (only empty package ``__init__``s are imported)."""
    pkg = importlib.import_module(prefix)
    return [prefix] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix + ".")]


def test_import_linter_contracts_hold() -> None:
    """``lint-imports`` (layers; prefect only in pipelines; torch-free and RDKit-free packages)."""
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


def test_torch_free_packages_load_no_torch_at_import() -> None:
    """Every module of the serving / orchestration packages imports without loading torch."""
    modules = sorted({m for prefix in TORCH_FREE for m in _modules(prefix)})
    assert "metascreen.models.serving.molecules" in modules
    code = textwrap.dedent(
        f"""
        import importlib, subprocess, sys
        bad = []
        for name in {modules!r}:
            out = subprocess.run(
                [sys.executable, "-c",
                 "import sys, importlib; importlib.import_module(%r); "
                 "print(sorted(m for m in ('torch', 'torch_geometric') if m in sys.modules))" % name],
                capture_output=True, text=True,
            )
            if out.returncode != 0 or out.stdout.strip() != "[]":
                bad.append((name, out.stdout.strip(), out.stderr.strip()[-300:]))
        print(bad)
        raise SystemExit(1 if bad else 0)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
