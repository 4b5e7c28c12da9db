"""``metascreen bench model``: the molecule model's figures next to the previous model and baselines.

For each model (artifact folders, ``rf``, ``knn``) and support size, ΔAUPRC with the evaluate
command's protocol and code (``workflows.molecules.evaluate_model``); a per-task scatter of the
first model against ``rf``; featurize and score throughput of the first model
(``bench featurize`` and ``bench score``, run in the same command). Writes JSON, Markdown and PNG.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metascreen.domains.io import atomic_write_json, atomic_write_text, temp_path
from metascreen.models.serving.artifact import DEFAULT_MODEL_DIR
from metascreen.pipelines.bench import cpu_info, cpu_line

logger = logging.getLogger(__name__)


def _label(model: str) -> str:
    return model if model in ("rf", "knn") else Path(model).name


def paired_interval(diff: Sequence[float], seed: int = 0, n_boot: int = 2000) -> list[float]:
    """95% bootstrap interval (over tasks) of the mean of per-task differences."""
    d = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def run_model_bench(
    data_dir: Path,
    models: Sequence[str],
    support_sizes: Sequence[int] = (16, 32, 64),
    repeats: int = 10,
    seed: int = 0,
    out: Path | None = None,
    featurize_n: int = 5000,
    score_n: int = 20_000,
    int8_model: Path | None = None,
    progress: bool = False,
    train_slice: float | None = None,
    slice_seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``models`` on ``data_dir`` and time the first one; write ``out``.json/.md/.png.

    ``featurize_n`` / ``score_n`` = 0 skip the throughput figures. ``train_slice``: evaluate on
    the seeded slice of ``data_dir``'s task files that ``train molecules --holdout-slice`` holds
    out (the selection split), not on the whole folder.
    """
    from metascreen.models.workflows.molecules import evaluate_model, train_slice_files

    files = train_slice_files(Path(data_dir), train_slice, slice_seed) if train_slice else None

    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for model in models:
        res, label, n_invalid = evaluate_model(
            Path(data_dir),
            model,
            tuple(support_sizes),
            repeats,
            seed,
            progress=progress,
            files=files,
        )
        results[_label(model)] = {
            "model": label,
            "n_invalid_smiles_excluded": n_invalid,
            "support": {
                str(n): {
                    "mean": r.mean,
                    "std": r.std,
                    "n_tasks": r.n_tasks,
                    "per_task": r.per_task,
                }
                for n, r in res.items()
            },
        }
        logger.info(
            "%s: %s",
            _label(model),
            ", ".join(f"@{n} {r.mean:.4f}" for n, r in res.items()),
        )
    first = _label(models[0])
    paired: dict[str, Any] = {}
    for other in [k for k in results if k != first]:
        for n in support_sizes:
            a = results[first]["support"][str(n)]["per_task"]
            b = results[other]["support"][str(n)]["per_task"]
            common = sorted(set(a) & set(b))
            diff = [a[t] - b[t] for t in common]
            paired.setdefault(other, {})[str(n)] = {
                "mean_difference": float(np.mean(diff)),
                "ci95": paired_interval(diff, seed),
                "tasks_won": int(sum(d > 0 for d in diff)),
                "tasks_lost": int(sum(d < 0 for d in diff)),
                "n_tasks": len(common),
            }
    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "train_slice": {"fraction": train_slice, "slice_seed": slice_seed} if train_slice else None,
        "support_sizes": list(support_sizes),
        "repeats": repeats,
        "seed": seed,
        "models": results,
        "paired_vs_first": {"first": first, "against": paired},
    }
    first_dir = None if models[0] in ("rf", "knn") else Path(models[0])
    if featurize_n > 0 and first_dir is not None:
        from metascreen.pipelines.bench_featurize import run_featurize_bench

        f = run_featurize_bench(n=featurize_n, model=first_dir, seed=seed)
        report["featurize"] = {
            k: f[k]
            for k in (
                "n",
                "featurize_mol_per_s",
                "parse_ecfp_mol_per_s",
                "ratio_featurize_to_parse_ecfp",
                "featurizer",
                "n_descriptors",
            )
            if k in f
        }
    if score_n > 0 and first_dir is not None:
        from metascreen.pipelines.bench import run_score_bench

        s = run_score_bench(
            n=score_n,
            model=first_dir if first_dir != DEFAULT_MODEL_DIR else None,
            int8_model=int8_model,
            featurize_sample=min(score_n, 20_000),
            seed=seed,
        )
        report["score"] = {
            k: v for k, v in s.items() if not isinstance(v, dict | list) or k == "ratios"
        }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["cpu_count"] = os.cpu_count()
    report.update(cpu_info())
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        png = out.with_suffix(".png")
        plot_model_bench(report, png)
        report["png"] = str(png)
        atomic_write_json(out.with_suffix(".json"), report)
        atomic_write_text(out.with_suffix(".md"), render_markdown(report))
    return report


