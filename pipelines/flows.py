"""Prefect flows: thin orchestration over the plain functions in ``metascreen.models.workflows``.

Ephemeral (embedded) Prefect by default; a real server when ``PREFECT_API_URL`` is set. Flows
that write files take a ``results`` parameter: relative output paths resolve under it (default
``$METASCREEN_RESULTS``, see ``pipelines/results.py``). Every flow publishes its results as
Prefect artifacts (a summary table, output paths, and the flow's own tables and plot).
``pipelines/`` is the only package of metascreen that imports prefect (here, in ``retrain``,
``distributed`` and ``logs``). The deployments in ``deploy/prefect.yaml`` point at this module.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from metascreen.models.workflows import molecules as workflows
from metascreen.models.workflows.common import DEFAULT_CACHE_DIR
from metascreen.pipelines.demo import SAMPLE_DIR, run_demo
from metascreen.pipelines.domain import evaluate_json, prepare_stats, resolve_domain, score_json
from metascreen.pipelines.logs import run_logger
from metascreen.pipelines.report import evaluation_table
from metascreen.pipelines.results import (
    find_input,
    model_version,
    publish_outputs,
    publish_summary,
    publish_table,
    publish_top,
    under_results,
)

logger = logging.getLogger(__name__)


@task(name="prepare-tasks")
def prepare_tasks_task(
    data_dir: str, cache_dir: str | None = None, workers: int = 2, domain: str = "molecules"
) -> dict[str, Any]:
    """Load and featurize a task folder with the default featurizer; return its statistics."""
    return prepare_stats(data_dir, cache_dir, workers, domain=domain)


@flow(name="prepare_tasks")
def prepare_tasks_flow(
    data_dir: str, cache_dir: str | None = None, workers: int = 2, domain: str = "molecules"
) -> dict[str, Any]:
    """Validate a task folder: FS-Mol (tasks, rows, invalid SMILES, skipped files) or MovieLens
    (``domain="movielens"``: users, ratings, items, rejected rows)."""
    stats = prepare_tasks_task(data_dir, cache_dir, workers, domain)
    publish_summary(
        "prepare",
        {"data": str(Path(data_dir).resolve()), "domain": domain}
        | {k: v for k, v in stats.items() if isinstance(v, (int, float, str))},
    )
    if domain == "movielens":
        run_logger(logger).info(
            "prepared %s: %d users, %d ratings (%d rejected)",
            data_dir,
            stats["n_users"],
            stats["n_ratings"],
            stats["n_rejected"],
        )
        return stats
    run_logger(logger).info(
        "prepared %s: %d tasks, %d rows (%d invalid SMILES excluded)",
        data_dir,
        stats["n_tasks"],
        stats["n_rows"],
        stats["n_invalid"],
    )
    return stats


@task(name="prepare-molecules")
def prepare_molecules_task(
    table: str, out_dir: str, config: dict[str, Any], columns: dict[str, str]
) -> dict[str, Any]:
    """Activity table → FS-Mol task folder (``prepare_table``); returns the summary."""
    from metascreen.domains.molecules.prepare import PrepareConfig
    from metascreen.domains.molecules.prepare_io import prepare_table

    return prepare_table(Path(table), Path(out_dir), PrepareConfig(**config), **columns)


@flow(name="prepare_molecules")
def prepare_molecules_flow(
    table: str,
    out_dir: str,
    split: str = "target",
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    min_size: int = 32,
    max_size: int = 5000,
    balance: tuple[float, float] = (0.3, 0.7),
    max_mol_weight: float = 900.0,
    columns: dict[str, str] | None = None,
    results: str | None = None,
) -> dict[str, Any]:
    """Turn an activity table (a ChEMBL web export, or ``columns``: role → column name) into
    FS-Mol task files with FS-Mol's cleaning rules, as ``metascreen prepare molecules TABLE``.

    ``out_dir`` must be new (relative = under the results root). Publishes the Markdown summary
    (rows in/kept/quarantined, splits, quarantine reasons, threshold rules) and the output paths
    as artifacts.
    """
    from metascreen.domains.molecules.prepare_io import summary_markdown

    out = under_results(out_dir, results)
    config = {
        "split": split,
        "fractions": tuple(fractions),
        "seed": seed,
        "min_size": min_size,
        "max_size": max_size,
        "balance": tuple(balance),
        "max_mol_weight": max_mol_weight,
    }
    summary = prepare_molecules_task(table, str(out), config, columns or {})
    run_logger(logger).info(
        "prepared %s: %d of %d rows kept in %d assays, %d quarantined",
        table,
        summary["rows_kept"],
        summary["rows_in"],
        summary["assays_kept"],
        summary["rows_quarantined"],
    )
    create_markdown_artifact(
        key="prepare-molecules-summary",
        markdown=summary_markdown(summary, table),
        description="prepare molecules: rows, splits, quarantine reasons, thresholds",
    )
    publish_outputs(
        "prepare-molecules",
        {
            "tasks": out,
            "quarantine": out / "quarantine.csv",
            "summary": out / "prepare.json",
        },
    )
    return summary


@task(name="meta-train")
def meta_train_task(
    data_dir: str,
    out_dir: str,
    learner: dict[str, Any],
    train: dict[str, Any],
    domain: str = "molecules",
    **kwargs: Any,
) -> str:
    """Meta-train and write an artifact; returns its folder (``learner`` = the model config)."""
    if resolve_domain(domain) == "movielens":
        from metascreen.models.workflows.movielens import train_rating_model

        return str(train_rating_model(Path(data_dir), Path(out_dir), learner, train, **kwargs))
    return str(workflows.train_model(Path(data_dir), Path(out_dir), learner, train, **kwargs))


@flow(name="meta_train")
def meta_train_flow(
    data_dir: str,
    out_dir: str,
    learner: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    domain: str = "molecules",
    results: str | None = None,
    **kwargs: Any,
) -> str:
    """Meta-train a learner on FS-Mol-format tasks (GPU when present), or the rating predictor on
    MovieLens-format data (``domain="movielens"``), and write a model artifact.

    ``out_dir`` relative: under the results root (``results``, default $METASCREEN_RESULTS)."""
    import time

    start = time.perf_counter()
    out = str(under_results(out_dir, results))
    path = meta_train_task(data_dir, out, learner or {}, train or {}, domain, **kwargs)
    run_logger(logger).info("model artifact: %s", path)
    meta = json.loads((Path(path) / "metadata.json").read_text())
    publish_summary(
        "meta-train",
        {
            "domain": domain,
            "data": str(Path(data_dir).resolve()),
            **model_version(path),
            "valid": meta.get("metrics", {}).get("valid", ""),
            "seconds": time.perf_counter() - start,
        },
    )
    publish_outputs("meta-train", {"model artifact": path})
    return path


@task(name="evaluate")
def evaluate_task(
    data_dir: str,
    model: str | None,
    support_sizes: list[int],
    repeats: int,
    seed: int,
    cache_dir: str | None = None,
    domain: str = "molecules",
    **options: Any,
) -> dict[str, Any]:
    """Run the FS-Mol protocol (contract JSON per support size) or MeLU's (``movielens``)."""
    return evaluate_json(
        data_dir, model, support_sizes, repeats, seed, cache_dir, domain, **options
    )


