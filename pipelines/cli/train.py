"""``metascreen train molecules|movielens|policy``: meta-train a model and write an artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from metascreen.models.workflows.common import DEFAULT_CACHE_DIR
from metascreen.pipelines.cli.common import (
    SEED_MAX,
    Device,
    HoldoutSlice,
    SliceSeed,
    Workers,
    bad_option,
    check_options,
    command_line,
    int_list,
    progress_enabled,
    run,
    slice_check,
)

app = typer.Typer(help="Meta-train a model.", no_args_is_help=True)

CACHE_DIR = DEFAULT_CACHE_DIR
"""Default feature cache of the training commands."""


def _fractions(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise typer.BadParameter(
            f"{text!r} is not a list of comma-separated numbers", param_hint="'--active-fractions'"
        ) from err
    if not out or not all(0 < f <= 1 for f in out):
        raise typer.BadParameter(
            f"{text!r}: need numbers in (0, 1]", param_hint="'--active-fractions'"
        )
    return out


@app.command("molecules")
def train_molecules(
    data_dir: Annotated[
        Path,
        typer.Argument(
            help="FS-Mol folder with train/ and valid/, or a train folder (then --valid-dir)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="new model artifact folder")] = Path(
        "models-out/molecules"
    ),
    learner: Annotated[
        str, typer.Option(help="protonet | maml | matching | gp | multihead | context | probe")
    ] = "protonet",
    context_memory: Annotated[
        int | None,
        typer.Option(help="context: stored patterns of its Hopfield layer", min=1, max=65_536),
    ] = None,
    context_dim: Annotated[
        int | None, typer.Option(help="context: attention width", min=1, max=4096)
    ] = None,
    context_refs: Annotated[
        int | None,
        typer.Option(
            help="context: retrieve from this many reference training molecules (MHNfs's "
            "reference set, re-encoded by the shared encoder) instead of learned patterns",
            min=1,
            max=65_536,
        ),
    ] = None,
    gp_kernel: Annotated[
        Literal["global", "per-task"],
        typer.Option(
            help="gp / multihead: one meta-learned kernel lengthscale, or one fitted on each "
            "task's support set (ADKF-IFT-style)"
        ),
    ] = "global",
    valid_dir: Annotated[
        Path | None, typer.Option(help="validation task folder (default DATA_DIR/valid)")
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="start the encoder from this artifact (required for probe)")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="optimiser steps", min=1)] = None,
    tasks_per_step: Annotated[
        int | None, typer.Option(help="episodes per meta-batch", min=1, max=4096)
    ] = None,
    support_sizes: Annotated[
        str | None, typer.Option(help="comma-separated training support sizes, e.g. 16,32,64")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate", min=0)] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="AdamW weight decay (default 1e-4)", min=0)
    ] = None,
    query_size: Annotated[
        int | None, typer.Option(help="query rows per training episode (default 64)", min=2)
    ] = None,
    multitask_weight: Annotated[
        float | None,
        typer.Option(
            help="weight of an auxiliary multitask loss (a logistic head per training task on "
            "the shared embedding, training only; needs batched episodes)",
            min=0,
        ),
    ] = None,
    lr_schedule: Annotated[
        Literal["constant", "cosine"] | None,
        typer.Option(help="constant | cosine (warm-up, then decay to lr/10)"),
    ] = None,
    hidden: Annotated[str | None, typer.Option(help="encoder hidden widths, e.g. 1024,512")] = None,
    out_dim: Annotated[int | None, typer.Option(help="embedding size", min=1, max=65_536)] = None,
    dropout: Annotated[float | None, typer.Option(help="encoder dropout", min=0, max=1)] = None,
    input_dropout: Annotated[
        float | None, typer.Option(help="dropout on the input features", min=0, max=1)
    ] = None,
    encoder: Annotated[
        Literal["mlp", "hybrid"],
        typer.Option(help="mlp | hybrid (MLP on fingerprint+descriptors next to a dense GIN)"),
    ] = "mlp",
    graph_atoms: Annotated[
        int,
        typer.Option(
            help="hybrid: atoms per molecule graph (larger ones are truncated)", min=1, max=1024
        ),
    ] = 48,
    fp_radius: Annotated[int, typer.Option(help="Morgan radius (2 = ECFP4)", min=0, max=8)] = 2,
    fp_bits: Annotated[int, typer.Option(help="fingerprint length", min=1, max=1 << 20)] = 2048,
    fp_counts: Annotated[
        bool,
        typer.Option("--fp-counts/--fp-bits-only", help="log1p count fingerprint or bit vector"),
    ] = True,
    descriptors: Annotated[
        Literal["full", "fast", "none"],
        typer.Option(
            help="scaled RDKit 2D descriptors appended to the fingerprint: full (186), fast (48 "
            "single C++ calls, several times cheaper to compute; the shipped model's) or none"
        ),
    ] = "fast",
    no_descriptors: Annotated[
        bool, typer.Option("--no-descriptors", help="same as --descriptors none", hidden=True)
    ] = False,
    holdout_slice: HoldoutSlice = None,
    slice_seed: SliceSeed = 0,
    eval_every: Annotated[int | None, typer.Option(help="steps between validations", min=1)] = None,
    patience: Annotated[
        int | None, typer.Option(help="validations without improvement before stopping", min=1)
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="wall-clock budget; keeps the best state", min=0)
    ] = None,
    ensemble: Annotated[
        int,
        typer.Option(
            help="train this many members (seeds seed, seed+1, …) and average them", min=1, max=64
        ),
    ] = 1,
    member_radii: Annotated[
        str | None,
        typer.Option(
            help="with --ensemble N: N comma-separated Morgan radii, member k reading the "
            "fingerprint of radius k (e.g. 2,2,3: two ECFP4 members and one ECFP6, over one "
            "row with a block per radius); replaces --fp-radius",
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            help="validate, keep and export an exponential moving average of the weights "
            "(e.g. 0.999)",
            min=0,
            max=1,
        ),
    ] = None,
    batched_episodes: Annotated[
        bool,
        typer.Option(
            "--batched-episodes/--sequential-episodes",
            help="run a step's episodes through the model in one padded batch (same loss, about "
            "twice as fast on CPU) or one at a time (how artifacts before 2026-12-01 trained)",
        ),
    ] = True,
    weights_dtype: Annotated[
        Literal["float16", "int8", "float32"],
        typer.Option(
            help="storage of the artifact's large weight tensors: float16 halves the files "
            "(weights rounded to float16 values), int8 quarters the weight matrices (int8 codes "
            "times one scale per row; other large tensors float16), float32 keeps them; the "
            "graph computes in float32 either way"
        ),
    ] = "float16",
    seed: Annotated[int, typer.Option(help="seed for every RNG", min=0, max=SEED_MAX)] = 0,
    device: Annotated[Device, typer.Option(help="auto | cpu | cuda")] = "auto",
    run_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder; rerun with the same one to resume")
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="feature cache")] = CACHE_DIR,
    workers: Workers = 2,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect meta_train flow")
    ] = False,
) -> None:
    """Meta-train a learner on FS-Mol-format tasks and write an artifact (ONNX + weights + metadata)."""
    check_options(
        (lr is None or lr > 0, "--lr", f"{lr} must be positive"),
        (dropout is None or dropout < 1, "--dropout", f"{dropout} must be below 1"),
        (
            max_minutes is None or max_minutes > 0,
            "--max-minutes",
            f"{max_minutes} must be positive",
        ),
        slice_check(holdout_slice, "--holdout-slice", whole=False),
        (not (flow and holdout_slice), "--holdout-slice", "is not supported with --flow"),
        (
            not (multitask_weight and not batched_episodes),
            "--multitask-weight",
            "needs batched episodes (drop --sequential-episodes)",
        ),
        (
            ema_decay is None or 0 < ema_decay < 1,
            "--ema-decay",
            f"{ema_decay} must be between 0 and 1, exclusive",
        ),
    )
    from metascreen.domains.molecules.featurize import DESCRIPTOR_SETS

    learner_cfg: dict[str, Any] = {"learner": learner, "ensemble_size": ensemble}
    if gp_kernel != "global":
        learner_cfg["gp_kernel"] = gp_kernel
    if context_memory is not None:
        learner_cfg["context_memory"] = context_memory
    if context_dim is not None:
        learner_cfg["context_dim"] = context_dim
    if context_refs is not None:
        learner_cfg["context_refs"] = context_refs
    enc: dict[str, Any] = {}
    if hidden:
        enc["hidden"] = int_list(hidden, "--hidden")
    if out_dim is not None:
        enc["out_dim"] = out_dim
    if dropout is not None:
        enc["dropout"] = dropout
    if input_dropout is not None:
        enc["input_dropout"] = input_dropout
    if encoder != "mlp":
        enc["kind"] = encoder
        enc["graph_atoms"] = graph_atoms
    if enc:
        learner_cfg["encoder"] = enc
    overrides = {
        "steps": steps,
        "tasks_per_step": tasks_per_step,
        "lr": lr,
        "lr_schedule": lr_schedule,
        "eval_every": eval_every,
        "patience": patience,
        "max_minutes": max_minutes,
        "ema_decay": ema_decay,
        "weight_decay": weight_decay,
        "query_size": query_size,
        "multitask_weight": multitask_weight,
    }
    train_cfg: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if support_sizes:
        train_cfg["support_sizes"] = int_list(support_sizes, "--support-sizes")
    train_cfg.update(seed=seed, device=device)
    if not batched_episodes:
        train_cfg["batched_episodes"] = False
    kwargs: dict[str, Any] = {
        "valid_dir": valid_dir,
        "init_from": init_from,
        "featurizer_params": {
            "radius": fp_radius,
            "n_bits": fp_bits,
            "counts": fp_counts,
            "descriptors": DESCRIPTOR_SETS["none" if no_descriptors else descriptors],
        },
        "cache_dir": cache_dir,
        "workers": workers,
        "run_dir": run_dir,
        "progress": progress_enabled(),
        "command": command_line(),
        "weights_dtype": weights_dtype,
    }
    if member_radii is not None:
        radii = int_list(member_radii, "--member-radii", minimum=0)
        if len(radii) != ensemble or max(radii) > 8:
            raise bad_option(
                "--member-radii",
                f"{member_radii!r}: need {ensemble} radii in [0, 8], one per --ensemble member",
            )
        kwargs["member_radii"] = radii

    def body() -> str:
        if flow:
            from metascreen.pipelines.flows import meta_train_flow

            return meta_train_flow(str(data_dir), str(out), learner_cfg, train_cfg, **kwargs)
        from metascreen.models.workflows.molecules import train_model

        return str(
            train_model(
                data_dir,
                out,
                learner_cfg,
                train_cfg,
                holdout_slice=holdout_slice,
                slice_seed=slice_seed,
                **kwargs,
            )
        )

    path = run(body)
    meta = json.loads((Path(path) / "metadata.json").read_text())
    for split in ("selection", "valid"):
        for n, r in meta["metrics"].get(split, {}).items():
            typer.echo(
                f"{split} ΔAUPRC@{n}: {r['mean']:.4f} ± {r['std']:.4f} ({r['n_tasks']} tasks)"
            )
    typer.echo(f"model: {path}")


@app.command("movielens")
def train_movielens(
    data_dir: Annotated[
        Path, typer.Argument(help="MovieLens 100K/1M folder (or interactions table folder)")
    ],
    out: Annotated[Path, typer.Option(help="new model artifact folder")] = Path(
        "models-out/movielens"
    ),
    seed: Annotated[int, typer.Option(help="seed for every RNG", min=0, max=SEED_MAX)] = 0,
    holdout_fraction: Annotated[
        float,
        typer.Option(help="share of users held out of training entirely (0 = none)", min=0, max=1),
    ] = 0.0,
    split_seed: Annotated[
        int, typer.Option(help="seed of the hold-out draw", min=0, max=SEED_MAX)
    ] = 0,
    learner: Annotated[
        str, typer.Option(help="attentive-rating | foldin (MF fold-in alone)")
    ] = "attentive-rating",
    steps: Annotated[int | None, typer.Option(help="optimiser steps", min=1)] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="meta-training wall-clock budget (keeps the best state)", min=0),
    ] = None,
    dim: Annotated[int | None, typer.Option(help="MF factor size", min=1, max=4096)] = None,
    loss: Annotated[
        Literal["l1", "mse", "huber"] | None, typer.Option(help="l1 | mse | huber")
    ] = None,
    policy_steps: Annotated[
        int | None,
        typer.Option(
            help="interactive-recommendation policy: warm-start steps (0 = no policy)", min=0
        ),
    ] = None,
    policy_minutes: Annotated[
        float | None,
        typer.Option(help="policy training wall-clock cap (keeps the best state)", min=0),
    ] = None,
    topn: Annotated[
        bool,
        typer.Option(
            "--topn/--no-topn",
            help="train the top-N recommender that `score movielens` ranks by (--no-topn: the "
            "artifact ranks by predicted rating only)",
        ),
    ] = True,
    topn_steps: Annotated[
        int | None,
        typer.Option(help="top-N meta-training steps (0 = the closed-form item-item model)", min=0),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder; rerun with the same one to resume")
    ] = None,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect meta_train flow")
    ] = False,
) -> None:
    """Fit MF on the training users, meta-train the rating predictor (MeLU cold-user protocol),
    then train the interactive-recommendation policy and the top-N recommender on the same
    users."""
    check_options(
        (holdout_fraction < 1, "--holdout-fraction", f"{holdout_fraction} must be below 1"),
        (
            max_minutes is None or max_minutes > 0,
            "--max-minutes",
            f"{max_minutes} must be positive",
        ),
        (
            policy_minutes is None or policy_minutes > 0,
            "--policy-minutes",
            f"{policy_minutes} must be positive",
        ),
    )
    model_cfg: dict[str, Any] = {"learner": learner}
    if dim is not None:
        model_cfg["dim"] = dim
    if loss is not None:
        model_cfg["loss"] = loss
    train_cfg: dict[str, Any] = {"seed": seed}
    if steps is not None:
        train_cfg["steps"] = steps
    if max_minutes is not None:
        train_cfg["max_minutes"] = max_minutes
    policy_cfg: dict[str, Any] = {}
    if policy_steps is not None:
        policy_cfg["warm_steps"] = policy_steps
    if policy_minutes is not None:
        policy_cfg["max_minutes"] = policy_minutes
    kwargs: dict[str, Any] = {
        "holdout_fraction": holdout_fraction,
        "split_seed": split_seed,
        "run_dir": run_dir,
        "progress": progress_enabled(),
        "command": command_line(),
        "policy_cfg": policy_cfg,
        "topn": topn,
        "topn_cfg": {} if topn_steps is None else {"steps": topn_steps},
    }

    def body() -> str:
        from pydantic import ValidationError

        try:
            if flow:
                from metascreen.pipelines.flows import meta_train_flow

                return meta_train_flow(
                    str(data_dir), str(out), model_cfg, train_cfg, domain="movielens", **kwargs
                )
            from metascreen.models.workflows.movielens import train_rating_model

            return str(train_rating_model(data_dir, out, model_cfg, train_cfg, **kwargs))
        except ValidationError as err:
            from metascreen.domains.errors import ConfigError

            raise ConfigError(
                f"invalid training option: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}"
            ) from err

    path = run(body)
    _echo_movielens_summary(json.loads((Path(path) / "metadata.json").read_text()))
    typer.echo(f"model: {path}")


def _echo_movielens_summary(meta: dict[str, Any]) -> None:
    """The hold-out, policy and top-N lines of a new movielens artifact's metrics."""
    hold = meta["metrics"].get("holdout")
    if hold:
        typer.echo(
            f"hold-out users: MAE {hold['mae']:.4f}, nDCG@1 {hold['ndcg@1']:.4f}, "
            f"nDCG@3 {hold['ndcg@3']:.4f} ({hold['n_users']} users)"
        )
    pol = meta["metrics"].get("policy")
    if pol and pol.get("valid_cumulative_precision") is not None:
        typer.echo(
            f"policy: validation cumulative precision {pol['valid_cumulative_precision']:.4f} "
            f"({pol['n_valid_users']} training users kept out, step {pol['best_step']})"
        )
    top = meta["metrics"].get("topn")
    if top:
        typer.echo(
            f"top-N: selection NDCG@10 {top['selection_ndcg@10_meta_trained']:.4f} "
            f"(item-item alone {top['selection_ndcg@10_item_item_only']:.4f}; λ {top['lam']:g}, "
            f"dropout {top['dropout']:g}; {top['n_selection_users']} training users kept out)"
        )
    hold_topn = meta["metrics"].get("holdout_topn")
    if hold_topn and hold_topn["ndcg@10"] is not None:
        typer.echo(
            f"hold-out users, top-N with {hold_topn['support_n']} given ratings: NDCG@10 "
            f"{hold_topn['ndcg@10']:.4f} ({hold_topn['n_users']} users)"
        )


