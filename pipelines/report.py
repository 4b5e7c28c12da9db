"""Demo orchestration and reports (Markdown + JSON + PNG). No prefect import: flows pass stages in."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

from metascreen.domains.io import atomic_write_json, atomic_write_text
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
from metascreen.models.workflows import molecules as workflows

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SAMPLE_DIR = DATA_DIR / "fsmol-sample"
LIBRARY = DATA_DIR / "library" / "library.csv"
SUPPORT = DATA_DIR / "library" / "support.csv"


class Stages(Protocol):
    """The demo's steps; the Prefect flow runs each as a task, tests call functions directly."""

    def prepare(self, data_dir: str) -> dict[str, Any]: ...  # noqa: D102
    def train(
        self,
        data_dir: str,
        out_dir: str,
        learner: dict[str, Any],
        train: dict[str, Any],
        **kwargs: Any,
    ) -> str: ...  # noqa: D102
    def evaluate(
        self, data_dir: str, model: str, support_sizes: list[int], repeats: int, seed: int
    ) -> dict[str, Any]: ...  # noqa: D102
    def score(self, model_dir: str, support: str, library: str, output: str) -> dict[str, Any]: ...  # noqa: D102
    def publish(self, markdown: str) -> None: ...  # noqa: D102


def evaluation_table(results: dict[Any, dict[str, Any]]) -> str:
    """Markdown table: one row per model, one column per support size (mean ± std over tasks)."""
    sizes = sorted({int(n) for r in results.values() for n in r})
    lines = [
        "| model | " + " | ".join(f"ΔAUPRC@{n}" for n in sizes) + " | tasks |",
        "|---|" + "---|" * (len(sizes) + 1),
    ]
    for name, per in results.items():
        cells = []
        for n in sizes:
            r = per.get(str(n))
            cells.append(
                f"{r['mean']:.4f} ± {r['std']:.4f}" if r and not math.isnan(r["mean"]) else "n/a"
            )
        n_tasks = next(iter(per.values()))["n_tasks"] if per else 0
        lines.append(f"| {name or 'default'} | " + " | ".join(cells) + f" | {n_tasks} |")
    return "\n".join(lines) + "\n"


def plot_evaluation(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Bar chart of mean ΔAUPRC per model with a standard-error bar, per support size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    sizes = sorted({int(n) for r in results.values() for n in r})
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 3.6))
    width = 0.8 / max(1, len(sizes))
    for j, n in enumerate(sizes):
        means = [results[m].get(str(n), {}).get("mean", np.nan) for m in names]
        errs = [
            results[m].get(str(n), {}).get("std", np.nan)
            / max(1, results[m].get(str(n), {}).get("n_tasks", 1)) ** 0.5
            for m in names
        ]
        ax.bar(
            np.arange(len(names)) + j * width,
            means,
            width,
            yerr=errs,
            capsize=3,
            label=f"support {n}",
        )
    ax.set_xticks(np.arange(len(names)) + width * (len(sizes) - 1) / 2, names, rotation=15)
    ax.set_ylabel("ΔAUPRC (mean over tasks ± s.e.)")
    ax.set_title(title)
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def prepare_stats(
    data_dir: str, cache_dir: str | None = None, workers: int = 1, domain: str = "molecules"
) -> dict[str, Any]:
    """Load and featurize (ECFP) a task folder, or load rating data; return its statistics."""
    from metascreen.domains.molecules.featurize import MoleculeFeaturizer

    if _domain(domain) == "movielens":
        from metascreen.models.workflows.movielens import prepare_stats as rec_prepare_stats

        return rec_prepare_stats(Path(data_dir))

    prepared = workflows.prepare_tasks(
        Path(data_dir),
        MoleculeFeaturizer(descriptors=()),
        Path(cache_dir) if cache_dir else None,
        workers,
        progress=False,
    )
    ts = prepared.taskset
    return {
        "data_dir": data_dir,
        "n_tasks": len(ts.tasks),
        "n_rows": ts.n_rows,
        "n_molecules": len(ts.items),
        "n_invalid": ts.n_invalid,
        "skipped_files": ts.skipped,
        "data_sha256": prepared.data_hash,
    }


def evaluate_json(
    data_dir: str,
    model: str | None,
    support_sizes: list[int],
    repeats: int,
    seed: int,
    cache_dir: str | None = None,
    domain: str = "molecules",
    **options: Any,
) -> dict[str, Any]:
    """The FS-Mol protocol (the contract's JSON for each support size), or for ``movielens`` the
    MeLU protocol's JSON (``options``: ``users``, ``holdout_fraction``, ``split_seed``)."""
    if _domain(domain) == "movielens":
        from metascreen.models.workflows.movielens import evaluate_ratings

        if model is None:
            from metascreen.domains.errors import ConfigError

            raise ConfigError("movielens evaluation needs a model folder or a baseline name")
        return evaluate_ratings(Path(data_dir), model, seed, **options)
    results, label, n_invalid = workflows.evaluate_model(
        Path(data_dir),
        model,
        tuple(support_sizes),
        repeats,
        seed,
        Path(cache_dir) if cache_dir else None,
        progress=False,
    )
    return {str(n): r.to_json(label, n_invalid) for n, r in results.items()}


