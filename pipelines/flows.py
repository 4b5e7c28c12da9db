"""Prefect flows: thin orchestration over the plain functions in ``metascreen.models.workflows``.

Ephemeral (embedded) Prefect by default; a real server when ``PREFECT_API_URL`` is set.
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
from metascreen.pipelines.demo import SAMPLE_DIR, run_demo
from metascreen.pipelines.domain import evaluate_json, prepare_stats, resolve_domain, score_json
from metascreen.pipelines.logs import run_logger
from metascreen.pipelines.report import evaluation_table

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
    **kwargs: Any,
) -> str:
    """Meta-train a learner on FS-Mol-format tasks (GPU when present), or the rating predictor on
    MovieLens-format data (``domain="movielens"``), and write a model artifact."""
    path = meta_train_task(data_dir, out_dir, learner or {}, train or {}, domain, **kwargs)
    run_logger(logger).info("model artifact: %s", path)
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
) -> dict[str, dict[str, Any]]:
    """Evaluate models and/or baselines side by side; publishes a Markdown table artifact.

    ``domain="movielens"``: MeLU's protocol on ``users`` (all | holdout) of ``data_dir``.
    """
    names: list[str | None] = list(models) if models else [None]
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
    return {str(k): v for k, v in out.items()}


@flow(name="export")
def export_flow(model_dir: str, out_dir: str, domain: str = "molecules") -> str:
    """Re-export a model artifact's weights to ONNX (fails unless parity with torch holds)."""
    if resolve_domain(domain) == "movielens":
        from metascreen.models.workflows.movielens import export_rating_model

        return str(export_rating_model(Path(model_dir), Path(out_dir)))
    return str(workflows.export_model(Path(model_dir), Path(out_dir)))


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
) -> dict[str, Any]:
    """Adapt to an assay's support set and score a library (onnxruntime only).

    ``model_dir`` empty: the registry's current model ($METASCREEN_REGISTRY), else the shipped
    one. ``dask_workers``/``dask_address``: chunked, resumable scoring on Dask (see
    ``metascreen.pipelines.distributed``) instead of one process with ``workers`` featurizers.
    ``domain="movielens"``: ``support`` holds users' ratings, ``library`` the candidate items;
    writes the top ``k`` unrated candidates per user.
    """
    if resolve_domain(domain) == "movielens":
        rep = batch_score_task(model_dir or "", support, library, output, domain="movielens", k=k)
        run_logger(logger).info(
            "scored %d users; quarantined %d rating and %d candidate rows",
            rep["n_users"],
            rep["n_ratings_quarantined"],
            rep["n_candidates_quarantined"],
        )
        return rep
    from metascreen.models.registry.store import resolve_model_dir

    model_dir = str(resolve_model_dir(model_dir or None))
    if dask_workers or dask_address:
        from metascreen.pipelines.distributed import score_distributed

        return score_distributed(
            Path(model_dir),
            Path(support),
            Path(library),
            Path(output),
            workers=dask_workers,
            address=dask_address,
            chunk_size=chunk_size,
        )
    rep = batch_score_task(
        model_dir, support, library, output, chunk_size=chunk_size, workers=workers
    )
    run_logger(logger).info("scored %d rows, quarantined %d", rep["n_scored"], rep["n_quarantined"])
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
    cache_dir: str | None = ".cache/metascreen",
) -> str:
    """Meta-train the screening policy; publishes its valid figures as a Markdown artifact."""
    path = meta_train_policy_task(
        data_dir, out_dir, policy_cfg, train_cfg, model_dir, valid_dir, run_dir, cache_dir
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
    options: dict[str, Any] | None = None,
    train_slice: float | None = None,
    slice_seed: int = 0,
    min_task_size: int = 1,
) -> dict[str, dict[str, Any]]:
    """Policies side by side on the same pools; publishes a table and (with ``plot``) the hit curves."""
    from metascreen.models.workflows.policy import policy_label
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
            model=model,
            cache_dir=cache_dir,
            options=options,
            train_slice=train_slice,
            slice_seed=slice_seed,
            min_task_size=min_task_size,
        )
        for p in (policies or [None])
    }
    md = policy_report.simulation_table(out)
    if plot:
        policy_report.plot_hit_curves(out, Path(plot))
        md += f"\n![hit curves]({Path(plot).resolve()})\n"
    create_markdown_artifact(
        key="simulation", markdown=md, description=f"screening simulation on {data_dir}"
    )
    return out


@flow(name="demo")
def demo_flow(
    out_dir: str, steps: int = 300, repeats: int = 5, workers: int = 2, data_dir: str | None = None
) -> str:
    """The whole pipeline on the bundled FS-Mol sample (or ``data_dir``); returns the report folder."""
    return str(
        run_demo(
            Path(out_dir),
            steps=steps,
            repeats=repeats,
            workers=workers,
            stages=_Stages(),
            data_dir=Path(data_dir) if data_dir else SAMPLE_DIR,
        )
    )


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
