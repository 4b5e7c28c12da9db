"""``metascreen simulate molecules|movielens``: policies in the adaptive-screening simulator (no torch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from metascreen.pipelines.cli.common import (
    SEED_MAX,
    check_options,
    progress_enabled,
    run,
    write_json,
)

app = typer.Typer(
    help="Benchmark a screening policy in the adaptive-screening simulator.", no_args_is_help=True
)


@app.command("molecules")
def simulate_molecules_cmd(
    data_dir: Annotated[Path, typer.Argument(help="folder of FS-Mol task files (*.jsonl.gz)")],
    policy: Annotated[
        str | None,
        typer.Option(
            help="policy artifact folder, or random | greedy | knn | gp (default: shipped policy)"
        ),
    ] = None,
    budget: Annotated[
        int, typer.Option(help="compounds assayed per task (T)", min=1, max=100_000)
    ] = 32,
    batch: Annotated[int, typer.Option(help="compounds picked per step", min=1, max=100_000)] = 1,
    init: Annotated[
        int, typer.Option(help="random labelled compounds known at the start", min=0, max=100_000)
    ] = 0,
    active_fraction: Annotated[
        float,
        typer.Option(
            help="actives kept as this fraction of the pool (1 = task as is)", min=0, max=1
        ),
    ] = 0.1,
    repeats: Annotated[
        int, typer.Option(help="pool draws per task; repeat r uses (seed, r)", min=1, max=10_000)
    ] = 5,
    seed: Annotated[int, typer.Option(help="base seed", min=0, max=SEED_MAX)] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result JSON here")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="cumulative-hit curve PNG")] = None,
    compare: Annotated[
        str | None,
        typer.Option(
            help="comma-separated extra policies on the same pools, e.g. random,greedy,knn"
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="predictor for greedy (default: the shipped model)")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="feature cache (off by default)")] = None,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect simulate flow")
    ] = False,
) -> None:
    """Cumulative hits of a policy over every task: pools, picks and reward accounting as documented."""
    check_options(
        (active_fraction > 0, "--active-fraction", f"{active_fraction} must be in (0, 1]"),
        (batch <= budget, "--batch", f"{batch} is larger than --budget {budget}"),
    )
    start = time.perf_counter()
    names: list[str | None] = [policy] + [
        c.strip() for c in (compare or "").split(",") if c.strip()
    ]
    kwargs: dict[str, Any] = {
        "budget": budget,
        "batch": batch,
        "init": init,
        "active_fraction": active_fraction,
        "repeats": repeats,
        "seed": seed,
    }

    def body() -> dict[str, dict[str, Any]]:
        if flow:
            from metascreen.pipelines.flows import simulate_flow

            return simulate_flow(
                str(data_dir),
                names,
                budget=budget,
                batch=batch,
                init=init,
                active_fraction=active_fraction,
                repeats=repeats,
                seed=seed,
                model=str(model) if model else None,
                cache_dir=str(cache_dir) if cache_dir else None,
            )
        from metascreen.models.workflows.policy import policy_label, simulate_molecules

        out = {}
        for name in names:
            res = simulate_molecules(
                data_dir,
                name,
                model_dir=model,
                cache_dir=cache_dir,
                progress=progress_enabled(),
                **kwargs,
            )
            out[policy_label(name)] = res.to_json()
        return out

    results = run(body)
    from metascreen.pipelines.policy_report import plot_hit_curves, simulation_table

    typer.echo(simulation_table(results))
    main = dict(next(iter(results.values())))
    main["seconds"] = (
        round(time.perf_counter() - start, 2) if len(results) == 1 else main["seconds"]
    )
    if len(results) > 1:
        from metascreen.models.screening.simulator import paired_difference

        first = next(iter(results))
        main["compare"] = {k: v for k, v in list(results.items())[1:]}
        main["paired"] = {k: paired_difference(main, v) for k, v in main["compare"].items()}
        for k, pr in main["paired"].items():
            typer.echo(
                f"{first} − {k}: {pr['mean_diff']:+.2f} ± {pr['mean_diff_ci95']:.2f} hits "
                f"(ratio {pr['ratio']:.3f}; better on {pr['tasks_better']} tasks, "
                f"worse on {pr['tasks_worse']} of {pr['n_tasks']})"
            )
    write_json(json_out, main)
    if plot is not None:
        plot_hit_curves(results, plot)
        typer.echo(f"wrote {plot}")


@app.command("movielens")
def simulate_movielens_cmd(
    data_dir: Annotated[Path, typer.Argument(help="MovieLens-format folder")],
    model: Annotated[Path, typer.Option(help="what train movielens wrote")],
    policy: Annotated[
        str | None,
        typer.Option(help="policy (default: the learned policy) | random | popular | greedy"),
    ] = None,
    budget: Annotated[int, typer.Option(help="items shown per user", min=1, max=100_000)] = 20,
    seed: Annotated[
        int, typer.Option(help="seed of random picks and ties", min=0, max=SEED_MAX)
    ] = 0,
    users: Annotated[
        Literal["all", "holdout"], typer.Option(help="all | holdout (the model's held-out users)")
    ] = "all",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result JSON here")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="cumulative-hit curve (PNG)")] = None,
) -> None:
    """Interactive recommendation: show one unseen item per step; hit = the user rated it ≥ 4."""

    def body() -> dict[str, Any]:
        from metascreen.models.workflows.movielens import simulate_movielens

        return simulate_movielens(data_dir, model, policy, budget, seed, users)

    out = run(body)
    typer.echo(
        f"{out['policy']}: cumulative precision@{budget} {out['cumulative_precision']:.4f}, "
        f"hits@5 {out['hits@5']:.3f}, hits@10 {out['hits@10']:.3f}, hits@20 {out['hits@20']:.3f} "
        f"({out['n_users']} users, {out['seconds']:.1f}s)"
    )
    write_json(json_out, out)
    if plot is not None:
        from metascreen.models.screening.movielens import plot_curve

        plot_curve({out["policy"]: out}, plot)
        typer.echo(f"wrote {plot}")