def score_json(
    model_dir: str,
    support: str,
    library: str,
    output: str,
    domain: str = "molecules",
    **kwargs: Any,
) -> dict[str, Any]:
    """Score with onnxruntime; the row accounting as a dict. For ``movielens``, ``support`` is
    the users' ratings and ``library`` the candidate items (``kwargs``: ``k``, ``device``)."""
    from dataclasses import asdict

    if _domain(domain) == "movielens":
        from metascreen.models.serving.ratings import score_users

        return score_users(
            Path(model_dir), Path(support), Path(library), Path(output), **kwargs
        ).to_json()

    from metascreen.models.serving.molecules import score_library

    rep = score_library(
        Path(model_dir), Path(support), Path(library), Path(output), progress=False, **kwargs
    )
    return {**asdict(rep), "mol_per_s": rep.mol_per_s}


DOMAINS = ("molecules", "movielens")


def _domain(name: str) -> str:
    """Validate a domain name (``molecules`` or ``movielens``)."""
    if name not in DOMAINS:
        from metascreen.domains.errors import ConfigError

        raise ConfigError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}")
    return name


class LocalStages:
    """Demo stages as plain function calls (no Prefect)."""

    def prepare(self, data_dir: str) -> dict[str, Any]:  # noqa: D102
        return prepare_stats(data_dir)

    def train(
        self,
        data_dir: str,
        out_dir: str,
        learner: dict[str, Any],
        train: dict[str, Any],
        **kwargs: Any,
    ) -> str:  # noqa: D102
        return str(workflows.train_model(Path(data_dir), Path(out_dir), learner, train, **kwargs))

    def evaluate(
        self, data_dir: str, model: str, support_sizes: list[int], repeats: int, seed: int
    ) -> dict[str, Any]:  # noqa: D102
        return evaluate_json(data_dir, model, support_sizes, repeats, seed)

    def score(self, model_dir: str, support: str, library: str, output: str) -> dict[str, Any]:  # noqa: D102
        return score_json(model_dir, support, library, output)

    def publish(self, markdown: str) -> None:  # noqa: D102
        return None


def run_demo(
    out_dir: Path,
    steps: int = 300,
    repeats: int = 5,
    workers: int = 2,
    stages: Stages | None = None,
    data_dir: Path = SAMPLE_DIR,
) -> Path:
    """Prepare → meta-train → evaluate (vs. rf/knn and the shipped model) → score a library → report."""
    stages = stages or LocalStages()
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"data": str(data_dir)}
    summary["prepare"] = {s: stages.prepare(str(data_dir / s)) for s in ("train", "valid")}
    model_dir = out_dir / "model"
    summary["model"] = stages.train(
        str(data_dir),
        str(model_dir),
        {"learner": "protonet"},
        {
            "steps": steps,
            "eval_every": max(50, steps // 4),
            "checkpoint_every": max(50, steps // 4),
            "seed": 0,
        },
        eval_support_sizes=(16,),
        eval_repeats=repeats,
        run_dir=out_dir / "run",
        cache_dir=None,
        workers=workers,
        progress=False,
        command=f"metascreen demo (steps={steps})",
    )
    models = {"demo-protonet": str(model_dir), "rf": "rf", "knn": "knn"}
    if (DEFAULT_MODEL_DIR / "metadata.json").exists():
        models = {"shipped-default": str(DEFAULT_MODEL_DIR), **models}
    evals = {
        name: stages.evaluate(str(data_dir / "valid"), m, [16], repeats, 0)
        for name, m in models.items()
    }
    summary["evaluation"] = {
        k: {n: {kk: vv for kk, vv in v.items() if kk != "per_task"} for n, v in r.items()}
        for k, r in evals.items()
    }
    plot_evaluation(
        evals,
        out_dir / "evaluation.png",
        f"FS-Mol sample valid ({next(iter(evals.values()))['16']['n_tasks']} tasks)",
    )
    scorer = str(DEFAULT_MODEL_DIR) if "shipped-default" in models else str(model_dir)
    summary["scoring"] = stages.score(
        scorer, str(SUPPORT), str(LIBRARY), str(out_dir / "scores.parquet")
    )
    summary["seconds"] = round(time.perf_counter() - start, 1)
    md = render_demo_markdown(summary, evals)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_json(out_dir / "report.json", summary)
    stages.publish(md)
    logger.info("demo report in %s (%.0fs)", out_dir, summary["seconds"])
    return out_dir


def render_demo_markdown(summary: dict[str, Any], evals: dict[str, dict[str, Any]]) -> str:
    """The demo report as Markdown."""
    sc = summary["scoring"]
    prep = summary["prepare"]
    lines = [
        "# metascreen demo report",
        "",
        f"Data: `{summary['data']}` — train {prep['train']['n_tasks']} tasks / {prep['train']['n_rows']} rows, "
        f"valid {prep['valid']['n_tasks']} tasks / {prep['valid']['n_rows']} rows "
        f"({prep['train']['n_invalid'] + prep['valid']['n_invalid']} invalid SMILES excluded).",
        "",
        "## Few-shot evaluation (FS-Mol protocol, valid sample)",
        "",
        evaluation_table(evals),
        "![evaluation](evaluation.png)",
        "",
        "## Batch scoring (onnxruntime)",
        "",
        f"- scored {sc['n_scored']} of {sc['n_input']} library rows, "
        f"quarantined {sc['n_quarantined']} (`{sc['quarantine']}`), support {sc['n_support']} compounds, "
        f"{sc['seconds']:.1f}s on {', '.join(sc['providers'])}",
        f"- scores: `{sc['output']}`",
        "",
        f"Demo model: `{summary['model']}`. Total time {summary['seconds']}s.",
        "",
    ]
    return "\n".join(lines)


def load_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())
