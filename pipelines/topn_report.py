"""Reports of ``evaluate movielens --protocol topn``: paired intervals, Markdown, PNG, text table.

Paired intervals are ``bench model``'s (``pipelines.bench_model.paired_interval``): a 95%
bootstrap interval over the users evaluated by both models of the mean per-user difference.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from metascreen.domains.errors import ConfigError
from metascreen.domains.io import atomic_write_json, atomic_write_text
from metascreen.pipelines.bench_model import paired_interval, save_png

logger = logging.getLogger(__name__)

PAIRED_METRICS = ("ndcg", "recall", "hit", "mrr")


def main_k(r: dict[str, Any]) -> int:
    """The k the headline figures use: 10 when evaluated, else the smallest."""
    return 10 if 10 in r["ks"] else min(r["ks"])


def main_n(r: dict[str, Any]) -> int:
    """The support size the headline figures use: 10 when evaluated, else the first."""
    return 10 if 10 in r["support_ns"] else r["support_ns"][0]


def choose_against(r: dict[str, Any], against: str | None) -> str:
    """``against`` when given, else the best reference by NDCG@10 (support 10), else ``ease``
    or the first model."""
    models = r["models"]
    if against is not None:
        label = against if against in models else Path(against).name
        if label not in models:
            raise ConfigError(f"--against {against} is not among the evaluated models")
        return label
    key, n = f"ndcg@{main_k(r)}", str(main_n(r))
    refs = [m for m, v in models.items() if v["reference"]]
    if refs:
        return max(refs, key=lambda m: models[m]["support"][n]["metrics"][key])
    return "ease" if "ease" in models else next(iter(models))


def _per_user(r: dict[str, Any], model: str, n: int) -> dict[str, Any]:
    return r["models"][model]["support"][str(n)]["per_user"]


def paired(r: dict[str, Any], against: str, seed: int = 0) -> dict[str, Any]:
    """Each other model minus ``against``, per support size and metric@k, over common users."""
    out: dict[str, Any] = {}
    for model in [m for m in r["models"] if m != against]:
        for n in r["support_ns"]:
            a, b = _per_user(r, model, n), _per_user(r, against, n)
            ia = {u: i for i, u in enumerate(a["user_id"])}
            ib = {u: i for i, u in enumerate(b["user_id"])}
            common = [u for u in a["user_id"] if u in ib]
            cell: dict[str, Any] = {"n_users": len(common)}
            for k in r["ks"]:
                for m in PAIRED_METRICS:
                    name = f"{m}@{k}"
                    va = np.array([a[name][ia[u]] for u in common])
                    vb = np.array([b[name][ib[u]] for u in common])
                    d = va - vb
                    cell[name] = {
                        "mean_difference": float(d.mean()),
                        "ratio": float(va.mean() / vb.mean()) if vb.mean() > 0 else None,
                        "ci95": paired_interval(d.tolist(), seed),
                        "users_won": int((d > 0).sum()),
                        "users_lost": int((d < 0).sum()),
                    }
            out.setdefault(model, {})[str(n)] = cell
    return out


def add_paired(r: dict[str, Any], against: str | None, seed: int = 0) -> dict[str, Any]:
    """``r`` with ``against`` and ``paired`` (every other model minus it) filled in."""
    label = choose_against(r, against)
    r["against"] = label
    r["paired"] = paired(r, label, seed) if len(r["models"]) > 1 else {}
    return r


def summary_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (support size, model): users and mean metrics."""
    rows = []
    for n in r["support_ns"]:
        for model, v in r["models"].items():
            s = v["support"][str(n)]
            rows.append({"support_n": n, "model": model, "n_users": s["n_users"], **s["metrics"]})
    return rows


def _paired_cell(r: dict[str, Any], model: str, n: int, name: str) -> str:
    if model == r["against"] or model not in r.get("paired", {}):
        return "—"
    c = r["paired"][model][str(n)][name]
    lo, hi = c["ci95"]
    return f"{c['mean_difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] {c['users_won']}/{c['users_lost']}"


def render_markdown(r: dict[str, Any]) -> str:
    """The report as Markdown: metrics per support size, paired differences, chosen settings."""
    ks, k0 = r["ks"], main_k(r)
    h = r["holdout"]
    lines = [
        f"# Top-N over the catalogue — `{r['data_dir']}`",
        "",
        f"Hold-out users (fraction {h['fraction']}, split seed {h['split_seed']}), each with "
        f"n given ratings drawn with seed {r['seed']}; relevant = {r['relevant']}; the whole "
        f"catalogue ({r['n_items']:,} items) minus the support is ranked. RecBole conventions.",
    ]
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "hit", "mrr")]
    cols += [f"coverage@{k}" for k in ks] + [f"poprank@{k}" for k in ks]
    for n in r["support_ns"]:
        lines += ["", f"## n = {n} given ratings", ""]
        lines += [
            "| model | users | " + " | ".join(cols) + " |",
            "|---|---:|" + "---:|" * len(cols),
        ]
        for model, v in r["models"].items():
            s = v["support"][str(n)]
            cells = [
                f"{s['metrics'][c]:.1f}" if c.startswith("poprank") else f"{s['metrics'][c]:.4f}"
                for c in cols
            ]
            lines.append(f"| {model} | {s['n_users']} | " + " | ".join(cells) + " |")
    if r.get("paired"):
        lines += [
            "",
            f"Paired per-user difference, each model minus `{r['against']}`, NDCG@{k0} "
            "(95% bootstrap interval over users; users won / lost):",
            "",
            "| model | " + " | ".join(f"n = {n}" for n in r["support_ns"]) + " |",
            "|---|" + "---|" * len(r["support_ns"]),
        ]
        for model in r["paired"]:
            cells = [_paired_cell(r, model, n, f"ndcg@{k0}") for n in r["support_ns"]]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    chosen = {m: v["fit"]["chosen"] for m, v in r["models"].items() if "chosen" in v["fit"]}
    if chosen:
        lines += ["", "Settings chosen on a slice of the training users (NDCG@10), by n:", ""]
        for m, c in chosen.items():
            names = r["models"][m]["fit"].get("params")
            lines.append(f"- `{m}` ({names}): " + ", ".join(f"n={n}: {p}" for n, p in c.items()))
    if "png" in r:
        lines += ["", f"![NDCG@{k0} per model]({Path(r['png']).name})"]
    lines += ["", f"{r['seconds']} s."]
    return "\n".join(lines) + "\n"


