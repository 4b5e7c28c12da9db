"""``simulate movielens``: interactive recommendation on the shared simulator (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from metascreen.pipelines.cli import _run, _write_json
from metascreen.pipelines.cli_policy import simulate_app


@simulate_app.command("movielens")
def simulate_movielens_cmd(
    data_dir: Annotated[Path, typer.Argument(help="MovieLens-format folder")],
    model: Annotated[Path, typer.Option(help="what train movielens wrote")],
    policy: Annotated[
        str | None,
        typer.Option(help="policy (default: the learned policy) | random | popular | greedy"),
    ] = None,
    budget: Annotated[int, typer.Option(help="items shown per user")] = 20,
    seed: Annotated[int, typer.Option(help="seed of random picks and ties")] = 0,
    users: Annotated[str, typer.Option(help="all | holdout (the model's held-out users)")] = "all",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result JSON here")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="cumulative-hit curve (PNG)")] = None,
) -> None:
    """Interactive recommendation: show one unseen item per step; hit = the user rated it ≥ 4."""

    def body() -> dict[str, Any]:
        from metascreen.models.workflows.movielens import simulate_movielens

        return simulate_movielens(data_dir, model, policy, budget, seed, users)

    out = _run(body)
    typer.echo(
        f"{out['policy']}: cumulative precision@{budget} {out['cumulative_precision']:.4f}, "
        f"hits@5 {out['hits@5']:.3f}, hits@10 {out['hits@10']:.3f}, hits@20 {out['hits@20']:.3f} "
        f"({out['n_users']} users, {out['seconds']:.1f}s)"
    )
    _write_json(json_out, out)
    if plot is not None:
        from metascreen.models.screening.movielens import plot_curve

        plot_curve({out["policy"]: out}, plot)
        typer.echo(f"wrote {plot}")
