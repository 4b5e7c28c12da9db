"""The ``metascreen`` app: the verb modules' commands and groups under one typer app.

``main()`` is the console-script entry point (``[project.scripts]`` in pyproject.toml).
"""

from __future__ import annotations

from typing import Annotated

import typer

from metascreen.pipelines.cli import demo, evaluate, export, ops, prepare, score, simulate, train
from metascreen.pipelines.cli.common import CliGroup, configure_logging

app = typer.Typer(
    cls=CliGroup,
    help="Few-shot, meta-learned screening: train, evaluate, export and score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="more logging (-v info, -vv debug)")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="errors only, no progress bars")
    ] = False,
) -> None:
    # No docstring: the app's help above is what ``metascreen --help`` shows.
    configure_logging(verbose, quiet)


# Help lists commands in this order, then the groups in theirs.
app.command()(demo.demo)
app.command()(export.export)
app.command()(score.propose)
app.command()(ops.serve)
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(score.app, name="score")
app.add_typer(prepare.app, name="prepare")
app.add_typer(simulate.app, name="simulate")
app.add_typer(ops.models_app, name="models")
app.add_typer(ops.bench_app, name="bench")


def main() -> None:
    """Console-script entry point: tag the run and start its watchdog, then run the command.

    The watchdog stops whatever the command started if the command is killed without a chance
    to stop it itself (SIGKILL); see ``metascreen.pipelines.watchdog``.
    """
    from metascreen.pipelines import watchdog

    watchdog.start()
    app()


if __name__ == "__main__":
    main()
