"""Every module of metascreen.domains, .models and .pipelines imports on its own; serving-side
packages (``TORCH_FREE``) load neither torch nor torch_geometric when imported.

Each module is imported first thing among metascreen's modules, so an import cycle or a module
that only works after another one was imported (what the old ``pipelines/cli*.py`` did) fails here.
The ``TORCH_FREE`` modules get a fresh interpreter each (what they must not load is checked
there); the others are imported in processes forked from a ``multiprocessing`` fork server that
preloaded the third-party libraries once (``import_probe.PRELOAD``), one process per module, so
the ~50 torch-side modules do not each pay for importing torch and prefect again.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from import_probe import PRELOAD, import_alone

pytestmark = pytest.mark.integration  # ~100 imports: fresh interpreters and forked processes

PACKAGES = ("metascreen.domains", "metascreen.models", "metascreen.pipelines")


def _raise(name: str) -> None:
    raise ImportError(f"cannot import package {name} while listing its modules")


def _all_modules() -> list[str]:
    names: list[str] = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"{pkg_name}.", _raise)]
    return sorted(names)


MODULES = _all_modules()


# serving / orchestration packages: importing any of their modules must not load torch or PyG
TORCH_FREE = (
    "metascreen.domains",
    "metascreen.models.evaluation",
    "metascreen.models.features",
    "metascreen.models.registry",
    "metascreen.models.screening",
    "metascreen.models.serving",
    "metascreen.models.workflows",
)
_CHECK = (
    "import sys; import {module}; "
    "heavy = [m for m in ('torch', 'torch_geometric') if m in sys.modules]; "
    "sys.exit(f'{module} loaded {{heavy}} at import' if heavy and {strict} else 0)"
)


def _import_alone(module: str) -> tuple[int, str]:
    strict = module.startswith(TORCH_FREE)
    out = subprocess.run(
        [sys.executable, "-c", _CHECK.format(module=module, strict=strict)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return out.returncode, out.stderr[-3000:]


@pytest.fixture(scope="module")
def import_results(request: pytest.FixtureRequest) -> dict[str, tuple[int, str]]:
    """Import the modules of the tests selected in this session, each on its own."""
    wanted = [
        item.callspec.params["module"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_module_imports_on_its_own"
    ]
    strict = [m for m in wanted if m.startswith(TORCH_FREE)]
    others = [m for m in wanted if not m.startswith(TORCH_FREE)]
    workers = max(1, min(2, os.cpu_count() or 1))
    results: dict[str, tuple[int, str]] = {}
    if others:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        # maxtasksperchild=1: a fresh fork of the preloaded server for every module
        with ctx.Pool(workers, maxtasksperchild=1) as pool:
            results |= dict(zip(others, pool.map(import_alone, others, chunksize=1), strict=True))
    with ThreadPoolExecutor(max_workers=workers) as threads:
        results |= dict(zip(strict, threads.map(_import_alone, strict), strict=True))
    return results


def test_every_layer_is_listed() -> None:
    assert {"metascreen.pipelines.cli.main", "metascreen.pipelines.flows"} <= set(MODULES)
    assert any(m.startswith("metascreen.models.") for m in MODULES)
    assert any(m.startswith("metascreen.domains.") for m in MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(module: str, import_results: dict[str, tuple[int, str]]) -> None:
    returncode, stderr = import_results[module]
    assert returncode == 0, f"import {module} on its own failed:\n{stderr}"


def test_torch_free_packages_are_checked() -> None:
    assert sum(m.startswith(TORCH_FREE) for m in MODULES) > 30
    assert "metascreen.models.serving.molecules" in MODULES
