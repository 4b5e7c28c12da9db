"""``metascreen prepare molecules|movielens``: turn an activity table into FS-Mol task files, or
validate a task folder or rating data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from metascreen.pipelines.cli.common import SEED_MAX, bad_option, check_options, run, write_json

app = typer.Typer(
    help="Turn an activity table into task files, or validate a task folder.", no_args_is_help=True
)


ColumnOption = Annotated[str | None, typer.Option(help="column name (default: ChEMBL's)")]


def _pair(text: str, option: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise bad_option(option, f"{text!r} is not two comma-separated numbers") from None
    if not 0 <= lo <= hi <= 1:
        raise bad_option(option, f"{text!r}: need 0 <= low <= high <= 1")
    return lo, hi


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise bad_option("--fractions", f"{text!r}: need three non-negative numbers summing to 1")
    return parts[0], parts[1], parts[2]


def _is_table(path: Path) -> bool:
    """An activity table (or a missing path named like one), not FS-Mol task files."""
    from metascreen.domains.molecules.prepare_io import ACTIVITY_SUFFIXES

    if path.name.endswith(".jsonl.gz") or path.is_dir():
        return False
    return path.is_file() or path.suffix.lower() in ACTIVITY_SUFFIXES


@app.command("molecules")
def prepare_molecules(
    data: Annotated[
        Path,
        typer.Argument(
            help="an activity table (CSV/TSV/Parquet/Excel; ChEMBL web export or named columns) "
            "to turn into task files, or a folder of FS-Mol task files (*.jsonl.gz) to check"
        ),
    ],
    out: Annotated[
        Path | None, typer.Option(help="with a table: the new folder for the task files")
    ] = None,
    split: Annotated[
        str, typer.Option(help="target: train/valid/test grouped by target; none: one folder")
    ] = "target",
    fractions: Annotated[
        str, typer.Option(help="train,valid,test fractions of the assays (--split target)")
    ] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="seed of the target split", min=0, max=SEED_MAX)] = 0,
    min_size: Annotated[
        int, typer.Option(help="fewest measurements an assay keeps (FS-Mol: 32)", min=1)
    ] = 32,
    max_size: Annotated[
        int, typer.Option(help="most measurements an assay keeps (FS-Mol: 5000)", min=1)
    ] = 5000,
    balance: Annotated[
        str, typer.Option(help="low,high limits of an assay's active fraction (FS-Mol: 0.3,0.7)")
    ] = "0.3,0.7",
    max_mol_weight: Annotated[
        float, typer.Option(help="heaviest standardised molecule kept, Da (FS-Mol: 900)", min=1)
    ] = 900.0,
    conflict_log_units: Annotated[
        float,
        typer.Option(help="repeats of a molecule further apart in pXC50 are quarantined", min=0),
    ] = 1.0,
    conflict_percent: Annotated[
        float, typer.Option(help="the same for % values, in %-points (FS-Mol: 5)", min=0)
    ] = 5.0,
    assay_column: ColumnOption = None,
    smiles_column: ColumnOption = None,
    value_column: ColumnOption = None,
    relation_column: ColumnOption = None,
    units_column: ColumnOption = None,
    label_column: Annotated[
        str | None, typer.Option(help="binary label column, used as is (no values needed)")
    ] = None,
    target_column: ColumnOption = None,
    target_class_column: ColumnOption = None,
    assay_type_column: ColumnOption = None,
    workers: Annotated[int, typer.Option(help="SMILES standardisation processes", min=1)] = 1,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the statistics as JSON")
    ] = None,
) -> None:
    """Turn an activity table into FS-Mol task files (with FS-Mol's cleaning rules), or check a
    task folder: tasks, rows, invalid SMILES excluded, files skipped."""
    if not _is_table(data):
        check_options((out is None, "--out", f"{data} is a task folder, not a table; drop --out"))
        from metascreen.pipelines.domain import prepare_stats

        stats = run(lambda: prepare_stats(str(data)))
        typer.echo(json.dumps(stats, indent=2))
        write_json(json_out, stats)
        return
    check_options(
        (
            out is not None,
            "--out",
            f"is needed with a table ({data}): the new folder for its tasks",
        ),
        (split in ("target", "none"), "--split", f"{split!r}: choose target or none"),
        (max_size >= min_size, "--max-size", f"{max_size} is below --min-size {min_size}"),
    )
    assert out is not None
    from metascreen.domains.molecules.prepare import PrepareConfig
    from metascreen.domains.molecules.prepare_io import prepare_table

    config = PrepareConfig(
        min_size=min_size,
        max_size=max_size,
        balance=_pair(balance, "--balance"),
        max_mol_weight=max_mol_weight,
        conflict_log_units=conflict_log_units,
        conflict_percent=conflict_percent,
        split=split,
        fractions=_fractions(fractions),
        seed=seed,
        workers=workers,
    )
    names = {
        "assay": assay_column,
        "smiles": smiles_column,
        "value": value_column,
        "relation": relation_column,
        "units": units_column,
        "label": label_column,
        "target": target_column,
        "target_class": target_class_column,
        "assay_type": assay_type_column,
    }
    summary = run(lambda: prepare_table(data, out, config, **names))
    typer.echo(
        f"{summary['rows_in']} rows: {summary['rows_kept']} kept in {summary['assays_kept']} "
        f"assays, {summary['rows_quarantined']} quarantined ({out / 'quarantine.csv'}), "
        f"{len(summary['assays_dropped'])} assays dropped"
    )
    write_json(json_out, summary)
    typer.echo(str(out))


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
