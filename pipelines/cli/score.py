"""``metascreen score molecules|movielens`` and ``metascreen propose``: onnxruntime only, no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from metascreen.models.registry.store import DEFAULT_NAME
from metascreen.pipelines.cli.common import (
    SEED_MAX,
    Device,
    check_options,
    not_an_input,
    progress_enabled,
    run,
)

app = typer.Typer(help="Batch-score a library with onnxruntime (no torch).", no_args_is_help=True)


@app.command("molecules")
def score_molecules(
    support: Annotated[
        Path,
        typer.Option(
            help="labelled compounds of the new assay (CSV/Parquet/SDF with SMILES + label)"
        ),
    ],
    input: Annotated[
        Path,
        typer.Option("--input", help="library to score (CSV/TSV/Parquet/SDF/.smi with SMILES)"),
    ],  # noqa: A002
    output: Annotated[Path, typer.Option(help="scores: .parquet, .csv or .sdf (format by suffix)")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="model artifact folder (default: the registry's current model, else the shipped one)"
        ),
    ] = None,
    label_column: Annotated[str, typer.Option(help="support label column")] = "label",
    smiles_column: Annotated[
        str | None, typer.Option(help="library SMILES column (default SMILES/smiles)")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="rows per chunk", min=1)] = 4096,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="score on a Dask LocalCluster of N processes on 127.0.0.1 (chunked, resumable); "
            "default: this process with 2 forked featurization workers",
        ),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(help="score on an existing Dask scheduler, e.g. tcp://127.0.0.1:8786"),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            help="model registry folder (default $METASCREEN_REGISTRY)", show_default=False
        ),
    ] = None,
    model_name: Annotated[str, typer.Option(help="registered model name")] = DEFAULT_NAME,
    device: Annotated[
        Device, typer.Option(help="auto | cpu | cuda (onnxruntime provider)")
    ] = "auto",
) -> None:
    """Adapt to the support set and score the library with onnxruntime; invalid SMILES are quarantined."""
    check_options(not_an_input(output, input, support))

    def body() -> Any:
        from dataclasses import fields

        from metascreen.models.registry.store import resolve_model_dir
        from metascreen.models.serving.molecules import ScoreReport, score_library

        model_dir = resolve_model_dir(model, registry, model_name)
        if workers is not None or dask_address is not None:
            from metascreen.pipelines.dask_scoring import score_on_dask

            out = score_on_dask(
                model_dir,
                support,
                input,
                output,
                workers=workers,
                address=dask_address,
                chunk_size=chunk_size,
                smiles_column=smiles_column,
                label_column=label_column,
                device=device,
            )
            if out["chunks_skipped"]:
                typer.echo(
                    f"resumed: {out['chunks_skipped']} of {out['n_chunks']} chunks were done"
                )
            return ScoreReport(**{f.name: out[f.name] for f in fields(ScoreReport)})
        return score_library(
            model_dir,
            support,
            input,
            output,
            chunk_size=chunk_size,
            smiles_column=smiles_column,
            label_column=label_column,
            device=device,
            progress=progress_enabled(),
        )

    quarantine = output.with_name(output.stem + ".quarantine.csv")
    rep = run(body, outputs=(output, quarantine), lock=output)
    typer.echo(
        f"scored {rep.n_scored} / {rep.n_input} rows, quarantined {rep.n_quarantined} ({rep.mol_per_s:.0f} mol/s, {', '.join(rep.providers)})"
    )
    typer.echo(f"scores: {rep.output}")
    if rep.quarantine:
        typer.echo(f"quarantine: {rep.quarantine}")


@app.command("movielens")
def score_movielens(
    ratings: Annotated[
        Path, typer.Option(help="known ratings (CSV/TSV/Parquet: user_id, item_id, rating)")
    ],
    candidates: Annotated[
        Path, typer.Option(help="candidate items (CSV/TSV/Parquet: item_id[, user_id])")
    ],
    output: Annotated[Path, typer.Option(help="top-k per user (Parquet)")],
    model: Annotated[Path, typer.Option(help="movielens model artifact folder")],
    k: Annotated[int, typer.Option(help="items per user", min=1, max=1_000_000)] = 10,
    device: Annotated[
        Device, typer.Option(help="auto | cpu | cuda (onnxruntime provider)")
    ] = "auto",
    objective: Annotated[
        Literal["auto", "topn", "rating"],
        typer.Option(
            help="topn: rank by the top-N model (will watch and like) | rating: by predicted "
            "rating | auto: topn when the model has one"
        ),
    ] = "auto",
) -> None:
    """Top-k unrated candidates per user from their ratings, onnxruntime only; bad rows quarantined.

    A ratings table without a rating column is implicit feedback (every row a positive)."""
    check_options(not_an_input(output, ratings, candidates))

    def body() -> Any:
        from metascreen.models.serving.ratings import score_users

        return score_users(
            model, ratings, candidates, output, k=k, device=device, objective=objective
        )

    quarantine = output.with_name(output.stem + ".quarantine.csv")
    rep = run(body, outputs=(output, quarantine), lock=output)
    typer.echo(
        f"{rep.n_users} users, {rep.n_rows_out} rows; ratings used {rep.n_ratings_used} / "
        f"{rep.n_ratings_in} (quarantined {rep.n_ratings_quarantined}); candidates kept "
        f"{rep.n_candidates_kept} / {rep.n_candidates_in} (quarantined {rep.n_candidates_quarantined})"
    )
    typer.echo(f"top-{rep.k} by {rep.objective}: {rep.output}")
    if rep.quarantine:
        typer.echo(f"quarantine: {rep.quarantine}")


def propose(
    pool: Annotated[
        Path, typer.Option(help="candidate compounds (CSV/TSV/Parquet/SDF/.smi with SMILES)")
    ],
    output: Annotated[Path, typer.Option(help="proposed compounds (CSV)")],
    assayed: Annotated[
        Path | None,
        typer.Option(
            help="compounds assayed so far (SMILES + label); omit when nothing is assayed yet"
        ),
    ] = None,
    k: Annotated[int, typer.Option(help="how many compounds to propose", min=1, max=1_000_000)] = 8,
    policy: Annotated[
        str | None,
        typer.Option(
            help="policy artifact folder (default: the shipped policy) or a baseline: greedy | "
            "greedy-prior | greedy-random-start | ens | thompson | knn | gp | random"
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="predictor of the greedy/ens/thompson baselines")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(help="baseline knob KEY=VALUE (as simulate molecules)")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="seed of ties and of Thompson draws", min=0, max=SEED_MAX)
    ] = 0,
    budget: Annotated[
        int | None,
        typer.Option(
            help="campaign budget T for the policy's t/T input (default: its training budget)",
            min=1,
            max=100_000,
        ),
    ] = None,
    label_column: Annotated[str, typer.Option(help="label column of --assayed")] = "label",
    smiles_column: Annotated[
        str | None, typer.Option(help="SMILES column (default SMILES/smiles)")
    ] = None,
    device: Annotated[
        Device, typer.Option(help="auto | cpu | cuda (onnxruntime provider)")
    ] = "auto",
) -> None:
    """Propose the next plate of k compounds (onnxruntime only); assayed ones are never proposed.

    The k picks are made as the simulator makes one ``--batch k`` round (no label in between).
    """
    check_options(not_an_input(output, pool, assayed))
    options = {}
    for text in option or []:
        key, sep, value = text.partition("=")
        if not sep:
            raise typer.BadParameter(f"--option expects KEY=VALUE, got {text!r}")
        options[key.strip()] = value.strip()

    def body() -> Any:
        from metascreen.models.serving.policy import propose as propose_compounds

        return propose_compounds(
            assayed,
            pool,
            output,
            k,
            policy,
            budget,
            smiles_column,
            label_column,
            device,
            model_dir=model,
            options=options,
            seed=seed,
        )

    quarantine = output.with_name(output.stem + ".quarantine.csv")
    rep = run(body, outputs=(output, quarantine), lock=output)
    typer.echo(
        f"proposed {rep.n_proposed} of {rep.n_scored} candidates "
        f"({rep.n_already_assayed} already assayed, {rep.n_pool_quarantined} pool rows quarantined; "
        f"history {rep.n_assayed} assayed, {rep.n_assayed_active} active)"
    )
    typer.echo(f"proposals: {rep.output}")
    if rep.quarantine:
        typer.echo(f"quarantine: {rep.quarantine}")
