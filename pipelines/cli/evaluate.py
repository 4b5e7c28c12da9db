"""``metascreen evaluate molecules|movielens``: the FS-Mol and MeLU evaluation protocols."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from metascreen.pipelines.cli.common import (
    SEED_MAX,
    SliceSeed,
    TrainSlice,
    bad_option,
    check_options,
    int_list,
    progress_enabled,
    run,
    slice_check,
    write_json,
)

app = typer.Typer(
    help="Evaluate a model or baseline with the FS-Mol protocol.", no_args_is_help=True
)


@app.command("molecules")
def evaluate_molecules(
    data_dir: Annotated[Path, typer.Argument(help="folder of FS-Mol task files (*.jsonl.gz)")],
    model: Annotated[
        str | None,
        typer.Option(help="model artifact folder, or rf | knn (default: the shipped model)"),
    ] = None,
    support_size: Annotated[
        int, typer.Option(help="support set size per task", min=1, max=100_000)
    ] = 16,
    repeats: Annotated[
        int, typer.Option(help="draws per task; repeat r uses seed + r", min=1, max=10_000)
    ] = 10,
    seed: Annotated[int, typer.Option(help="base seed", min=0, max=SEED_MAX)] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the result JSON here")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="feature cache (off by default)")] = None,
    train_slice: TrainSlice = None,
    slice_seed: SliceSeed = 0,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect evaluate flow")
    ] = False,
) -> None:
    """ΔAUPRC with FS-Mol's protocol: stratified support, query = rest, mean over repeats then tasks."""
    check_options(
        slice_check(train_slice, "--train-slice", whole=True),
        (not (flow and train_slice), "--train-slice", "is not supported with --flow"),
    )
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
        from metascreen.models.workflows.molecules import evaluate_model, train_slice_files

        files = train_slice_files(data_dir, train_slice, slice_seed) if train_slice else None
        res, label, n_invalid = evaluate_model(
            data_dir,
            model,
            (support_size,),
            repeats,
            seed,
            cache_dir,
            progress=progress_enabled(),
            files=files,
        )
        out = res[support_size].to_json(label, n_invalid)
        if train_slice:
            out["train_slice"] = {"fraction": train_slice, "slice_seed": slice_seed}
        return out

    out = run(body)
    out["seconds"] = round(time.perf_counter() - start, 2)
    typer.echo(f"{'model':<40} {'support':>7} {'tasks':>5} {'ΔAUPRC':>8} {'std':>7} {'seconds':>8}")
    typer.echo(
        f"{str(out['model'])[-40:]:<40} {out['support_size']:>7} {out['n_tasks']:>5} {out['mean']:>8.4f} {out['std']:>7.4f} {out['seconds']:>8.1f}"
    )
    if out["n_skipped_draws"] or out["n_invalid_smiles_excluded"]:
        typer.echo(
            f"({out['n_skipped_draws']} draws skipped for a single-class fold; {out['n_invalid_smiles_excluded']} invalid SMILES rows excluded)"
        )
    write_json(json_out, out)


@app.command("movielens")
def evaluate_movielens(
    data_dir: Annotated[Path, typer.Argument(help="MovieLens-format folder")],
    model: Annotated[
        list[str],
        typer.Option(
            help="model artifact folder, or a baseline: global-mean | item-mean | item-bias | mf "
            "| mf-staircase; with --protocol topn a reference: popular | ease | itemknn | mf | "
            "ials | ease-rated (several: repeat the option or separate by commas)"
        ),
    ],
    protocol: Annotated[
        Literal["melu", "topn"],
        typer.Option(
            help="melu (10 query ratings, MAE and nDCG@1/@3) | topn (rank the whole catalogue "
            "for hold-out users given n ratings)"
        ),
    ] = "melu",
    seed: Annotated[
        int,
        typer.Option(help="seed of each user's query (topn: support) draw", min=0, max=SEED_MAX),
    ] = 0,
    users: Annotated[
        Literal["all", "holdout"] | None,
        typer.Option(
            help="all (every user with 13–100 ratings) | holdout (the held-out users); "
            "topn always evaluates the held-out users [default: all; topn: holdout]"
        ),
    ] = None,
    holdout_fraction: Annotated[
        float | None,
        typer.Option(help="hold-out share (default: the model's, else 0.1)", min=0, max=1),
    ] = None,
    split_seed: Annotated[
        int | None,
        typer.Option(help="hold-out seed (default: the model's, else 0)", min=0, max=SEED_MAX),
    ] = None,
    support_n: Annotated[
        str, typer.Option(help="topn: given ratings per user, e.g. 5,10,20")
    ] = "10",
    k: Annotated[str, typer.Option("--k", help="topn: list lengths, e.g. 10,20")] = "10,20",
    against: Annotated[
        str | None,
        typer.Option(
            help="topn: the model the paired intervals are against (default: the best reference "
            "by NDCG@10 among those evaluated)"
        ),
    ] = None,
    objective: Annotated[
        Literal["topn", "rating"],
        typer.Option(help="topn: rank an artifact by its top-N model or by predicted rating"),
    ] = "topn",
    include: Annotated[
        list[Path] | None,
        typer.Option(
            help="topn: add the models of an earlier report (same data, hold-out, --seed, "
            "--support-n and --k) without evaluating them again, e.g. fitted references"
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="write the result JSON here (topn: and .md, .png beside it)"),
    ] = None,
    flow: Annotated[
        bool, typer.Option("--flow/--no-flow", help="run as the Prefect evaluate flow")
    ] = False,
) -> None:
    """MeLU protocol: per user 10 seeded query ratings, the rest support; MAE and nDCG@1/@3.

    ``--protocol topn``: per hold-out user n seeded given ratings; the rest rated ≥ 4 are
    relevant; Recall, NDCG, HitRate, MRR @k over the whole catalogue minus the support, coverage
    and popularity rank of what is shown, paired 95% intervals against a reference.
    """
    models = [m.strip() for opt in model for m in opt.split(",") if m.strip()]
    if protocol == "topn":
        _evaluate_topn(
            data_dir,
            models,
            seed,
            users,
            holdout_fraction,
            split_seed,
            (support_n, k, against, objective, include or []),
            json_out,
            flow,
        )
        return
    check_options(
        (len(models) == 1, "--model", "the melu protocol takes one model"),
        (support_n == "10", "--support-n", "is only for --protocol topn"),
        (k == "10,20", "--k", "is only for --protocol topn"),
        (against is None, "--against", "is only for --protocol topn"),
        (not include, "--include", "is only for --protocol topn"),
    )
    who: Literal["all", "holdout"] = users or "all"

    def body() -> dict[str, Any]:
        if flow:
            from metascreen.pipelines.flows import evaluate_flow

            res = evaluate_flow(
                str(data_dir),
                models,
                seed=seed,
                domain="movielens",
                users=who,
                holdout_fraction=holdout_fraction,
                split_seed=split_seed,
            )
            return next(iter(res.values()))
        from metascreen.models.workflows.movielens import evaluate_ratings

        return evaluate_ratings(
            data_dir,
            models[0],
            seed,
            who,
            holdout_fraction,
            split_seed,
        )

    out = run(body)
    typer.echo(f"{'model':<40} {'users':>6} {'MAE':>7} {'nDCG@1':>7} {'nDCG@3':>7} {'seconds':>8}")
    typer.echo(
        f"{str(out['model'])[-40:]:<40} {out['n_users']:>6} {out['mae']:>7.4f} "
        f"{out['ndcg@1']:>7.4f} {out['ndcg@3']:>7.4f} {out['seconds']:>8.1f}"
    )
    write_json(json_out, out)


