"""What the ``metascreen`` commands share: logging set-up, the error wrapper, progress, output.

The verb modules (``prepare``, ``train``, ``evaluate``, ``score``, ``simulate``, ``ops``, ``demo``,
``export``) import only this module; ``main`` assembles them into the app.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from typer._click import exceptions as click_exc  # typer vendors its own click
from typer.core import TyperGroup

from metascreen.domains.errors import ConfigError, MetascreenError, translate_error

T = TypeVar("T")
logger = logging.getLogger("metascreen.cli")


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is now (not the stream at set-up, which may be closed)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log to stderr at the level ``-v``/``-q`` ask for; quiet Prefect unless ``-v``."""
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("metascreen").setLevel(level)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's temporary API server gets 20 s to start by default; on a loaded 2-core machine
    # it can take longer, and the command then died with "Timed out while attempting to connect
    # to ephemeral Prefect API server". A user's own setting still wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING" if verbose == 0 else "INFO")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "metascreen")
    if quiet:
        os.environ["METASCREEN_NO_PROGRESS"] = "1"


def progress_enabled() -> bool:
    """Whether to show progress bars: not with ``-q`` and only on a terminal."""
    return os.environ.get("METASCREEN_NO_PROGRESS") != "1" and sys.stderr.isatty()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that cleanup (``finally``, pools) runs as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _snapshot(paths: Sequence[Path]) -> dict[Path, tuple[int, int] | None]:
    out: dict[Path, tuple[int, int] | None] = {}
    for p in paths:
        try:
            st = Path(p).stat()
            out[Path(p)] = (st.st_ino, st.st_mtime_ns)
        except OSError:
            out[Path(p)] = None
    return out


def _remove_changed(before: dict[Path, tuple[int, int] | None]) -> None:
    """Delete the outputs a failed run created or replaced: nothing it leaves looks complete."""
    for path, state in before.items():
        if _snapshot([path])[path] not in (None, state):
            path.unlink(missing_ok=True)
            logger.info("removed %s written by the failed run", path)


def run(fn: Callable[[], T], outputs: Sequence[Path] = (), lock: Path | None = None) -> T:
    """Run a command body; expected errors become one ``error:`` line on stderr and exit code 2.

    ``outputs`` are the files the command writes: on any failure or interruption the ones this
    run created or replaced are removed. ``lock`` (an output file) is locked for the run, so a
    second run writing the same file refuses instead of interleaving with the first. SIGTERM is
    handled like Ctrl-C (cleanup runs, worker pools are terminated) and exits 143.
    """
    from pydantic import ValidationError

    before = _snapshot(outputs)
    try:
        with _sigterm_as_exception(), _output_lock(lock):
            try:
                return fn()
            except BaseException:
                _remove_changed(before)
                raise
    except MetascreenError as err:
        _fail(str(err))
    except ValidationError as err:  # a configuration built from the command's options
        bad = "; ".join(
            f"{_option_name(e['loc']) or '.'.join(str(x) for x in e['loc'])}: {e['msg']}"
            for e in err.errors()
        )
        _fail(f"invalid {err.title} option(s): {bad}")
    except Terminated:
        typer.echo("terminated", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, click_exc.ClickException):
        raise
    except Exception as err:  # the backstop: no command ends in a traceback
        logger.debug("unexpected error", exc_info=True)
        translated = translate_error(err)
        if translated is not None:
            _fail(str(translated))
        _fail(
            f"unexpected {type(err).__name__}: {err} (a bug: please report it; "
            "-vv logs the traceback)",
            code=1,
        )


def _option_name(loc: tuple[int | str, ...]) -> str | None:
    """``'--learner'`` for a config field the running command has an option of that name for."""
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None or not loc:
        return None
    flag = "--" + str(loc[-1]).replace("_", "-")
    opts = {o for p in ctx.command.params for o in p.opts}
    return f"'{flag}'" if flag in opts else None


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code) from None


@contextlib.contextmanager
def _output_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    from metascreen.domains.io import OutputBusyError, exclusive_lock

    try:
        with exclusive_lock(Path(path)):
            yield
    except OutputBusyError as err:
        raise ConfigError(str(err)) from None


