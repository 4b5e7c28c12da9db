"""CLI commands of the adaptive-screening policy: ``train policy``, ``simulate molecules``, ``propose``.

Registered on the main app by ``pipelines.cli``; ``simulate`` and ``propose`` never import torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from metascreen.pipelines.cli import _progress, _run, _write_json, app, train_app

simulate_app = typer.Typer(
    help="Benchmark a screening policy in the adaptive-screening simulator.", no_args_is_help=True
)
app.add_typer(simulate_app, name="simulate")


def _fractions(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise typer.BadParameter(
            f"--active-fractions {text!r}: not comma-separated numbers"
        ) from err
    if not out or not all(0 < f <= 1 for f in out):
        raise typer.BadParameter(f"--active-fractions {text!r}: need numbers in (0, 1]")
    return out


@train_app.command("policy")
def train_policy_cmd(
    data_dir: Annotated[Path, typer.Argument(help="FS-Mol folder with train/ (and valid/)")],
    out: Annotated[Path, typer.Option(help="new policy artifact folder")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="predictor artifact whose frozen encoder embeds compounds (default: shipped)"
        ),
    ] = None,
    valid_dir: Annotated[
        Path | None, typer.Option(help="validation tasks (default DATA_DIR/valid)")
    ] = None,
    warm_steps: Annotated[int, typer.Option(help="supervised warm-start steps")] = 1500,
    rl_steps: Annotated[int, typer.Option(help="REINFORCE steps after the warm start")] = 300,
    lr: Annotated[float, typer.Option(help="warm-start learning rate")] = 1e-3,
    rl_lr: Annotated[float, typer.Option(help="REINFORCE learning rate")] = 5e-5,
    rl_baseline: Annotated[
        str,
        typer.Option(
            help="REINFORCE baseline: value (the value head) | greedy (self-critical: the "
            "policy's own argmax episode on the same pool)"
        ),
    ] = "greedy",
    rl_from: Annotated[
        str, typer.Option(help="REINFORCE starts from the last | best warm-start state")
    ] = "best",
    keep: Annotated[str, typer.Option(help="export the best-validated | last state")] = "last",
    lr_schedule: Annotated[
        str, typer.Option(help="warm-start LR after warm-up: constant | cosine (decays to 1%)")
    ] = "constant",
    ema_decay: Annotated[
        float | None,
        typer.Option(help="validate and keep an exponential moving average of the weights"),
    ] = None,
    pools_per_step: Annotated[int, typer.Option(help="training pools per step")] = 16,
    budget: Annotated[int, typer.Option(help="episode budget T")] = 32,
    active_fractions: Annotated[
        str,
        typer.Option(help="comma-separated active fractions training pools are drawn at"),
    ] = "0.05,0.1,0.1,0.2,0.5,1.0",
    rank_loss: Annotated[
        float,
        typer.Option(help="weight of the listwise loss (softmax over candidates → actives)"),
    ] = 1.0,
    no_history: Annotated[
        bool, typer.Option("--no-history", help="ablation: no attention over the history")
    ] = False,
    predictor_head: Annotated[
        bool,
        typer.Option(
            "--predictor-head/--no-predictor-head",
            help="feed the predictor's few-shot head, adapted on the history, to the policy",
        ),
    ] = True,
    d_model: Annotated[int, typer.Option(help="policy width")] = 128,
    eval_every: Annotated[int, typer.Option(help="validate every N steps")] = 100,
    max_minutes: Annotated[float | None, typer.Option(help="stop training after this long")] = None,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (AMP on CUDA)")] = "auto",
    run_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder (resumes if present)")
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="feature cache")] = Path(".cache/metascreen"),
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect meta_train_policy flow")
    ] = False,
) -> None:
    """Meta-train the screening policy (warm start + REINFORCE) on FS-Mol train tasks."""
    policy_cfg: dict[str, Any] = {"d_model": d_model, "use_history": not no_history}
    policy_cfg["predictor_head"] = predictor_head  # True: the predictor's head, if batched
    train_cfg: dict[str, Any] = {
        "warm_steps": warm_steps,
        "rl_steps": rl_steps,
        "lr": lr,
        "rl_lr": rl_lr,
        "lr_schedule": lr_schedule,
        "rl_baseline": rl_baseline,
        "rl_from": rl_from,
        "keep": keep,
        "ema_decay": ema_decay,
        "pools_per_step": pools_per_step,
        "budget": budget,
        "rank_loss": rank_loss,
        "active_fractions": _fractions(active_fractions),
        "eval_every": eval_every,
        "max_minutes": max_minutes,
        "seed": seed,
        "device": device,
    }
    import shlex
    import sys

    command = shlex.join(["metascreen", *sys.argv[1:]])

    def body() -> Path:
        if flow:
            from metascreen.pipelines.flows import meta_train_policy_flow

            return Path(
                meta_train_policy_flow(
                    str(data_dir),
                    str(out),
                    policy_cfg,
                    train_cfg,
                    str(model) if model else None,
                    str(valid_dir) if valid_dir else None,
                    str(run_dir) if run_dir else None,
                    str(cache_dir),
                )
            )
        from metascreen.models.workflows.policy import train_policy_model

        return train_policy_model(
            data_dir,
            out,
            policy_cfg,
            train_cfg,
            model,
            valid_dir,
            cache_dir,
            run_dir,
            progress=_progress(),
            command=command,
        )

    path = _run(body)
    import json

    meta = json.loads((path / "metadata.json").read_text())
    for frac, r in meta["metrics"].get("valid", {}).items():
        typer.echo(f"valid hits@{budget} at active fraction {frac}: {r['mean_hits']:.3f}")
    typer.echo(f"policy: {path}")


@simulate_app.command("molecules")
def simulate_molecules_cmd(
    data_dir: Annotated[Path, typer.Argument(help="folder of FS-Mol task files (*.jsonl.gz)")],
    policy: Annotated[
        str | None,
        typer.Option(
            help="policy artifact folder, or random | greedy | knn | gp (default: shipped policy)"
        ),
    ] = None,
    budget: Annotated[int, typer.Option(help="compounds assayed per task (T)")] = 32,
    batch: Annotated[int, typer.Option(help="compounds picked per step")] = 1,
    init: Annotated[int, typer.Option(help="random labelled compounds known at the start")] = 0,
    active_fraction: Annotated[
        float, typer.Option(help="actives kept as this fraction of the pool (1 = task as is)")
    ] = 0.1,
    repeats: Annotated[int, typer.Option(help="pool draws per task; repeat r uses (seed, r)")] = 5,
    seed: Annotated[int, typer.Option(help="base seed")] = 0,
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
    start = time.perf_counter()
    names: list[str | None] = [policy] + [
        c.strip() for c in (compare or "").split(",") if c.strip()
    ]
    kwargs = {
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
                progress=_progress(),
                **kwargs,  # type: ignore[arg-type]
            )
            out[policy_label(name)] = res.to_json()
        return out

    results = _run(body)
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
    _write_json(json_out, main)
    if plot is not None:
        plot_hit_curves(results, plot)
        typer.echo(f"wrote {plot}")


@app.command()
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
    k: Annotated[int, typer.Option(help="how many compounds to propose")] = 8,
    policy: Annotated[
        Path | None, typer.Option(help="policy artifact folder (default: the shipped policy)")
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            help="campaign budget T for the policy's t/T input (default: its training budget)"
        ),
    ] = None,
    label_column: Annotated[str, typer.Option(help="label column of --assayed")] = "label",
    smiles_column: Annotated[
        str | None, typer.Option(help="SMILES column (default SMILES/smiles)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (onnxruntime provider)")] = "auto",
) -> None:
    """Propose the next k compounds to assay (onnxruntime only); assayed compounds are never proposed."""

    def body() -> Any:
        from metascreen.models.serving.policy import propose as run

        return run(assayed, pool, output, k, policy, budget, smiles_column, label_column, device)

    rep = _run(body)
    typer.echo(
        f"proposed {rep.n_proposed} of {rep.n_scored} candidates "
        f"({rep.n_already_assayed} already assayed, {rep.n_pool_quarantined} pool rows quarantined; "
        f"history {rep.n_assayed} assayed, {rep.n_assayed_active} active)"
    )
    typer.echo(f"proposals: {rep.output}")
    if rep.quarantine:
        typer.echo(f"quarantine: {rep.quarantine}")