def render_markdown(r: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    sizes = r["support_sizes"]
    lines = [
        f"# metascreen bench model — `{r['data_dir']}`"
        + (
            f" (train slice {r['train_slice']['fraction']}, seed {r['train_slice']['slice_seed']})"
            if r.get("train_slice")
            else ""
        ),
        "",
        f"ΔAUPRC (FS-Mol protocol, {r['repeats']} repeats, seed {r['seed']}), mean over tasks.",
        "",
        "| model | " + " | ".join(f"@{n}" for n in sizes) + " | tasks |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for name, m in r["models"].items():
        cells = [f"{m['support'][str(n)]['mean']:.4f}" for n in sizes]
        n_tasks = m["support"][str(sizes[0])]["n_tasks"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {n_tasks} |")
    p = r["paired_vs_first"]
    if p["against"]:
        lines += [
            "",
            f"Paired per-task difference, `{p['first']}` minus each other model "
            "(95% bootstrap interval over tasks; tasks won / lost):",
            "",
            "| against | " + " | ".join(f"@{n}" for n in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for other, by in p["against"].items():
            cells = [
                f"{by[str(n)]['mean_difference']:+.4f} [{by[str(n)]['ci95'][0]:+.4f}, "
                f"{by[str(n)]['ci95'][1]:+.4f}] {by[str(n)]['tasks_won']}/{by[str(n)]['tasks_lost']}"
                for n in sizes
            ]
            lines.append(f"| {other} | " + " | ".join(cells) + " |")
    if "featurize" in r:
        f = r["featurize"]
        lines += [
            "",
            f"Featurizer `{f.get('featurizer')}` ({f.get('n_descriptors')} descriptors): "
            f"{f['featurize_mol_per_s']:,.0f} mol/s vs parse + ECFP {f['parse_ecfp_mol_per_s']:,.0f}"
            f" mol/s, ratio {f['ratio_featurize_to_parse_ecfp']:.3f} (n = {f['n']:,}, 1 process).",
        ]
    if "score" in r:
        s = r["score"]
        keys = [k for k in s if k.endswith("mol_per_s") or k.startswith("ratio")]
        lines += ["", "Scoring: " + ", ".join(f"{k} {s[k]}" for k in keys) + "."]
    if "png" in r:
        lines += ["", f"![ΔAUPRC and per-task scatter]({Path(r['png']).name})"]
    lines += ["", f"{r['cpu_count']} CPUs, {cpu_line(r)}, {r['seconds']} s."]
    return "\n".join(lines) + "\n"


def save_png(fig: Any, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure as PNG atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    tmp = temp_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def plot_model_bench(r: dict[str, Any], path: Path) -> None:
    """ΔAUPRC by support size per model, and the first model against rf task by task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = r["support_sizes"]
    has_rf = "rf" in r["models"] and r["paired_vs_first"]["first"] != "rf"
    fig, axes = plt.subplots(1, 2 if has_rf else 1, figsize=(11 if has_rf else 6, 4.2))
    ax0 = axes[0] if has_rf else axes
    for name, m in r["models"].items():
        ax0.plot(sizes, [m["support"][str(n)]["mean"] for n in sizes], marker="o", label=name)
    ax0.set_xscale("log", base=2)
    ax0.set_xticks(sizes, [str(n) for n in sizes])
    ax0.set_xlabel("support size")
    ax0.set_ylabel("mean ΔAUPRC")
    ax0.legend(fontsize=8)
    ax0.grid(alpha=0.3)
    if has_rf:
        first = r["paired_vs_first"]["first"]
        n = str(sizes[0])
        a, b = (
            r["models"][first]["support"][n]["per_task"],
            r["models"]["rf"]["support"][n]["per_task"],
        )
        common = sorted(set(a) & set(b))
        xs, ys = [b[t] for t in common], [a[t] for t in common]
        ax1 = axes[1]
        ax1.scatter(xs, ys, s=14, alpha=0.7)
        lo, hi = min(xs + ys + [0.0]), max(xs + ys + [0.1])
        ax1.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
        ax1.set_xlabel(f"rf ΔAUPRC@{n} per task")
        ax1.set_ylabel(f"{first} ΔAUPRC@{n} per task")
        won = sum(y > x for x, y in zip(xs, ys, strict=True))
        ax1.set_title(f"{won} of {len(common)} tasks above the diagonal")
        ax1.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)
