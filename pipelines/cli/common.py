"""What the ``metascreen`` commands share: logging set-up, the error wrapper, progress, output.

The verb modules (``prepare``, ``train``, ``evaluate``, ``score``, ``simulate``, ``ops``, ``demo``,
``export``) import only this module; ``main`` assembles them into the app.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from metascreen.domains.errors import MetascreenError

T = TypeVar("T")


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr at the level ``-v``/``-q`` ask for; quiet Prefect unless ``-v``."""
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("metascreen").setLevel(level)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING" if verbose == 0 else "INFO")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "metascreen")
    if quiet:
        os.environ["METASCREEN_NO_PROGRESS"] = "1"


def progress_enabled() -> bool:
    """Whether to show progress bars: not with ``-q`` and only on a terminal."""
    return os.environ.get("METASCREEN_NO_PROGRESS") != "1" and sys.stderr.isatty()


def run(fn: Callable[[], T]) -> T:
    """Run a command body; expected errors become one line on stderr and exit code 2."""
    from pydantic import ValidationError

    try:
        return fn()
    except MetascreenError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as err:  # a configuration built from the command's options
        bad = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        typer.echo(f"error: invalid {err.title} option(s): {bad}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def write_json(path: Path | None, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` (atomically) and say so; nothing when ``path`` is None."""
    if path is not None:
        from metascreen.domains.io import atomic_write_json

        atomic_write_json(path, obj)
        typer.echo(f"wrote {path}")


def command_line() -> str:
    """This invocation as a shell command (``metascreen train …``), recorded in artifacts."""
    return shlex.join(["metascreen", *sys.argv[1:]])


def int_list(text: str) -> tuple[int, ...]:
    """A comma-separated option such as ``16,32,64`` as integers."""
    return tuple(int(s) for s in text.split(","))
