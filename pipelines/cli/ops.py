"""Operations commands: ``metascreen models …``, ``metascreen serve``, ``metascreen bench …``.

``main`` registers ``models_app``, ``bench_app`` and ``serve``; prefect, torch and onnxruntime
are imported inside the commands.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from metascreen.models.registry.store import DEFAULT_NAME
from metascreen.models.workflows.common import DEFAULT_CACHE_DIR
from metascreen.pipelines.cli.common import (
    SEED_MAX,
    SliceSeed,
    TrainSlice,
    Workers,
    check_options,
    int_list,
    progress_enabled,
    run,
    slice_check,
    write_json,
)

models_app = typer.Typer(
    help="Model registry: list, promote, roll back, gate a challenger, retrain, quantize.",
    no_args_is_help=True,
)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


RegistryOpt = Annotated[
    Path | None,
    typer.Option(help="registry folder (default $METASCREEN_REGISTRY)", show_default=False),
]
NameArg = Annotated[str, typer.Argument(help="registered model name")]


def _registry(path: Path | None) -> Any:
    from metascreen.domains.errors import ConfigError
    from metascreen.models.registry.store import REGISTRY_ENV, ModelRegistry

    reg = ModelRegistry.from_env(path)
    if reg is None:
        raise ConfigError(f"no model registry: pass --registry DIR or set {REGISTRY_ENV}")
    return reg


@models_app.command("list")
def models_list(
    name: NameArg = DEFAULT_NAME,
    registry: RegistryOpt = None,
    decisions: Annotated[bool, typer.Option(help="also print the decision log")] = False,
) -> None:
    """Registered versions (current marked with *), their learner and validation ΔAUPRC."""

    def body() -> tuple[list[Any], list[dict[str, Any]]]:
        reg = _registry(registry)
        return reg.list_versions(name), reg.decisions(name) if decisions else []

    versions, log = run(body)
    if not versions:
        typer.echo(f"no versions of {name!r} registered")
    for mv in versions:
        metric = f"{mv.metric:.4f}" if mv.metric is not None else "n/a"
        typer.echo(
            f"{'*' if mv.is_current else ' '} {mv.version}  {mv.entry.get('learner') or '?':<10} "
            f"valid ΔAUPRC {metric:<7} registered {mv.entry['registered_at']}  "
            f"onnx {mv.entry['onnx_sha256'][:12]}  {mv.entry.get('note') or ''}"
        )
    for d in log:
        typer.echo(json.dumps(d, sort_keys=True))


@models_app.command("register")
def models_register(
    model_dir: Annotated[Path, typer.Argument(help="artifact folder to copy into the registry")],
    name: Annotated[str, typer.Option(help="registered model name")] = DEFAULT_NAME,
    registry: RegistryOpt = None,
    promote: Annotated[bool, typer.Option(help="also make it current (no gate)")] = False,
) -> None:
    """Copy a verified artifact into the registry as the next version."""

    def body() -> str:
        reg = _registry(registry)
        mv = reg.register(model_dir, name, note=f"registered from {model_dir}")
        if promote:
            reg.promote(name, mv.version, reason="registered with --promote")
        return str(mv.version)

    typer.echo(f"registered {name}/{run(body)}")


@models_app.command("promote")
def models_promote(
    name: NameArg,
    version: Annotated[str, typer.Argument(help="version to make current, e.g. v0003")],
    registry: RegistryOpt = None,
    reason: Annotated[str, typer.Option(help="recorded in the decision log")] = "manual",
) -> None:
    """Point ``current`` at VERSION (atomic; logged in decisions.jsonl)."""
    run(lambda: _registry(registry).promote(name, version, reason=reason))
    typer.echo(f"{name}: current -> {version}")


@models_app.command("rollback")
def models_rollback(
    name: NameArg = DEFAULT_NAME,
    registry: RegistryOpt = None,
    to: Annotated[str | None, typer.Option(help="version (default: the previous current)")] = None,
) -> None:
    """Point ``current`` back to the version it had before the last switch."""
    version = run(lambda: _registry(registry).rollback(name, to))
    typer.echo(f"{name}: current -> {version}")


@models_app.command("gate")
def models_gate(
    challenger: Annotated[Path, typer.Argument(help="challenger artifact folder")],
    valid_dir: Annotated[Path, typer.Option(help="validation task folder (FS-Mol format)")],
    name: Annotated[str, typer.Option(help="registered model name")] = DEFAULT_NAME,
    registry: RegistryOpt = None,
    margin: Annotated[
        float, typer.Option(help="ΔAUPRC the challenger must gain", min=-1, max=1)
    ] = 0.005,
    support_sizes: Annotated[str, typer.Option(help="comma-separated support sizes")] = "16",
    repeats: Annotated[int, typer.Option(help="draws per task", min=1, max=10_000)] = 10,
    seed: Annotated[
        int, typer.Option(help="base seed (same draws for both models)", min=0, max=SEED_MAX)
    ] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="feature cache")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the decision")] = None,
) -> None:
    """Register CHALLENGER and promote it only if it beats the current model by the margin."""
    from metascreen.models.registry import gate

    def body() -> dict[str, Any]:
        cfg = gate.GateConfig(
            str(valid_dir),
            int_list(support_sizes, "--support-sizes"),
            repeats,
            seed,
            margin,
            str(cache_dir) if cache_dir else None,
        )
        return gate.gate_challenger(_registry(registry), challenger, cfg, name).to_json()

    d = run(body)
    champ = f"{d['champion_score']:.4f}" if d["champion_score"] is not None else "n/a"
    typer.echo(
        f"{'PROMOTED' if d['promote'] else 'KEPT CHAMPION'}: challenger {d['challenger']} "
        f"{d['challenger_score']:.4f} vs champion {d['champion']} {champ} ({d['reason']})"
    )
    write_json(json_out, d)


@models_app.command("retrain")
def models_retrain(
    data_dir: Annotated[Path, typer.Argument(help="FS-Mol folder with train/ and valid/")],
    name: Annotated[str, typer.Option(help="registered model name")] = DEFAULT_NAME,
    registry: RegistryOpt = None,
    learner: Annotated[str, typer.Option(help="learner of the challenger")] = "protonet",
    steps: Annotated[int | None, typer.Option(help="optimiser steps", min=1)] = None,
    max_minutes: Annotated[float | None, typer.Option(help="training budget", min=0)] = None,
    margin: Annotated[
        float, typer.Option(help="ΔAUPRC the challenger must gain", min=-1, max=1)
    ] = 0.005,
    repeats: Annotated[int, typer.Option(help="gate draws per task", min=1, max=10_000)] = 10,
    seed: Annotated[int, typer.Option(help="training and gate seed", min=0, max=SEED_MAX)] = 0,
) -> None:
    """Run the retrain flow once now (train a challenger, gate it against the current model)."""
    check_options(
        (max_minutes is None or max_minutes > 0, "--max-minutes", f"{max_minutes} must be positive")
    )
    train: dict[str, Any] = {"seed": seed}
    if steps is not None:
        train["steps"] = steps
    if max_minutes is not None:
        train["max_minutes"] = max_minutes

    def body() -> dict[str, Any]:
        from metascreen.pipelines.retrain import retrain_flow

        reg = _registry(registry)
        return retrain_flow(
            str(data_dir),
            str(reg.root),
            name,
            {"learner": learner},
            train,
            margin=margin,
            repeats=repeats,
            seed=seed,
        )

    d = run(body)
    typer.echo(
        f"{'PROMOTED' if d['promote'] else 'KEPT CHAMPION'}: {d['challenger']} ({d['reason']})"
    )


@models_app.command("quantize")
def models_quantize(
    model_dir: Annotated[Path, typer.Argument(help="fp32 artifact folder")],
    out: Annotated[Path, typer.Option(help="new int8 artifact folder")],
) -> None:
    """Write an int8 dynamically quantized copy (onnxruntime.quantization) of an artifact."""

    def body() -> Path:
        from metascreen.models.registry.quantize import quantize_artifact

        return quantize_artifact(model_dir, out)

    typer.echo(f"int8 artifact: {run(body)}")


@models_app.command("combine")
def models_combine(
    model_dirs: Annotated[
        list[Path], typer.Argument(help="molecule model artifacts trained with different seeds")
    ],
    out: Annotated[Path, typer.Option(help="new ensemble artifact folder")],
    weights_dtype: Annotated[
        Literal["float16", "int8", "float32"] | None,
        typer.Option(help="storage of the large weight tensors (default: the first model's)"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="measure and record the ensemble's figures as train does: on the members' "
            "held-out slice of this train folder (or DIR/train), and on DIR/valid if present"
        ),
    ] = None,
    cache_dir: Annotated[
        Path, typer.Option(help="feature cache for --data-dir")
    ] = DEFAULT_CACHE_DIR,
    workers: Workers = 2,
) -> None:
    """Average molecule models into one ensemble artifact (one ONNX graph, mean probability).

    The models must share the learner configuration, featurizer, training data and selection
    slice (runs of the same train command with other --seed values); member k of train --ensemble
    is the run of --seed seed+k, so members trained apart and combined are that ensemble.
    """

    def body() -> Path:
        from metascreen.models.workflows.molecules import combine_models

        return combine_models(
            model_dirs, out, weights_dtype, data_dir=data_dir, cache_dir=cache_dir, workers=workers
        )

    typer.echo(f"ensemble artifact: {run(body)}")


def serve(
    host: Annotated[str, typer.Option(help="bind address of the server")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="server port", min=1, max=65535)] = 4200,
    home: Annotated[
        Path, typer.Option(help="PREFECT_HOME of the server (its SQLite database)")
    ] = Path(".prefect-server"),
    pool: Annotated[str, typer.Option(help="process work pool name")] = "metascreen",
    prefect_file: Annotated[Path | None, typer.Option(help="deployment file")] = None,
    deploy: Annotated[bool, typer.Option(help="register the deployments")] = True,
    worker: Annotated[bool, typer.Option(help="start a process worker")] = True,
    log_dir: Annotated[Path | None, typer.Option(help="server and worker logs")] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="results root of the flow runs (default $METASCREEN_RESULTS, else "
            "./metascreen-results)",
            show_default=False,
        ),
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(help="model registry (default $METASCREEN_REGISTRY)", show_default=False),
    ] = None,
) -> None:
    """Run a Prefect server on HOST:PORT with a process work pool, the deployments and a worker.

    Set PREFECT_SERVER_API_AUTH_STRING=user:password to require basic auth (the worker and the
    deploy step get it as PREFECT_API_AUTH_STRING). Ctrl-C or SIGTERM stops worker then server.
    Flow outputs go under the results root (passed to the worker as METASCREEN_RESULTS). An empty
    model registry gets the shipped model as its first current version (logged as a decision).
    """
    from metascreen.models.registry.store import REGISTRY_ENV
    from metascreen.pipelines.results import RESULTS_ENV, results_root
    from metascreen.pipelines.stack import PREFECT_FILE, LocalStack, bootstrap_registry

    auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
    if host not in ("127.0.0.1", "localhost", "::1") and not auth:
        typer.echo(
            f"warning: serving on {host} without PREFECT_SERVER_API_AUTH_STRING; anyone who can "
            "reach the port controls the server",
            err=True,
        )
    stack = LocalStack(
        home=home.resolve(),
        host=host,
        port=port,
        auth=auth,
        pool=pool,
        prefect_file=(prefect_file or PREFECT_FILE).resolve(),
        log_dir=log_dir,
        extra_env={RESULTS_ENV: str(results_root(results))},
    )
    registry = registry or (
        Path(os.environ[REGISTRY_ENV]) if os.environ.get(REGISTRY_ENV) else None
    )
    if registry is not None:
        stack.extra_env[REGISTRY_ENV] = str(registry.resolve())
        version = run(lambda: bootstrap_registry(registry.resolve()))
        if version:
            typer.echo(f"registry {registry.resolve()} was empty: shipped model is {version}")

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        run(lambda: stack.start(deploy=deploy, worker=worker))
        typer.echo(f"results: {stack.extra_env[RESULTS_ENV]}")
        typer.echo(f"prefect server: {stack.api_url} (UI http://{host}:{port}); pool {pool!r}")
        typer.echo("serving; Ctrl-C stops the worker and the server", err=True)
        while True:
            for proc, what in ((stack.server, "server"), (stack.worker, "worker")):
                if proc is not None and proc.poll() is not None:
                    typer.echo(f"error: prefect {what} exited ({proc.returncode})", err=True)
                    raise typer.Exit(2)
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping", err=True)
    finally:
        stack.stop()


@bench_app.command("score")
def bench_score(
    n: Annotated[
        int, typer.Option(help="library size (sampled with replacement, valid SMILES)", min=1)
    ] = 100_000,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    model: Annotated[
        Path | None, typer.Option(help="fp32 artifact (default: the shipped model)")
    ] = None,
    int8_model: Annotated[
        Path | None,
        typer.Option(help="int8 artifact (default: the shipped molecules-default-int8)"),
    ] = None,
    workers: Annotated[int, typer.Option(help="featurization processes", min=1, max=256)] = 2,
    chunk_size: Annotated[int, typer.Option(help="rows per chunk", min=1)] = 4096,
    featurize_sample: Annotated[
        int, typer.Option(help="molecules timed for featurization-only throughput", min=1)
    ] = 40_000,
    seed: Annotated[int, typer.Option(help="sampling seed", min=0, max=SEED_MAX)] = 0,
    work_dir: Annotated[
        Path | None, typer.Option(help="scratch folder (default: a temp dir)")
    ] = None,
) -> None:
    """End-to-end scoring vs featurization-only throughput, onnxruntime vs torch, peak RSS."""

    def body() -> dict[str, Any]:
        from metascreen.pipelines.bench import run_score_bench

        return run_score_bench(
            n=n,
            model=model,
            int8_model=int8_model,
            workers=workers,
            chunk_size=chunk_size,
            featurize_sample=featurize_sample,
            seed=seed,
            work_dir=work_dir,
            json_out=json_out,
            progress=progress_enabled(),
        )

    out = run(body)
    typer.echo(json.dumps(out, indent=2))
    if json_out is not None:
        typer.echo(f"wrote {json_out} and {json_out.with_suffix('.md')}")


@bench_app.command("featurize")
def bench_featurize(
    n: Annotated[
        int, typer.Option(help="distinct FS-Mol SMILES to featurize", min=1, max=10**7)
    ] = 20_000,
    model: Annotated[
        Path | None, typer.Option(help="artifact whose featurizer is timed (default: shipped)")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="folder of FS-Mol task files (default: /work/shared/data/fsmol/train if "
            "present, else the bundled data/fsmol-sample/train)",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="sampling seed", min=0, max=SEED_MAX)] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
) -> None:
    """Featurizer throughput vs RDKit parse + ECFP, and µs per molecule of each feature block."""

    def body() -> dict[str, Any]:
        from metascreen.pipelines.bench_featurize import run_featurize_bench

        return run_featurize_bench(n=n, model=model, data_dir=data, seed=seed, json_out=json_out)

    out = run(body)
    typer.echo(json.dumps(out, indent=2))
    if json_out is not None:
        typer.echo(f"wrote {json_out} and {json_out.with_suffix('.md')}")


@bench_app.command("model")
def bench_model(
    data_dir: Annotated[
        Path, typer.Argument(help="folder of FS-Mol task files, e.g. ../shared/data/fsmol/valid")
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="artifact folder or rf | knn; repeat the option (default: the shipped model, "
            "rf, knn); the first is timed and compared with the others"
        ),
    ] = None,
    support_sizes: Annotated[str, typer.Option(help="comma-separated support sizes")] = "16,32,64",
    repeats: Annotated[int, typer.Option(help="draws per task", min=1, max=1000)] = 10,
    seed: Annotated[int, typer.Option(help="base seed", min=0, max=SEED_MAX)] = 0,
    out: Annotated[
        Path, typer.Option(help="output prefix: writes OUT.json, OUT.md and OUT.png")
    ] = Path("bench-model"),
    featurize_n: Annotated[
        int,
        typer.Option(help="molecules for the featurize throughput (0 = skip)", min=0, max=10**7),
    ] = 5000,
    score_n: Annotated[
        int, typer.Option(help="library size for the score throughput (0 = skip)", min=0, max=10**8)
    ] = 20_000,
    int8_model: Annotated[
        Path | None, typer.Option(help="int8 variant of the first model for the score figures")
    ] = None,
    train_slice: TrainSlice = None,
    slice_seed: SliceSeed = 0,
) -> None:
    """ΔAUPRC at several support sizes for models and baselines, per-task scatter, throughput."""
    sizes = int_list(support_sizes, "--support-sizes")
    check_options(slice_check(train_slice, "--train-slice", whole=True))

    def body() -> dict[str, Any]:
        from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
        from metascreen.pipelines.bench_model import run_model_bench

        models = list(model) if model else [str(DEFAULT_MODEL_DIR), "rf", "knn"]
        return run_model_bench(
            data_dir,
            models,
            tuple(sizes),
            repeats,
            seed,
            out,
            featurize_n,
            score_n,
            int8_model,
            progress=progress_enabled(),
            train_slice=train_slice,
            slice_seed=slice_seed,
        )

    r = run(body)
    from metascreen.pipelines.bench_model import render_markdown

    typer.echo(render_markdown(r))
    typer.echo(
        f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}, {out.with_suffix('.png')}"
    )
