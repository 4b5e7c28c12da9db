"""``metascreen prepare molecules|movielens``: validate a task folder or rating data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from metascreen.pipelines.cli.common import run, write_json

app = typer.Typer(help="Validate and featurize a task folder.", no_args_is_help=True)


@app.command("molecules")
def prepare_molecules(
    data_dir: Annotated[Path, typer.Argument(help="folder of FS-Mol task files (*.jsonl.gz)")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the statistics as JSON")
    ] = None,
) -> None:
    """Check a task folder: tasks, rows, invalid SMILES excluded, files skipped."""
    from metascreen.pipelines.domain import prepare_stats

    stats = run(lambda: prepare_stats(str(data_dir)))
    typer.echo(json.dumps(stats, indent=2))
    write_json(json_out, stats)


@app.command("movielens")
def prepare_movielens(
    data_dir: Annotated[
        Path, typer.Argument(help="MovieLens 100K/1M folder or interactions table")
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the statistics as JSON")
    ] = None,
) -> None:
    """Check rating data: users, ratings, items, users with 13–100 ratings, rejected rows."""
    from metascreen.pipelines.domain import prepare_stats

    stats = run(lambda: prepare_stats(str(data_dir), domain="movielens"))
    typer.echo(json.dumps(stats, indent=2))
    write_json(json_out, stats)
