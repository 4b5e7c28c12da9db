"""Plumbing every workflow shares: run folders and the command line recorded in metadata."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from metascreen.models.serving.artifact import utc_now

# where featurized task sets are cached by content hash (relative to the working directory)
DEFAULT_CACHE_DIR = Path(".cache/metascreen")


def run_folder(run_dir: Path | None, *name: object) -> Path:
    """``run_dir``, or ``runs/<name parts joined by __>__<UTC stamp>``; created if missing.

    Example: ``run_folder(None, "molecules", "protonet", "seed0")`` →
    ``runs/molecules__protonet__seed0__20261127T160000Z``.
    """
    if run_dir is None:
        stamp = utc_now().replace(":", "").replace("-", "")
        run_dir = Path("runs") / "__".join([*(str(n) for n in name), stamp])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def command_line(command: str | None = None, argv: list[str] | None = None) -> str:
    """The command to record in an artifact: ``command`` if given, else this process's argv.

    A CLI passes ``metascreen`` plus its arguments; a library call records ``sys.argv``.
    """
    if command:
        return command
    return shlex.join(sys.argv if argv is None else argv)
