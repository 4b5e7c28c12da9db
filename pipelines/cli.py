"""The ``metascreen`` command line (typer). The only module that prints.

Commands call the same plain functions as the Prefect flows (``metascreen.models.workflows.molecules``);
``demo`` (and any command given ``--flow``) runs as a Prefect flow on the embedded backend, or on
a server when ``PREFECT_API_URL`` is set. torch, PyG and prefect are imported lazily, inside
commands, so ``metascreen --help`` and scoring start fast.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from metascreen.domains.errors import MetascreenError

app = typer.Typer(
    help="Few-shot, meta-learned screening: train, evaluate, export and score.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app = typer.Typer(help="Meta-train a model.", no_args_is_help=True)
evaluate_app = typer.Typer(
    help="Evaluate a model or baseline with the FS-Mol protocol.", no_args_is_help=True
)
score_app = typer.Typer(
    help="Batch-score a library with onnxruntime (no torch).", no_args_is_help=True
)
prepare_app = typer.Typer(help="Validate and featurize a task folder.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(score_app, name="score")
app.add_typer(prepare_app, name="prepare")

logger = logging.getLogger("metascreen")
T = TypeVar("T")


@app.callback()
def _main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="more logging (-v info, -vv debug)")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="errors only, no progress bars")
    ] = False,
) -> None:
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("metascreen").setLevel(level)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING" if verbose == 0 else "INFO")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "metascreen")
    if quiet:
        os.environ["METASCREEN_NO_PROGRESS"] = "1"


def _progress() -> bool:
    return os.environ.get("METASCREEN_NO_PROGRESS") != "1" and sys.stderr.isatty()


def _run(fn: Callable[[], T]) -> T:
    """Run a command body; expected errors become one line on stderr and exit code 2."""
    from pydantic import ValidationError

    try:
        return fn()
    except MetascreenError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as err:  # a configuration built from the command's options
        bad = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        typer.echo(f"error: invalid {err.title} option(s): {bad}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _write_json(path: Path | None, obj: Any) -> None:
    if path is not None:
        from metascreen.domains.io import atomic_write_json

        atomic_write_json(path, obj)
        typer.echo(f"wrote {path}")


# -- demo -------------------------------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[
        Path | None, typer.Option(help="report folder (default reports/demo-<timestamp>)")
    ] = None,
    steps: Annotated[int, typer.Option(help="meta-training steps on the sample")] = 300,
    repeats: Annotated[int, typer.Option(help="evaluation repeats per task")] = 5,
    flow: Annotated[
        bool,
        typer.Option(
            "--flow/--no-flow",
            help="run as a Prefect flow (embedded backend unless PREFECT_API_URL is set)",
        ),
    ] = True,
) -> None:
    """Run the whole pipeline on the bundled FS-Mol sample and write a report (Markdown + JSON + PNG)."""
    from metascreen.models.serving.artifact import utc_now

    out = out or Path("reports") / f"demo-{utc_now().replace(':', '').replace('-', '')}"

    def body() -> Path:
        if flow:
            from metascreen.pipelines.flows import demo_flow

            return Path(demo_flow(str(out), steps=steps, repeats=repeats))
        from metascreen.pipelines.report import run_demo

        return run_demo(out, steps=steps, repeats=repeats)

    path = _run(body)
    typer.echo((path / "report.md").read_text())
    typer.echo(f"report: {path.resolve()}")


# -- prepare --------------------------------------------------------------------------------------
@prepare_app.command("molecules")
def prepare_molecules(
    data_dir: Annotated[Path, typer.Argument(help="folder of FS-Mol task files (*.jsonl.gz)")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the statistics as JSON")
    ] = None,
) -> None:
    """Check a task folder: tasks, rows, invalid SMILES excluded, files skipped."""
    from metascreen.pipelines.report import LocalStages

    stats = _run(lambda: LocalStages().prepare(str(data_dir)))
    typer.echo(json.dumps(stats, indent=2))
    _write_json(json_out, stats)


# -- train ----------------------------------------------------------------------------------------
@train_app.command("molecules")
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
    learner: Annotated[str, typer.Option(help="protonet | maml | matching | probe")] = "protonet",
    valid_dir: Annotated[
        Path | None, typer.Option(help="validation task folder (default DATA_DIR/valid)")
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="start the encoder from this artifact (required for probe)")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="optimiser steps")] = None,
    tasks_per_step: Annotated[int | None, typer.Option(help="episodes per meta-batch")] = None,
    support_sizes: Annotated[
        str | None, typer.Option(help="comma-separated training support sizes, e.g. 16,32,64")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    lr_schedule: Annotated[
        str | None, typer.Option(help="constant | cosine (warm-up, then decay to lr/10)")
    ] = None,
    hidden: Annotated[str | None, typer.Option(help="encoder hidden widths, e.g. 1024,512")] = None,
    out_dim: Annotated[int | None, typer.Option(help="embedding size")] = None,
    dropout: Annotated[float | None, typer.Option(help="encoder dropout")] = None,
    encoder: Annotated[
        str, typer.Option(help="mlp | hybrid (MLP on fingerprint+descriptors next to a dense GIN)")
    ] = "mlp",
    graph_atoms: Annotated[
        int, typer.Option(help="hybrid: atoms per molecule graph (larger ones are truncated)")
    ] = 48,
    fp_radius: Annotated[int, typer.Option(help="Morgan radius (2 = ECFP4)")] = 2,
    fp_bits: Annotated[int, typer.Option(help="fingerprint length")] = 2048,
    fp_counts: Annotated[
        bool,
        typer.Option("--fp-counts/--fp-bits-only", help="log1p count fingerprint or bit vector"),
    ] = True,
    descriptors: Annotated[
        bool,
        typer.Option("--descriptors/--no-descriptors", help="append scaled RDKit 2D descriptors"),
    ] = True,
    eval_every: Annotated[int | None, typer.Option(help="steps between validations")] = None,
    patience: Annotated[
        int | None, typer.Option(help="validations without improvement before stopping")
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="wall-clock budget; keeps the best state")
    ] = None,
    ensemble: Annotated[
        int, typer.Option(help="train this many members (seeds seed, seed+1, …) and average them")
    ] = 1,
    seed: Annotated[int, typer.Option(help="seed for every RNG")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    run_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder; rerun with the same one to resume")
    ] = None,
    cache_dir: Annotated[Path, typer.Option(help="feature cache")] = Path(".cache/metascreen"),
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect meta_train flow")
    ] = False,
) -> None:
    """Meta-train a learner on FS-Mol-format tasks and write an artifact (ONNX + weights + metadata)."""
    learner_cfg: dict[str, Any] = {"learner": learner, "ensemble_size": ensemble}
    enc: dict[str, Any] = {}
    if hidden:
        enc["hidden"] = tuple(int(h) for h in hidden.split(","))
    if out_dim is not None:
        enc["out_dim"] = out_dim
    if dropout is not None:
        enc["dropout"] = dropout
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
    }
    train_cfg: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if support_sizes:
        train_cfg["support_sizes"] = tuple(int(s) for s in support_sizes.split(","))
    train_cfg.update(seed=seed, device=device)
    command = "metascreen " + shlex.join(sys.argv[1:])
    kwargs: dict[str, Any] = {
        "valid_dir": valid_dir,
        "init_from": init_from,
        "featurizer_params": {
            "radius": fp_radius,
            "n_bits": fp_bits,
            "counts": fp_counts,
            "descriptors": None if descriptors else (),
        },
        "cache_dir": cache_dir,
        "run_dir": run_dir,
        "progress": _progress(),
        "command": command,
    }

    def body() -> str:
        if flow:
            from metascreen.pipelines.flows import meta_train_flow

            return meta_train_flow(str(data_dir), str(out), learner_cfg, train_cfg, **kwargs)
        from metascreen.models.workflows.molecules import train_model

        return str(train_model(data_dir, out, learner_cfg, train_cfg, **kwargs))

    path = _run(body)
    meta = json.loads((Path(path) / "metadata.json").read_text())
    for n, r in meta["metrics"].get("valid", {}).items():
        typer.echo(f"valid ΔAUPRC@{n}: {r['mean']:.4f} ± {r['std']:.4f} ({r['n_tasks']} tasks)")
    typer.echo(f"model: {path}")


# -- evaluate ---------------------------------------------------------------------------------------
@evaluate_app.command("molecules")
def evaluate_molecules(
    data_dir: Annotated[Path, typer.Argument(help="folder of FS-Mol task files (*.jsonl.gz)")],
    model: Annotated[
        str | None,
        typer.Option(help="model artifact folder, or rf | knn (default: the shipped model)"),
    ] = None,
    support_size: Annotated[int, typer.Option(help="support set size per task")] = 16,
    repeats: Annotated[int, typer.Option(help="draws per task; repeat r uses seed + r")] = 10,
    seed: Annotated[int, typer.Option(help="base seed")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result JSON here")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="feature cache (off by default)")] = None,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect evaluate flow")
    ] = False,
) -> None:
    """ΔAUPRC with FS-Mol's protocol: stratified support, query = rest, mean over repeats then tasks."""
    import time

    start = time.perf_counter()

    def body() -> dict[str, Any]:
        if flow:
            from metascreen.pipelines.flows import evaluate_flow

            return next(
                iter(
                    evaluate_flow(
                        str(data_dir), [model] if model else None, [support_size], repeats, seed
                    ).values()
                )
            )[str(support_size)]
        from metascreen.models.workflows.molecules import evaluate_model

        res, label, n_invalid = evaluate_model(
            data_dir, model, (support_size,), repeats, seed, cache_dir, progress=_progress()
        )
        return res[support_size].to_json(label, n_invalid)

    out = _run(body)
    out["seconds"] = round(time.perf_counter() - start, 2)
    typer.echo(f"{'model':<40} {'support':>7} {'tasks':>5} {'ΔAUPRC':>8} {'std':>7} {'seconds':>8}")
    typer.echo(
        f"{str(out['model'])[-40:]:<40} {out['support_size']:>7} {out['n_tasks']:>5} {out['mean']:>8.4f} {out['std']:>7.4f} {out['seconds']:>8.1f}"
    )
    if out["n_skipped_draws"] or out["n_invalid_smiles_excluded"]:
        typer.echo(
            f"({out['n_skipped_draws']} draws skipped for a single-class fold; {out['n_invalid_smiles_excluded']} invalid SMILES rows excluded)"
        )
    _write_json(json_out, out)


