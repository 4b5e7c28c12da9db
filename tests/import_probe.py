"""Child side of ``test_module_imports``: import one module in a process that has not imported
any metascreen module (a fork of a server that preloaded only third-party libraries)."""

from __future__ import annotations

import importlib
import sys
import traceback

# Third-party libraries the torch-side modules import; the fork server imports them once, so each
# forked child pays only for metascreen's own modules.
PRELOAD = (
    "numpy",
    "pandas",
    "sklearn",
    "rdkit.Chem",
    "torch",
    "torch_geometric",
    "onnx",
    "onnxruntime",
    "prefect",
    "typer",
    "import_probe",
)


def import_alone(module: str) -> tuple[int, str]:
    """(0, "") when ``module`` imports first thing among metascreen's modules, else (1, traceback)."""
    already = sorted(m for m in sys.modules if m == "metascreen" or m.startswith("metascreen."))
    if already:
        return 1, f"metascreen modules were loaded before {module}: {already}"
    try:
        importlib.import_module(module)
    except BaseException:  # noqa: BLE001 — any failure is the finding, reported with its traceback
        return 1, traceback.format_exc()[-3000:]
    return 0, ""
