"""Collect ``simulate movielens`` JSONs into results.json / results.md and one plot per split.

Usage: ``python benchmarks/movielens/make_report.py benchmarks/movielens`` after writing
``split<S>/<policy>.json`` with ``metascreen simulate movielens ... --users holdout --json``.
Only figures are stored here, never MovieLens data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from metascreen.models.screening.movielens import plot_curve

ORDER = ("policy", "popular", "greedy", "random")


def main(root: Path) -> None:
    """Write ``results.json``, ``results.md`` and ``split<S>.png`` under ``root``."""
    table: dict[str, dict[str, Any]] = {}
    for split_dir in sorted(root.glob("split*")):
        runs = {
            p: json.loads((split_dir / f"{p}.json").read_text())
            for p in ORDER
            if (split_dir / f"{p}.json").exists()
        }
        if not runs:
            continue
        plot_curve(runs, root / f"{split_dir.name}.png")
        best = max(runs[p]["cumulative_precision"] for p in ("popular", "greedy") if p in runs)
        table[split_dir.name] = {
            "n_users": next(iter(runs.values()))["n_users"],
            "cumulative_precision": {p: r["cumulative_precision"] for p, r in runs.items()},
            "hits@5": {p: r["hits@5"] for p, r in runs.items()},
            "hits@10": {p: r["hits@10"] for p, r in runs.items()},
            "seconds": {p: r["seconds"] for p, r in runs.items()},
            "policy_over_best_baseline": (
                runs["policy"]["cumulative_precision"] / best if "policy" in runs else None
            ),
        }
    (root / "results.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = [
        "| split | users | policy | popular | greedy | random | policy / max(popular, greedy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        cp = row["cumulative_precision"]
        cells = [f"{cp[p]:.4f}" if p in cp else "—" for p in ORDER]
        ratio = row["policy_over_best_baseline"]
        cells.append("—" if ratio is None else f"{ratio:.3f}")
        lines.append(f"| {name} | {row['n_users']} | " + " | ".join(cells) + " |")
    (root / "results.md").write_text(
        "Cumulative precision@20 (hits / 20; hit = rated ≥ 4) on each split's held-out users, "
        "seed 0.\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