@app.command("policy")
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
    warm_steps: Annotated[int, typer.Option(help="supervised warm-start steps", min=0)] = 1500,
    rl_steps: Annotated[
        int, typer.Option(help="REINFORCE steps after the warm start", min=0)
    ] = 300,
    lr: Annotated[float, typer.Option(help="warm-start learning rate", min=0)] = 1e-3,
    rl_lr: Annotated[float, typer.Option(help="REINFORCE learning rate", min=0)] = 5e-5,
    rl_baseline: Annotated[
        Literal["value", "greedy"],
        typer.Option(
            help="REINFORCE baseline: value (the value head) | greedy (self-critical: the "
            "policy's own argmax episode on the same pool)"
        ),
    ] = "greedy",
    rl_from: Annotated[
        Literal["last", "best"],
        typer.Option(help="REINFORCE starts from the last | best warm-start state"),
    ] = "best",
    keep: Annotated[
        Literal["best", "last"], typer.Option(help="export the best-validated | last state")
    ] = "last",
    lr_schedule: Annotated[
        Literal["constant", "cosine"],
        typer.Option(help="warm-start LR after warm-up: constant | cosine (decays to 1%)"),
    ] = "constant",
    ema_decay: Annotated[
        float | None,
        typer.Option(
            help="validate and keep an exponential moving average of the weights", min=0, max=1
        ),
    ] = None,
    pools_per_step: Annotated[
        int, typer.Option(help="training pools per step", min=1, max=4096)
    ] = 16,
    budget: Annotated[int, typer.Option(help="episode budget T", min=1, max=100_000)] = 32,
    active_fractions: Annotated[
        str,
        typer.Option(help="comma-separated active fractions training pools are drawn at"),
    ] = "0.05,0.1,0.1,0.2,0.5,1.0",
    rank_loss: Annotated[
        float,
        typer.Option(help="weight of the listwise loss (softmax over candidates → actives)", min=0),
    ] = 1.0,
    aux_bce: Annotated[
        float,
        typer.Option(help="weight of the supervised label loss kept during REINFORCE", min=0),
    ] = 0.5,
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
    prior: Annotated[
        Path | None,
        typer.Option(
            help="an activity prior (metascreen train prior, fitted on this predictor and, with "
            "--holdout-slice, without the same slice) frozen into the policy as a candidate "
            "feature, e.g. data/artifacts/activity-prior-default.json",
        ),
    ] = None,
    anchor: Annotated[
        bool,
        typer.Option(
            "--anchor/--no-anchor",
            help="score = greedy-prior's score (the head's adapted logit + the prior's logit) + a "
            "learned correction that starts at zero, so training starts from the strongest "
            "baseline; needs --prior and the predictor head",
        ),
    ] = False,
    d_model: Annotated[int, typer.Option(help="policy width", min=1, max=4096)] = 128,
    eval_every: Annotated[int, typer.Option(help="validate every N steps", min=1)] = 100,
    check_repeats: Annotated[
        int,
        typer.Option(
            help="pool draws per task in each check during training (more: a steadier choice of "
            "the warm-start state, slower checks)",
            min=1,
        ),
    ] = 2,
    max_minutes: Annotated[
        float | None, typer.Option(help="stop training after this long", min=0)
    ] = None,
    seed: Annotated[int, typer.Option(help="seed", min=0, max=SEED_MAX)] = 0,
    device: Annotated[Device, typer.Option(help="auto | cpu | cuda (AMP on CUDA)")] = "auto",
    run_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder (resumes if present)")
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="feature cache")] = CACHE_DIR,
    workers: Workers = 2,
    holdout_slice: HoldoutSlice = None,
    slice_seed: SliceSeed = 0,
    slice_min_task_size: Annotated[
        int,
        typer.Option(
            help="the slice's tasks of at least this many compounds are the selection split "
            "(the validation checks during training; valid is read once, at the end)",
            min=1,
        ),
    ] = 128,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect meta_train_policy flow")
    ] = False,
) -> None:
    """Meta-train the screening policy (warm start + REINFORCE) on FS-Mol train tasks."""
    check_options(
        (lr > 0, "--lr", f"{lr} must be positive"),
        (rl_lr > 0 or rl_steps == 0, "--rl-lr", f"{rl_lr} must be positive"),
        (warm_steps + rl_steps > 0, "--warm-steps", "--warm-steps and --rl-steps are both 0"),
        (
            max_minutes is None or max_minutes > 0,
            "--max-minutes",
            f"{max_minutes} must be positive",
        ),
        slice_check(holdout_slice, "--holdout-slice", whole=False),
        (not (flow and holdout_slice), "--holdout-slice", "is not supported with --flow"),
        (
            not anchor or (prior is not None and predictor_head and not no_history),
            "--anchor",
            "needs --prior, the predictor head and the history (greedy-prior's score is its base)",
        ),
    )
    policy_cfg: dict[str, Any] = {"d_model": d_model, "use_history": not no_history}
    policy_cfg["predictor_head"] = predictor_head  # True: the predictor's head, if batched
    if prior is not None:
        policy_cfg["prior_file"] = str(prior)
    if anchor:
        policy_cfg["anchor"] = True
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
        "aux_bce": aux_bce,
        "active_fractions": _fractions(active_fractions),
        "eval_every": eval_every,
        "valid_repeats": check_repeats,
        "max_minutes": max_minutes,
        "seed": seed,
        "device": device,
    }

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
                    workers=workers,
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
            workers=workers,
            progress=progress_enabled(),
            command=command_line(),
            holdout_slice=holdout_slice,
            slice_seed=slice_seed,
            slice_min_task_size=slice_min_task_size,
        )

    path = run(body)
    meta = json.loads((path / "metadata.json").read_text())
    for split in ("selection", "valid"):
        for frac, r in meta["metrics"].get(split, {}).items():
            typer.echo(f"{split} hits@{budget} at active fraction {frac}: {r['mean_hits']:.3f}")
    typer.echo(f"policy: {path}")


