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


# The reported regimes: (name, active fraction, batch). Budget and seeds come from the command.
REGIMES: tuple[tuple[str, float, int], ...] = (
    ("f0.1-batch1", 0.1, 1),
    ("f1-batch1", 1.0, 1),
    ("f0.1-batch8", 0.1, 8),
)


def best_baseline(results: dict[str, dict[str, Any]], main: str, baselines: list[str]) -> str:
    """The baseline among ``baselines`` (not ``main``) with the most mean hits."""
    cands = [b for b in baselines if b != main and b in results]
    if not cands:
        raise ValueError("no baseline to compare with")
    return max(cands, key=lambda b: results[b]["mean_hits"])


def regime_summary(
    results: dict[str, dict[str, Any]], main: str, baselines: list[str]
) -> dict[str, Any]:
    """Mean hits of everyone, and ``main`` paired against each baseline and against the best one."""
    from metascreen.models.screening.simulator import paired_difference

    best = best_baseline(results, main, baselines)
    first = results[main]
    return {
        "active_fraction": first["active_fraction"],
        "batch": first["batch"],
        "budget": first["budget"],
        "n_tasks": first["n_tasks"],
        "repeats": first["repeats"],
        "seed": first["seed"],
        "mean_hits": {k: round(v["mean_hits"], 4) for k, v in results.items()},
        "mean_hits_ci95": {k: round(v["mean_hits_ci95"], 4) for k, v in results.items()},
        "seconds": {k: v["seconds"] for k, v in results.items()},
        "options": {k: v["options"] for k, v in results.items() if "options" in v},
        "best_baseline": best,
        "vs_best": paired_difference(first, results[best]),
        "paired": {b: paired_difference(first, results[b]) for b in results if b != main},
    }


POOL_KEYS = ("budget", "batch", "active_fraction", "n_tasks", "repeats", "seed", "min_task_size")


def read_report(path: Path) -> dict[str, Any]:
    """A ``simulate --report`` JSON, or an ``InputError`` naming the file and what is wrong."""
    import json

    from metascreen.domains.errors import InputError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable report JSON ({err})") from err
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a simulate --report JSON (not an object)")
    missing = [k for k in ("main", "baselines", "regimes", "results") if k not in doc]
    if missing:
        raise InputError(f"{path}: not a simulate --report JSON (missing {', '.join(missing)})")
    for regime, results in doc["results"].items():
        for name, res in results.items():
            lacking = [k for k in ("policy", "per_task", *POOL_KEYS[:-1]) if k not in res]
            if lacking:
                raise InputError(f"{path}: results.{regime}.{name} lacks {', '.join(lacking)}")
    return doc


