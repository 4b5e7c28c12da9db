"""Report rendering: evaluation tables, bar charts and the demo report (Markdown + JSON + PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


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