@app.command("prior")
def train_prior_cmd(
    data_dir: Annotated[Path, typer.Argument(help="FS-Mol train task folder")],
    out: Annotated[Path, typer.Option(help="prior file to write (JSON)")],
    model: Annotated[
        Path | None,
        typer.Option(help="predictor artifact whose embedding it uses (default: shipped)"),
    ] = None,
    max_rows: Annotated[
        int, typer.Option(help="(task, compound) rows drawn for the fit", min=1)
    ] = 150_000,
    l2: Annotated[float, typer.Option(help="L2 strength (scikit-learn C = 1/l2)", min=0)] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the row draw", min=0, max=SEED_MAX)] = 0,
    cache_dir: Annotated[Path, typer.Option(help="feature cache")] = CACHE_DIR,
    workers: Workers = 2,
    holdout_slice: HoldoutSlice = None,
    slice_seed: SliceSeed = 0,
) -> None:
    """Fit the activity prior of the predictor baselines' `prior` cold start.

    A logistic model on the predictor's embedding, fitted on every train row with labels pooled
    over tasks; `simulate`/`propose --option cold_start=prior --option prior_file=OUT` use it.
    """
    check_options(
        (l2 > 0, "--l2", f"{l2} must be positive"),
        slice_check(holdout_slice, "--holdout-slice", whole=False),
    )

    def body() -> dict[str, Any]:
        from metascreen.models.workflows.policy import fit_activity_prior

        return fit_activity_prior(
            data_dir,
            out,
            model,
            holdout_slice,
            slice_seed,
            max_rows=max_rows,
            l2=l2,
            seed=seed,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress_enabled(),
            command=command_line(),
        )

    doc = run(body, outputs=[out], lock=out)
    td = doc["training_data"]
    typer.echo(
        f"prior on {td['n_rows_fitted']} of {td['n_rows']} rows ({td['n_task_files']} task files, "
        f"active rate {td['active_rate']:.3f}), train log loss {doc['train_log_loss']:.4f}: {out}"
    )