# -- export ---------------------------------------------------------------------------------------
@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="existing model artifact folder")],
    out: Annotated[Path, typer.Option(help="new artifact folder")],
) -> None:
    """Re-export a model's weights to ONNX (dynamic sizes); fails unless onnxruntime matches torch within 1e-4."""

    def body() -> Path:
        if (model_dir / "items.npz").exists():  # a movielens rating predictor
            from metascreen.models.workflows.movielens import export_rating_model

            return export_rating_model(model_dir, out)
        from metascreen.models.workflows.molecules import export_model

        return export_model(model_dir, out)

    path = _run(body)
    meta = json.loads((path / "metadata.json").read_text())
    typer.echo(
        f"exported {path / 'model.onnx'} (parity max |diff| {meta['onnx']['parity_max_abs_diff']:.2e})"
    )


# -- score ----------------------------------------------------------------------------------------
@score_app.command("molecules")
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
    output: Annotated[Path, typer.Option(help="scores (Parquet)")],
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
    chunk_size: Annotated[int, typer.Option(help="rows per chunk")] = 4096,
    workers: Annotated[
        int | None,
        typer.Option(
            help="score on a Dask LocalCluster of N processes on 127.0.0.1 (chunked, resumable); "
            "default: this process with 2 forked featurization workers"
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
    model_name: Annotated[str, typer.Option(help="registered model name")] = "molecules",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (onnxruntime provider)")] = "auto",
) -> None:
    """Adapt to the support set and score the library with onnxruntime; invalid SMILES are quarantined."""

    def body() -> Any:
        from dataclasses import fields

        from metascreen.models.registry.store import resolve_model_dir
        from metascreen.models.serving.molecules import ScoreReport, score_library

        model_dir = resolve_model_dir(model, registry, model_name)
        if workers is not None or dask_address is not None:
            from metascreen.pipelines.distributed import score_distributed

            out = score_distributed(
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
            progress=_progress(),
        )

    rep = _run(body)
    typer.echo(
        f"scored {rep.n_scored} / {rep.n_input} rows, quarantined {rep.n_quarantined} ({rep.mol_per_s:.0f} mol/s, {', '.join(rep.providers)})"
    )
    typer.echo(f"scores: {rep.output}")
    if rep.quarantine:
        typer.echo(f"quarantine: {rep.quarantine}")


# -- recommendation (MovieLens-format data) ---------------------------------------------------------
@prepare_app.command("movielens")
def prepare_movielens(
    data_dir: Annotated[
        Path, typer.Argument(help="MovieLens 100K/1M folder or interactions table")
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the statistics as JSON")
    ] = None,
) -> None:
    """Check rating data: users, ratings, items, users with 13–100 ratings, rejected rows."""
    from metascreen.pipelines.report import prepare_stats

    stats = _run(lambda: prepare_stats(str(data_dir), domain="movielens"))
    typer.echo(json.dumps(stats, indent=2))
    _write_json(json_out, stats)


@train_app.command("movielens")
def train_movielens(
    data_dir: Annotated[
        Path, typer.Argument(help="MovieLens 100K/1M folder (or interactions table folder)")
    ],
    out: Annotated[Path, typer.Option(help="new model artifact folder")] = Path(
        "models-out/movielens"
    ),
    seed: Annotated[int, typer.Option(help="seed for every RNG")] = 0,
    holdout_fraction: Annotated[
        float, typer.Option(help="share of users held out of training entirely (0 = none)")
    ] = 0.0,
    split_seed: Annotated[int, typer.Option(help="seed of the hold-out draw")] = 0,
    learner: Annotated[
        str, typer.Option(help="attentive-rating | foldin (MF fold-in alone)")
    ] = "attentive-rating",
    steps: Annotated[int | None, typer.Option(help="optimiser steps")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="meta-training wall-clock budget (keeps the best state)")
    ] = None,
    dim: Annotated[int | None, typer.Option(help="MF factor size")] = None,
    loss: Annotated[str | None, typer.Option(help="l1 | mse | huber")] = None,
    policy_steps: Annotated[
        int | None,
        typer.Option(help="interactive-recommendation policy: warm-start steps (0 = no policy)"),
    ] = None,
    policy_minutes: Annotated[
        float | None, typer.Option(help="policy training wall-clock cap (keeps the best state)")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="checkpoint folder; rerun with the same one to resume")
    ] = None,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect meta_train flow")
    ] = False,
) -> None:
    """Fit MF on the training users, meta-train the rating predictor (MeLU cold-user protocol),
    then train the interactive-recommendation policy on the same users."""
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
        "progress": _progress(),
        "command": "metascreen " + shlex.join(sys.argv[1:]),
        "policy_cfg": policy_cfg,
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

    path = _run(body)
    meta = json.loads((Path(path) / "metadata.json").read_text())
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
    typer.echo(f"model: {path}")


