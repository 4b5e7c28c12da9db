"""Screening-policy reports shared by the CLI and the flows: hit-curve plots and tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_hit_curves(results: dict[str, dict[str, Any]], path: Path, title: str = "") -> None:
    """Mean cumulative hits after each step, one line per policy, shaded 95% interval over tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, res in results.items():
        mean = np.asarray(res["curve"], float)
        half = np.asarray(res.get("curve_ci95", [0.0] * len(mean)), float)
        x = np.cumsum(res.get("picks_per_step", [1] * len(mean)))
        line = ax.plot(x, mean, label=f"{name} ({res['mean_hits']:.2f})", lw=1.6)[0]
        ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("compounds assayed")
    ax.set_ylabel("cumulative hits (mean over tasks)")
    first = next(iter(results.values()))
    ax.set_title(
        title
        or f"{first['n_tasks']} tasks, active fraction {first['active_fraction']}, batch {first['batch']}"
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def simulation_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: mean hits ± 95% interval and hit fraction per policy."""
    lines = [
        "| policy | tasks | budget | active fraction | mean hits (95% CI) | hit fraction | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['n_tasks']} | {r['budget']} | {r['active_fraction']} | "
            f"{r['mean_hits']:.2f} ± {r.get('mean_hits_ci95', 0.0):.2f} | "
            f"{r['mean_hit_fraction']:.3f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"