def _evaluate_topn(
    data_dir: Path,
    models: list[str],
    seed: int,
    users: str | None,
    holdout_fraction: float | None,
    split_seed: int | None,
    topn: tuple[str, str, str | None, Literal["topn", "rating"], list[Path]],
    json_out: Path | None,
    flow: bool,
) -> None:
    """``evaluate movielens --protocol topn``: run, print the table, write JSON/MD/PNG."""
    support_text, k_text, against, objective, include = topn
    support_ns = int_list(support_text, "--support-n")
    ks = int_list(k_text, "--k")
    included = {p: _read_report(p, support_ns, ks, seed) for p in include}
    known = [*models, *(m for r in included.values() for m in r["models"])]
    check_options(
        (bool(models), "--model", "no model given"),
        (users != "all", "--users", "all: the topn protocol evaluates the held-out users"),
        (
            holdout_fraction is None or 0 < holdout_fraction < 1,
            "--holdout-fraction",
            f"{holdout_fraction} must be in (0, 1) for the topn protocol",
        ),
        (
            len(set(support_ns)) == len(support_ns),
            "--support-n",
            f"{support_text!r} repeats a size",
        ),
        (
            against is None or any(against in (m, Path(m).name) for m in known),
            "--against",
            f"{against} is not among the models evaluated",
        ),
    )
    outputs = (
        [Path(json_out), Path(json_out).with_suffix(".md"), Path(json_out).with_suffix(".png")]
        if json_out
        else []
    )

    def body() -> dict[str, Any]:
        from metascreen.pipelines.topn_report import add_paired, merge_reports, write_topn_report

        if flow:
            from metascreen.pipelines.flows import evaluate_flow

            res = evaluate_flow(
                str(data_dir),
                models,
                seed=seed,
                domain="movielens",
                holdout_fraction=holdout_fraction,
                split_seed=split_seed,
                protocol="topn",
                topn={
                    "support_ns": list(support_ns),
                    "ks": list(ks),
                    "objective": objective,
                    "against": against,
                },
            )
            r = next(iter(res.values()))
        else:
            from metascreen.models.workflows.movielens_topn import evaluate_topn_movielens

            r = evaluate_topn_movielens(
                data_dir, models, support_ns, ks, seed, holdout_fraction, split_seed, objective
            )
        for path, other in included.items():
            merge_reports(r, other, str(path))
        add_paired(r, against, seed)
        if json_out is not None:
            write_topn_report(r, json_out)
        return r

    from metascreen.pipelines.topn_report import render_text

    out = run(body, outputs=outputs, lock=Path(json_out) if json_out else None)
    typer.echo(render_text(out))
    if json_out is not None:
        typer.echo(f"wrote {json_out} (+ .md, .png)")


def _read_report(path: Path, support_ns: tuple[int, ...], ks: tuple[int, ...], seed: int) -> Any:
    """An ``--include`` report, checked against this run's options before any work."""
    import json

    try:
        r = json.loads(Path(path).read_text())
        same = (r["protocol"], r["support_ns"], r["ks"], r["seed"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise bad_option("--include", f"{path}: not a top-N report ({err})") from None
    want = ("topn", list(support_ns), sorted(set(ks)), seed)
    if same != want:
        raise bad_option(
            "--include", f"{path} has (protocol, support sizes, ks, seed) {same}, this run {want}"
        )
    return r