@evaluate_app.command("movielens")
def evaluate_movielens(
    data_dir: Annotated[Path, typer.Argument(help="MovieLens-format folder")],
    model: Annotated[
        str,
        typer.Option(
            help="model artifact folder, or a baseline: global-mean | item-mean | item-bias | mf "
            "| mf-staircase"
        ),
    ],
    seed: Annotated[int, typer.Option(help="seed of each user's query draw")] = 0,
    users: Annotated[
        str,
        typer.Option(help="all (every user with 13–100 ratings) | holdout (the held-out users)"),
    ] = "all",
    holdout_fraction: Annotated[
        float | None, typer.Option(help="hold-out share (default: the model's, else 0.1)")
    ] = None,
    split_seed: Annotated[
        int | None, typer.Option(help="hold-out seed (default: the model's, else 0)")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result JSON here")
    ] = None,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect evaluate flow")
    ] = False,
) -> None:
    """MeLU protocol: per user 10 seeded query ratings, the rest support; MAE and nDCG@1/@3."""
    if users not in ("all", "holdout"):
        typer.echo("error: --users must be all or holdout", err=True)
        raise typer.Exit(2)

    def body() -> dict[str, Any]:
        if flow:
            from metascreen.pipelines.flows import evaluate_flow

            res = evaluate_flow(
                str(data_dir),
                [model],
                seed=seed,
                domain="movielens",
                users=users,
                holdout_fraction=holdout_fraction,
                split_seed=split_seed,
            )
            return next(iter(res.values()))
        from metascreen.models.workflows.movielens import evaluate_ratings

        return evaluate_ratings(
            data_dir,
            model,
            seed,
            users,  # type: ignore[arg-type]
            holdout_fraction,
            split_seed,
        )

    out = _run(body)
    typer.echo(f"{'model':<40} {'users':>6} {'MAE':>7} {'nDCG@1':>7} {'nDCG@3':>7} {'seconds':>8}")
    typer.echo(
        f"{str(out['model'])[-40:]:<40} {out['n_users']:>6} {out['mae']:>7.4f} "
        f"{out['ndcg@1']:>7.4f} {out['ndcg@3']:>7.4f} {out['seconds']:>8.1f}"
    )
    _write_json(json_out, out)