def check_options(*checks: tuple[bool, str, str]) -> None:
    """Checks typer's ``min``/``max`` cannot express (open bounds, one option against another),
    run before any work: ``(ok, "--batch", "8 is larger than --budget 4")``.

    Raises:
        typer.BadParameter: for the first failed check, naming its option as typed.
    """
    for ok, option, message in checks:
        if not ok:
            raise bad_option(option, message)


class CliGroup(TyperGroup):
    """The app's group: option and usage errors print as one ``error:`` line and exit 2.

    Typer's default draws a box; scripts and the robustness tests read one line that names the
    option as typed (``--support-size``).
    """

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, standalone_mode: bool = True, **kwargs: Any
    ) -> Any:
        try:
            rv = super().main(args, standalone_mode=False, **kwargs)
        except click_exc.NoArgsIsHelpError as err:
            err.show()
            code = err.exit_code
        except click_exc.ClickException as err:
            msg = err.format_message()
            if isinstance(err, click_exc.UsageError) and err.ctx is not None:
                msg = f"{msg} (see '{err.ctx.command_path} --help')"
            typer.echo(f"error: {msg}", err=True)
            code = 2
        except typer.Abort:
            typer.echo("interrupted", err=True)
            code = 130
        else:
            code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def write_json(path: Path | None, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` (atomically) and say so; nothing when ``path`` is None."""
    if path is not None:
        from metascreen.domains.io import atomic_write_json

        atomic_write_json(path, obj)
        typer.echo(f"wrote {path}")


def command_line() -> str:
    """This invocation as a shell command (``metascreen train …``), recorded in artifacts."""
    return shlex.join(["metascreen", *sys.argv[1:]])


def int_list(text: str, option: str = "", minimum: int = 1) -> tuple[int, ...]:
    """A comma-separated option such as ``16,32,64`` as integers (each at least ``minimum``).

    Raises:
        typer.BadParameter: naming ``option`` (printed as one ``error:`` line, exit 2).
    """
    try:
        out = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise bad_option(option, f"{text!r} is not a comma-separated list of integers") from None
    if any(v < minimum for v in out):
        raise bad_option(option, f"{text!r}: every value must be at least {minimum}")
    return out


def bad_option(option: str, message: str) -> typer.BadParameter:
    """The error for an option value (``error: Invalid value for '--batch': …``, exit 2)."""
    return typer.BadParameter(message, param_hint=f"'{option}'" if option else None)


def not_an_input(output: Path, *inputs: Path | None) -> tuple[bool, str, str]:
    """The ``check_options`` entry refusing an ``--output`` that is one of the inputs."""
    same = {Path(p).resolve() for p in inputs if p is not None}
    return (Path(output).resolve() not in same, "--output", f"{output} is also an input")


SEED_MAX = 2**32 - 1
"""numpy seeds are unsigned 32-bit integers."""

Device = Literal["auto", "cpu", "cuda"]
"""``--device`` values (onnxruntime / torch)."""

# The seeded slice of train task files that selection reads (domains.molecules.load.slice_task_files):
# trainers hold it out (--holdout-slice), evaluate/simulate/bench read exactly it (--train-slice).
TrainSlice = Annotated[
    float | None,
    typer.Option(
        help="read only this seeded fraction of the task files (the slice 'train molecules|policy "
        "--holdout-slice F --slice-seed S' holds out)",
        min=0.0,
        max=1.0,
    ),
]
HoldoutSlice = Annotated[
    float | None,
    typer.Option(
        help="hold this seeded fraction of the train task files out of training and select on "
        "it; valid is then read once, for the final figures (the slice 'evaluate|simulate "
        "--train-slice F --slice-seed S' reads)",
        min=0.0,
        max=1.0,
    ),
]
SliceSeed = Annotated[int, typer.Option(help="seed of the slice draw", min=0, max=SEED_MAX)]

Workers = Annotated[
    int, typer.Option(help="featurizer processes for loading the task files", min=1, max=256)
]
"""``--workers`` of the commands that load and featurize FS-Mol task folders."""


def slice_check(fraction: float | None, option: str, whole: bool) -> tuple[bool, str, str]:
    """``check_options`` entry for a slice fraction: (0, 1] when the whole set may be read
    (``whole``), (0, 1) when some files must stay for training."""
    if whole:
        return fraction is None or fraction > 0, option, f"{fraction} must be in (0, 1]"
    return fraction is None or 0 < fraction < 1, option, f"{fraction} must be in (0, 1)"