def _same_pools(regime: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    """Refuse results of one regime that were not simulated on the same pools."""
    from metascreen.domains.errors import ConfigError

    for key in POOL_KEYS:
        if a.get(key) != b.get(key):
            raise ConfigError(
                f"regime {regime}: {a['policy']} and {b['policy']} differ in {key} "
                f"({a.get(key)} vs {b.get(key)}): not the same pools"
            )
    pools_a = {t: (v["pool_size"], v["pool_hits"]) for t, v in a["per_task"].items()}
    pools_b = {t: (v["pool_size"], v["pool_hits"]) for t, v in b["per_task"].items()}
    if pools_a != pools_b:
        raise ConfigError(
            f"regime {regime}: {a['policy']} and {b['policy']} were simulated on other tasks or "
            "pools (per-task pool sizes or actives differ)"
        )


def merge_reports(parts: list[dict[str, Any]], main: str | None = None) -> dict[str, Any]:
    """One report from ``--report`` JSONs.

    Parts of disjoint regimes are joined. Parts that share a regime must have been simulated on
    the same pools (same seed, repeats, fractions and per-task pools: checked); their policies
    are joined, so a new policy is compared with baselines simulated before without running them
    again. A policy in two parts of a regime must have the same per-task hits in both. ``main``
    (default: the first part's) is compared with every other policy, and with the best of the
    parts' baselines.
    """
    from metascreen.domains.errors import ConfigError

    if not parts:
        raise ConfigError("nothing to merge")
    first = parts[0]
    main = main or first["main"]
    baselines: list[str] = []
    for part in parts:
        baselines += [b for b in part["baselines"] if b not in baselines]
    baselines = [b for b in baselines if b != main]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for part in parts:
        for name in part["regimes"]:
            have = results.setdefault(name, {})
            new = part["results"][name]
            if have and set(new) <= set(have):
                raise ConfigError(
                    f"regime {name} is in two of the reports and the second adds no policy"
                )
            for pol, res in new.items():
                if have:
                    _same_pools(name, next(iter(have.values())), res)
                if pol in have and (
                    {t: v["hits"] for t, v in have[pol]["per_task"].items()}
                    != {t: v["hits"] for t, v in res["per_task"].items()}
                ):
                    raise ConfigError(
                        f"regime {name}: two different results for {pol} in the reports"
                    )
                have.setdefault(pol, res)
    order = [r[0] for r in REGIMES]
    results = dict(sorted(results.items(), key=lambda kv: order.index(kv[0])))
    regimes = {}
    for name, res in results.items():
        if main not in res:
            raise ConfigError(f"regime {name}: no results for {main} in the reports")
        if not any(b in res for b in baselines):
            raise ConfigError(f"regime {name}: no baseline to compare {main} with")
        regimes[name] = regime_summary(res, main, baselines)
    merged = {k: v for k, v in first.items() if k not in ("command", "regimes", "results")}
    merged.update(main=main, baselines=baselines, regimes=regimes, results=results)
    merged["commands"] = [
        c for part in parts for c in (part.get("commands") or [part.get("command")])
    ]
    return merged


def regimes_markdown(report: dict[str, Any]) -> str:
    """One table per regime: mean hits per policy, then ``main`` − best baseline (paired)."""
    main = report["main"]
    out = [f"{report['title']}\n"]
    commands = report.get("commands") or [report.get("command")]
    out.append("```\n" + "\n".join(str(c) for c in commands if c) + "\n```\n")
    for name, r in report["regimes"].items():
        vs = r["vs_best"]
        out.append(
            f"### {name}: active fraction {r['active_fraction']}, batch {r['batch']}, "
            f"budget {r['budget']} ({r['n_tasks']} tasks × {r['repeats']} repeats, "
            f"seed {r['seed']})\n"
        )
        out.append(
            f"| policy | mean hits (95% CI) | {main} − it (paired, 95% CI) | {main} won/lost |"
        )
        out.append("|---|---|---|---|")
        for k, v in r["mean_hits"].items():
            if k == main:
                out.append(f"| **{k}** | {v:.2f} ± {r['mean_hits_ci95'][k]:.2f} | | |")
                continue
            pr = r["paired"][k]
            tag = " (best baseline)" if k == r["best_baseline"] else ""
            out.append(
                f"| {k}{tag} | {v:.2f} ± {r['mean_hits_ci95'][k]:.2f} | "
                f"{pr['mean_diff']:+.2f} ± {pr['mean_diff_ci95']:.2f} (×{pr['ratio']:.3f}) | "
                f"{pr['tasks_better']}/{pr['tasks_worse']} |"
            )
        lo, hi = vs["mean_diff"] - vs["mean_diff_ci95"], vs["mean_diff"] + vs["mean_diff_ci95"]
        out.append(
            f"\n{main} − best baseline ({r['best_baseline']}): {vs['mean_diff']:+.2f} hits, "
            f"95% CI [{lo:+.2f}, {hi:+.2f}], ratio {vs['ratio']:.3f}; {main} better on "
            f"{vs['tasks_better']} tasks, worse on {vs['tasks_worse']} of {vs['n_tasks']}.\n"
        )
    return "\n".join(out) + "\n"


def plot_regimes(regimes: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """One panel of hit curves per regime (same style as ``plot_hit_curves``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(regimes), figsize=(5.2 * len(regimes), 4.2), squeeze=False)
    for ax, (name, results) in zip(axes[0], regimes.items(), strict=True):
        for pol, res in results.items():
            mean = np.asarray(res["curve"], float)
            half = np.asarray(res.get("curve_ci95", [0.0] * len(mean)), float)
            x = np.cumsum(res.get("picks_per_step", [1] * len(mean)))
            line = ax.plot(x, mean, label=f"{pol} ({res['mean_hits']:.2f})", lw=1.4)[0]
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.12, lw=0)
        ax.set_title(name)
        ax.set_xlabel("compounds assayed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("cumulative hits (mean over tasks)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