@score_app.command("movielens")
def score_movielens(
    ratings: Annotated[
        Path, typer.Option(help="known ratings (CSV/TSV/Parquet: user_id, item_id, rating)")
    ],
    candidates: Annotated[
        Path, typer.Option(help="candidate items (CSV/TSV/Parquet: item_id[, user_id])")
    ],
    output: Annotated[Path, typer.Option(help="top-k per user (Parquet)")],
    model: Annotated[Path, typer.Option(help="movielens model artifact folder")],
    k: Annotated[int, typer.Option(help="items per user")] = 10,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (onnxruntime provider)")] = "auto",
) -> None:
    """Top-k unrated candidates per user from their ratings, onnxruntime only; bad rows quarantined."""

    def body() -> Any:
        from metascreen.models.serving.ratings import score_users

        return score_users(model, ratings, candidates, output, k=k, device=device)

    rep = _run(body)
    typer.echo(
        f"{rep.n_users} users, {rep.n_rows_out} rows; ratings used {rep.n_ratings_used} / "
        f"{rep.n_ratings_in} (quarantined {rep.n_ratings_quarantined}); candidates kept "
        f"{rep.n_candidates_kept} / {rep.n_candidates_in} (quarantined {rep.n_candidates_quarantined})"
    )
    typer.echo(f"top-{rep.k}: {rep.output}")
    if rep.quarantine:
        typer.echo(f"quarantine: {rep.quarantine}")


# Registers train policy, simulate molecules/movielens and propose on the app above.
from metascreen.pipelines import cli_policy, cli_rec  # noqa: E402,F401

# -- operations: models, serve, bench (pipelines/ops_cli.py) -----------------------------------
from metascreen.pipelines.ops_cli import bench_app, models_app, serve  # noqa: E402 - needs _run etc. defined above

app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.command()(serve)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