def render_text(r: dict[str, Any]) -> str:
    """A plain table for the terminal."""
    k0 = main_k(r)
    k1 = max(r["ks"])
    head = (
        f"{'n':>3} {'model':<24} {'users':>5} {f'R@{k0}':>7} {f'N@{k0}':>7} {f'HR@{k0}':>7} "
        f"{f'MRR@{k0}':>7} {f'R@{k1}':>7} {f'N@{k1}':>7} {f'cov@{k0}':>7} {f'pop@{k0}':>7}  "
        f"N@{k0} vs {r['against']} [95% CI]"
    )
    lines = [head]
    for row in summary_rows(r):
        n, model = row["support_n"], row["model"]
        p = _paired_cell(r, model, n, f"ndcg@{k0}").rsplit(" ", 1)[0]
        lines.append(
            f"{n:>3} {model[-24:]:<24} {row['n_users']:>5} {row[f'recall@{k0}']:>7.4f} "
            f"{row[f'ndcg@{k0}']:>7.4f} {row[f'hit@{k0}']:>7.4f} {row[f'mrr@{k0}']:>7.4f} "
            f"{row[f'recall@{k1}']:>7.4f} {row[f'ndcg@{k1}']:>7.4f} "
            f"{row[f'coverage@{k0}']:>7.4f} {row[f'poprank@{k0}']:>7.1f}  {p}"
        )
    return "\n".join(lines)


def plot_topn(r: dict[str, Any], path: Path, seed: int = 0) -> None:
    """NDCG@k per model and support size, with 95% bootstrap intervals of the mean over users."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k0 = main_k(r)
    models, ns = list(r["models"]), r["support_ns"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(min(11.0, max(6.0, 0.5 * len(models) * len(ns) + 2)), 4.5))
    for j, model in enumerate(models):
        means: list[float] = []
        errs: list[list[float]] = [[], []]
        for n in ns:
            v = _per_user(r, model, n)[f"ndcg@{k0}"]
            m = float(np.mean(v)) if v else float("nan")
            lo, hi = paired_interval(v, seed) if v else (m, m)
            means.append(m)
            errs[0].append(m - lo)
            errs[1].append(hi - m)
        xs = np.arange(len(ns)) + (j - (len(models) - 1) / 2) * width
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=model)
    ax.set_xticks(np.arange(len(ns)), [f"n = {n}" for n in ns])
    ax.set_ylabel(f"NDCG@{k0} (mean over users, 95% CI)")
    ax.set_title("top-N over the catalogue, hold-out users")
    ax.legend(fontsize=8, ncol=min(len(models), 6), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def write_topn_report(r: dict[str, Any], json_path: Path) -> list[Path]:
    """Write ``json_path`` and the ``.md`` and ``.png`` beside it; returns the paths."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    png, md = json_path.with_suffix(".png"), json_path.with_suffix(".md")
    plot_topn(r, png, r.get("seed", 0))
    r["png"] = str(png)
    atomic_write_text(md, render_markdown(r))
    atomic_write_json(json_path, r)
    return [json_path, md, png]


PROTOCOL_KEYS = ("protocol", "holdout", "n_items", "support_ns", "ks", "seed", "relevant")


def merge_reports(r: dict[str, Any], other: dict[str, Any], source: str = "") -> dict[str, Any]:
    """``r`` with ``other``'s models added (models ``r`` already has are kept from ``r``).

    Both must come from the same protocol: hold-out split, catalogue size, support sizes, ks and
    draw seed. The previous run's references then pair with a new model without refitting them.
    """
    diff = [k for k in PROTOCOL_KEYS if r.get(k) != other.get(k)]
    if diff or Path(str(r.get("data_dir"))).resolve() != Path(str(other.get("data_dir"))).resolve():
        what = ", ".join(f"{k} {other.get(k)!r} vs {r.get(k)!r}" for k in diff or ["data_dir"])
        raise ConfigError(f"{source or 'the included report'} is from another protocol: {what}")
    for name, m in other["models"].items():
        if name not in r["models"]:
            r["models"][name] = {**m, "included_from": source}
    return r