@task(name="evaluate-topn")
def _evaluate_topn(
    data_dir: str,
    models: list[str],
    seed: int,
    holdout_fraction: float | None,
    split_seed: int | None,
    topn: dict[str, Any],
) -> dict[str, Any]:
    """The top-N protocol (``workflows.movielens_topn``) with paired intervals (``topn``'s
    ``against``, default the best reference)."""
    from metascreen.models.workflows.movielens_topn import evaluate_topn_movielens
    from metascreen.pipelines.topn_report import add_paired

    r = evaluate_topn_movielens(
        Path(data_dir),
        models,
        topn.get("support_ns", [10]),
        topn.get("ks", [10, 20]),
        seed,
        holdout_fraction,
        split_seed,
        topn.get("objective", "topn"),
    )
    return add_paired(r, topn.get("against"), seed)


@flow(name="evaluate")
def evaluate_flow(
    data_dir: str,
    models: list[str] | None = None,
    support_sizes: list[int] | None = None,
    repeats: int = 10,
    seed: int = 0,
    cache_dir: str | None = None,
    domain: str = "molecules",
    users: str = "all",
    holdout_fraction: float | None = None,
    split_seed: int | None = None,
    results: str | None = None,
    protocol: str = "melu",
    topn: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate models and/or baselines side by side; publishes a Markdown table artifact.

    ``domain="movielens"``: MeLU's protocol on ``users`` (all | holdout) of ``data_dir``, or with
    ``protocol="topn"`` the top-N protocol on the hold-out users (``topn``: ``support_ns``,
    ``ks``, ``objective``); the result is then ``{"topn": report}``.
    A relative model folder that exists under the results root (``results``) is read from there.
    """
    names: list[str | None] = [find_input(m, results) for m in models] if models else [None]
    if resolve_domain(domain) == "movielens" and protocol == "topn":
        from metascreen.pipelines.topn_report import render_markdown

        ms = [str(m) for m in names if m]
        r = _evaluate_topn(data_dir, ms, seed, holdout_fraction, split_seed, topn or {})
        create_markdown_artifact(
            key="evaluation",
            markdown=render_markdown(r),
            description=f"top-N protocol on {data_dir}",
        )
        publish_summary(
            "evaluate",
            {
                "domain": domain,
                "protocol": "topn",
                "data": str(Path(data_dir).resolve()),
                "models": list(r["models"]),
            },
        )
        return {"topn": r}
    if resolve_domain(domain) == "movielens":
        opts = {"users": users, "holdout_fraction": holdout_fraction, "split_seed": split_seed}
        res = {str(m): evaluate_task(data_dir, m, [], 0, seed, None, domain, **opts) for m in names}
        rows = ["| model | users | MAE | nDCG@1 | nDCG@3 |", "|---|---|---|---|---|"]
        rows += [
            f"| {m} | {r['n_users']} | {r['mae']:.4f} | {r['ndcg@1']:.4f} | {r['ndcg@3']:.4f} |"
            for m, r in res.items()
        ]
        create_markdown_artifact(
            key="evaluation",
            markdown="\n".join(rows) + "\n",
            description=f"MeLU protocol on {data_dir}",
        )
        publish_table(
            "evaluation-figures",
            [
                {"model": m, **{k: v for k, v in r.items() if isinstance(v, (int, float, str))}}
                for m, r in res.items()
            ],
            f"MeLU protocol on {Path(data_dir).resolve()}: figures per model",
        )
        publish_summary(
            "evaluate",
            {"domain": domain, "data": str(Path(data_dir).resolve()), "models": list(res)},
        )
        return res
    out = {
        m: evaluate_task(data_dir, m, support_sizes or [16], repeats, seed, cache_dir)
        for m in names
    }
    create_markdown_artifact(
        key="evaluation",
        markdown=evaluation_table(out),
        description=f"FS-Mol ΔAUPRC on {data_dir}",
    )
    publish_table(
        "evaluation-figures",
        [
            {
                "model": str(m or "default"),
                "support_size": int(n),
                **{k: v for k, v in r.items() if isinstance(v, (int, float, str))},
            }
            for m, per in out.items()
            for n, r in per.items()
        ],
        f"FS-Mol ΔAUPRC on {Path(data_dir).resolve()}: per model and support size",
    )
    publish_summary(
        "evaluate",
        {
            "domain": domain,
            "data": str(Path(data_dir).resolve()),
            "models": [str(m or "default") for m in out],
            "support_sizes": sorted({int(n) for per in out.values() for n in per}),
            "repeats": repeats,
        },
    )
    return {str(k): v for k, v in out.items()}


@flow(name="export")
def export_flow(
    model_dir: str, out_dir: str, domain: str = "molecules", results: str | None = None
) -> str:
    """Re-export a model artifact's weights to ONNX (fails unless parity with torch holds).

    ``out_dir`` relative: under the results root (``results``, default $METASCREEN_RESULTS)."""
    out = under_results(out_dir, results)
    if resolve_domain(domain) == "movielens":
        from metascreen.models.workflows.movielens import export_rating_model

        path = str(export_rating_model(Path(model_dir), out))
    else:
        path = str(workflows.export_model(Path(model_dir), out))
    publish_summary("export", {"domain": domain, "source": model_dir, **model_version(path)})
    publish_outputs("export", {"model artifact": path})
    return path


@task(name="batch-score")
def batch_score_task(
    model_dir: str, support: str, library: str, output: str, **kwargs: Any
) -> dict[str, Any]:
    """Score a library (or, for ``domain="movielens"``, candidates per user) with onnxruntime."""
    return score_json(model_dir, support, library, output, **kwargs)


@flow(name="batch_score")
def batch_score_flow(
    model_dir: str | None,
    support: str,
    library: str,
    output: str,
    chunk_size: int = 4096,
    workers: int = 2,
    dask_workers: int | None = None,
    dask_address: str | None = None,
    domain: str = "molecules",
    k: int = 10,
    results: str | None = None,
    objective: str = "auto",
) -> dict[str, Any]:
    """Adapt to an assay's support set and score a library (onnxruntime only).

    ``model_dir`` empty: the registry's current model ($METASCREEN_REGISTRY), else the shipped
    one. ``output``: .parquet, .csv or .sdf; relative = under the results root (``results``,
    default $METASCREEN_RESULTS). ``dask_workers``/``dask_address``: chunked, resumable scoring
    on Dask (see ``metascreen.pipelines.distributed``) instead of one process with ``workers``
    featurizers. ``domain="movielens"``: ``support`` holds users' ratings, ``library`` the
    candidate items; writes the top ``k`` unrated candidates per user, ranked by ``objective``
    (``auto``: the model's top-N recommender when it has one; ``topn``; ``rating``). Publishes a summary
    table, the top 50 rows by score and the output paths as artifacts.
    """
    out_path = str(under_results(output, results))
    model_dir = find_input(model_dir, results)
    if resolve_domain(domain) == "movielens":
        rep = batch_score_task(
            model_dir or "",
            support,
            library,
            out_path,
            domain="movielens",
            k=k,
            objective=objective,
        )
        run_logger(logger).info(
            "scored %d users; quarantined %d rating and %d candidate rows",
            rep["n_users"],
            rep["n_ratings_quarantined"],
            rep["n_candidates_quarantined"],
        )
        summary = {
            "rows_in": rep["n_ratings_in"] + rep["n_candidates_in"],
            "ratings_in": rep["n_ratings_in"],
            "ratings_quarantined": rep["n_ratings_quarantined"],
            "candidates_in": rep["n_candidates_in"],
            "candidates_quarantined": rep["n_candidates_quarantined"],
            "users": rep["n_users"],
            "rows_out": rep["n_rows_out"],
            "ranked_by": rep["objective"],
        }
    else:
        from metascreen.models.registry.store import resolve_model_dir

        model_dir = str(resolve_model_dir(model_dir or None))
        if dask_workers or dask_address:
            from metascreen.pipelines.distributed import score_distributed

            rep = score_distributed(
                Path(model_dir),
                Path(support),
                Path(library),
                Path(out_path),
                workers=dask_workers,
                address=dask_address,
                chunk_size=chunk_size,
            )
        else:
            rep = batch_score_task(
                model_dir, support, library, out_path, chunk_size=chunk_size, workers=workers
            )
        run_logger(logger).info(
            "scored %d rows, quarantined %d", rep["n_scored"], rep["n_quarantined"]
        )
        summary = {
            "rows_in": rep["n_input"],
            "scored": rep["n_scored"],
            "quarantined": rep["n_quarantined"],
            "support_rows": rep["n_support"],
        }
    publish_summary(
        "batch-score",
        {
            "domain": domain,
            **summary,
            **model_version(model_dir),
            "seconds": rep["seconds"],
            "input": str(Path(library).resolve()),
        },
    )
    publish_top("batch-score", rep["output"])
    publish_outputs("batch-score", {"scores": rep["output"], "quarantine": rep.get("quarantine")})
    return rep


@task(name="meta-train-policy")
def meta_train_policy_task(
    data_dir: str,
    out_dir: str,
    policy_cfg: dict[str, Any] | None = None,
    train_cfg: dict[str, Any] | None = None,
    model_dir: str | None = None,
    valid_dir: str | None = None,
    run_dir: str | None = None,
    cache_dir: str | None = None,
    workers: int = 2,
) -> str:
    """Warm start + REINFORCE on FS-Mol train tasks; writes a policy artifact."""
    from metascreen.models.workflows.policy import train_policy_model

    return str(
        train_policy_model(
            Path(data_dir),
            Path(out_dir),
            policy_cfg,
            train_cfg,
            Path(model_dir) if model_dir else None,
            Path(valid_dir) if valid_dir else None,
            Path(cache_dir) if cache_dir else None,
            Path(run_dir) if run_dir else None,
            workers=workers,
            progress=False,
        )
    )


@flow(name="meta_train_policy")
def meta_train_policy_flow(
    data_dir: str,
    out_dir: str,
    policy_cfg: dict[str, Any] | None = None,
    train_cfg: dict[str, Any] | None = None,
    model_dir: str | None = None,
    valid_dir: str | None = None,
    run_dir: str | None = None,
    cache_dir: str | None = str(DEFAULT_CACHE_DIR),
    results: str | None = None,
    workers: int = 2,
) -> str:
    """Meta-train the screening policy; publishes its valid figures as a Markdown artifact.

    ``out_dir``/``run_dir`` relative: under the results root (``results``)."""
    out_dir = str(under_results(out_dir, results))
    run_dir = str(under_results(run_dir, results)) if run_dir else None
    path = meta_train_policy_task(
        data_dir, out_dir, policy_cfg, train_cfg, model_dir, valid_dir, run_dir, cache_dir, workers
    )
    meta = json.loads((Path(path) / "metadata.json").read_text())
    rows = "\n".join(
        f"| {f} | {r['mean_hits']:.3f} | {r['mean_hit_fraction']:.3f} |"
        for f, r in meta["metrics"].get("valid", {}).items()
    )
    create_markdown_artifact(
        key="policy-training",
        markdown=f"# Policy {path}\n\n| active fraction | valid hits | hit fraction |\n|---|---|---|\n{rows}\n",
        description="screening policy valid figures",
    )
    publish_summary(
        "meta-train-policy", {"data": str(Path(data_dir).resolve()), **model_version(path)}
    )
    publish_outputs("meta-train-policy", {"policy artifact": path, "run": run_dir})
    return path


@task(name="simulate")
def simulate_task(data_dir: str, policy: str | None, **kwargs: Any) -> dict[str, Any]:
    """One policy in the screening simulator; the ``simulate`` contract JSON."""
    from metascreen.models.workflows.policy import simulate_molecules

    model = kwargs.pop("model", None)
    cache_dir = kwargs.pop("cache_dir", None)
    return simulate_molecules(
        Path(data_dir),
        policy,
        model_dir=Path(model) if model else None,
        cache_dir=Path(cache_dir) if cache_dir else None,
        progress=False,
        **kwargs,
    ).to_json()


@flow(name="simulate")
def simulate_flow(
    data_dir: str,
    policies: list[str | None] | None = None,
    budget: int = 32,
    batch: int = 1,
    init: int = 0,
    active_fraction: float = 0.1,
    repeats: int = 5,
    seed: int = 0,
    model: str | None = None,
    cache_dir: str | None = None,
    plot: str | None = None,
    results: str | None = None,
    options: dict[str, Any] | None = None,
    train_slice: float | None = None,
    slice_seed: int = 0,
    min_task_size: int = 1,
) -> dict[str, dict[str, Any]]:
    """Policies side by side on the same pools; publishes a table and (with ``plot``) the hit curves.

    ``plot`` relative: under the results root (``results``, default $METASCREEN_RESULTS)."""
    import time

    start = time.perf_counter()
    from metascreen.models.screening.factory import policy_label
    from metascreen.pipelines import policy_report

    out = {
        policy_label(p): simulate_task(
            data_dir,
            p,
            budget=budget,
            batch=batch,
            init=init,
            active_fraction=active_fraction,
            repeats=repeats,
            seed=seed,
            model=find_input(model, results),
            cache_dir=cache_dir,
            options=options,
            train_slice=train_slice,
            slice_seed=slice_seed,
            min_task_size=min_task_size,
        )
        for p in (policies or [None])
    }
    md = policy_report.simulation_table(out)
    plot_path = under_results(plot, results) if plot else None
    if plot_path is not None:
        policy_report.plot_hit_curves(out, plot_path)
        md += f"\n![hit curves]({plot_path.resolve().as_uri()})\n"
    create_markdown_artifact(
        key="simulation", markdown=md, description=f"screening simulation on {data_dir}"
    )
    publish_table(
        "simulation-hits",
        [
            {"policy": name, **{k: v for k, v in r.items() if isinstance(v, (int, float, str))}}
            for name, r in out.items()
        ],
        f"hits per policy on {Path(data_dir).resolve()}",
    )
    publish_summary(
        "simulate",
        {
            "data": str(Path(data_dir).resolve()),
            "policies": list(out),
            "tasks": max((int(r.get("n_tasks", 0)) for r in out.values()), default=0),
            "budget": budget,
            "repeats": repeats,
            **model_version(model),
            "seconds": time.perf_counter() - start,
        },
    )
    publish_outputs("simulate", {"plot": plot_path}, plot=plot_path)
    return out


@flow(name="demo")
def demo_flow(
    out_dir: str,
    steps: int = 300,
    repeats: int = 5,
    workers: int = 2,
    data_dir: str | None = None,
    results: str | None = None,
) -> str:
    """The whole pipeline on the bundled FS-Mol sample (or ``data_dir``); returns the report folder.

    ``out_dir`` relative: under the results root (``results``, default $METASCREEN_RESULTS)."""
    folder = str(
        run_demo(
            under_results(out_dir, results),
            steps=steps,
            repeats=repeats,
            workers=workers,
            stages=_Stages(),
            data_dir=Path(data_dir) if data_dir else SAMPLE_DIR,
        )
    )
    report = json.loads((Path(folder) / "report.json").read_text())
    scoring = report.get("scoring", {})
    publish_summary(
        "demo",
        {
            "rows_in": scoring.get("n_input"),
            "scored": scoring.get("n_scored"),
            "quarantined": scoring.get("n_quarantined"),
            **model_version(report.get("model")),
            "seconds": report.get("seconds"),
        },
    )
    publish_outputs(
        "demo",
        {
            "report": Path(folder) / "report.md",
            "scores": scoring.get("output"),
            "model": report.get("model"),
        },
        plot=Path(folder) / "evaluation.png",
    )
    return folder


class _Stages:
    """Runs each demo stage as a Prefect task so the demo shows up as a tracked flow."""

    def prepare(self, data_dir: str) -> dict[str, Any]:
        return prepare_tasks_task(data_dir)

    def train(
        self,
        data_dir: str,
        out_dir: str,
        learner: dict[str, Any],
        train: dict[str, Any],
        **kwargs: Any,
    ) -> str:
        return meta_train_task(data_dir, out_dir, learner, train, **kwargs)

    def evaluate(
        self, data_dir: str, model: str, support_sizes: list[int], repeats: int, seed: int
    ) -> dict[str, Any]:
        return evaluate_task(data_dir, model, support_sizes, repeats, seed)

    def score(self, model_dir: str, support: str, library: str, output: str) -> dict[str, Any]:
        return batch_score_task(model_dir, support, library, output)

    def publish(self, markdown: str) -> None:
        create_markdown_artifact(
            key="demo-report", markdown=markdown, description="metascreen demo"
        )
