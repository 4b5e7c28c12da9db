"""``metascreen simulate molecules|movielens``: policies in the adaptive-screening simulator (no torch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from metascreen.pipelines.cli.common import (
    SEED_MAX,
    SliceSeed,
    TrainSlice,
    check_options,
    progress_enabled,
    run,
    slice_check,
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
            help="policy artifact folder, or random | greedy | greedy-prior | greedy-random-start | "
            "ens | thompson | knn | gp (default: shipped policy)"
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
    option: Annotated[
        list[str] | None,
        typer.Option(
            help="baseline knob KEY=VALUE (repeatable): cold_start=random|far|oneclass, ens_m, "
            "ens_strength, thompson_temperature"
        ),
    ] = None,
    train_slice: TrainSlice = None,
    slice_seed: SliceSeed = 0,
    min_task_size: Annotated[
        int,
        typer.Option(
            help="skip tasks with fewer valid compounds (e.g. 128 on train)", min=1, max=10**7
        ),
    ] = 1,
    report: Annotated[
        Path | None,
        typer.Option(
            help="run the three reported regimes (active fraction 0.1 batch 1, 1 batch 1, 0.1 "
            "batch 8; --batch/--active-fraction ignored) and write REPORT.json/.md/.png"
        ),
    ] = None,
    title: Annotated[str, typer.Option(help="first line of the --report Markdown")] = "",
    regimes: Annotated[
        str | None,
        typer.Option(
            help="with --report: only these regimes (comma-separated: f0.1-batch1, f1-batch1, "
            "f0.1-batch8); join reports with `simulate merge`"
        ),
    ] = None,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect simulate flow")
    ] = False,
) -> None:
    """Cumulative hits of a policy over every task: pools, picks and reward accounting as documented."""
    check_options(
        (active_fraction > 0, "--active-fraction", f"{active_fraction} must be in (0, 1]"),
        (batch <= budget, "--batch", f"{batch} is larger than --budget {budget}"),
        slice_check(train_slice, "--train-slice", whole=True),
    )
    start = time.perf_counter()
    names: list[str | None] = [policy] + [
        c.strip() for c in (compare or "").split(",") if c.strip()
    ]
    options = dict(_parse_option(o) for o in option or [])
    common: dict[str, Any] = {
        "budget": budget,
        "init": init,
        "repeats": repeats,
        "seed": seed,
        "options": options,
        "train_slice": train_slice,
        "slice_seed": slice_seed,
        "min_task_size": min_task_size,
    }

    def body(batch: int, active_fraction: float) -> dict[str, dict[str, Any]]:
        if flow:
            from metascreen.pipelines.flows import simulate_flow

            return simulate_flow(
                str(data_dir),
                names,
                batch=batch,
                active_fraction=active_fraction,
                model=str(model) if model else None,
                cache_dir=str(cache_dir) if cache_dir else None,
                **common,
            )
        from metascreen.models.screening.factory import policy_label
        from metascreen.models.workflows.policy import simulate_molecules

        out = {}
        for name in names:
            res = simulate_molecules(
                data_dir,
                name,
                batch=batch,
                active_fraction=active_fraction,
                model_dir=model,
                cache_dir=cache_dir,
                progress=progress_enabled(),
                **common,
            )
            out[policy_label(name)] = res.to_json()
        return out

    if report is not None:
        chosen = [r.strip() for r in regimes.split(",")] if regimes else None
        _write_report(report, names, title, lambda b, f: run(lambda: body(b, f)), data_dir, chosen)
        return
    results = run(lambda: body(batch, active_fraction))
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


def _with(prefix: Path, ext: str) -> Path:
    """``prefix`` + ``ext`` (a prefix such as ``valid_f0.1`` has no suffix to replace)."""
    return prefix.with_name(prefix.name + ext)


def _parse_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"--option expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _write_report(
    prefix: Path,
    names: list[str | None],
    title: str,
    simulate: Any,
    data_dir: Path,
    only: list[str] | None = None,
) -> None:
    """Every regime (or ``only`` those) in turn; JSON/MD/PNG are rewritten after each one."""
    from metascreen.domains.io import atomic_write_text
    from metascreen.models.screening.factory import BASELINE_POLICIES, policy_label
    from metascreen.pipelines.cli.common import command_line
    from metascreen.pipelines.policy_report import (
        REGIMES,
        plot_regimes,
        regime_summary,
        regimes_markdown,
    )

    labels = [policy_label(n) for n in names]
    main = labels[0]
    baselines = [lab for lab in labels[1:] if lab in BASELINE_POLICIES]
    if not baselines:
        raise typer.BadParameter("--report needs baselines in --compare (e.g. greedy,ens,random)")
    full: dict[str, dict[str, dict[str, Any]]] = {}
    summary: dict[str, Any] = {
        "title": title or f"{main} against the baselines on {data_dir}",
        "command": command_line(),
        "main": main,
        "baselines": baselines,
        "regimes": {},
    }
    known = [r[0] for r in REGIMES]
    if only and not set(only) <= set(known):
        raise typer.BadParameter(f"--regimes: choose from {', '.join(known)}, got {only}")
    for regime, fraction, batch in REGIMES:
        if only and regime not in only:
            continue
        results = simulate(batch, fraction)
        full[regime] = results
        summary["regimes"][regime] = regime_summary(results, main, baselines)
        r = summary["regimes"][regime]
        typer.echo(
            f"{regime}: {main} {r['mean_hits'][main]:.2f}, best baseline {r['best_baseline']} "
            f"{r['mean_hits'][r['best_baseline']]:.2f}; difference {r['vs_best']['mean_diff']:+.2f}"
            f" ± {r['vs_best']['mean_diff_ci95']:.2f}"
        )
        write_json(_with(prefix, ".json"), {**summary, "results": full})
        atomic_write_text(_with(prefix, ".md"), regimes_markdown(summary))
        plot_regimes(full, _with(prefix, ".png"))
    typer.echo(f"wrote {_with(prefix, '.md')} and {_with(prefix, '.png')}")


@app.command("merge")
def merge_reports_cmd(
    out: Annotated[Path, typer.Argument(help="prefix of the merged OUT.json/.md/.png")],
    parts: Annotated[list[Path], typer.Argument(help="report JSONs written by --report")],
    title: Annotated[str | None, typer.Option(help="first line of the Markdown")] = None,
    main: Annotated[
        str | None,
        typer.Option(help="the policy compared with the others (default: the first report's)"),
    ] = None,
) -> None:
    """Join ``--report`` JSONs into one report: different regimes, or more policies on the same
    pools (a new policy against baselines simulated before, checked to be the same pools)."""
    from metascreen.domains.io import atomic_write_text
    from metascreen.pipelines.policy_report import (
        REGIMES,
        merge_reports,
        plot_regimes,
        read_report,
        regimes_markdown,
    )

    merged = run(lambda: merge_reports([read_report(p) for p in parts], main))
    if title:
        merged["title"] = title
    order = [r[0] for r in REGIMES]
    full = dict(sorted(merged["results"].items(), key=lambda kv: order.index(kv[0])))
    write_json(_with(out, ".json"), merged)
    atomic_write_text(_with(out, ".md"), regimes_markdown(merged))
    plot_regimes(full, _with(out, ".png"))
    typer.echo(f"wrote {_with(out, '.md')} and {_with(out, '.png')}")


@app.command("movielens")
def simulate_movielens_cmd(
    data_dir: Annotated[Path, typer.Argument(help="MovieLens-format folder")],
    model: Annotated[Path, typer.Option(help="what train movielens wrote")],
    policy: Annotated[
        str | None,
        typer.Option(
            help="policy (default: the learned policy) | random | popular | greedy | greedy-topn | greedy-ease"
        ),
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
