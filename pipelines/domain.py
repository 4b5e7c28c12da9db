"""Domain dispatch: the stage functions that run FS-Mol molecules or MovieLens ratings by name.

``resolve_domain`` validates a domain name; ``prepare_stats``, ``evaluate_json`` and
``score_json`` call the molecules or the movielens workflow and return plain JSON-able dicts
(what the flows' tasks, the demo and ``metascreen prepare`` use). No prefect import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metascreen.models.workflows import molecules as workflows

DOMAINS = ("molecules", "movielens")


def resolve_domain(name: str) -> str:
    """Validate a domain name (``molecules`` or ``movielens``)."""
    if name not in DOMAINS:
        from metascreen.domains.errors import ConfigError

        raise ConfigError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}")
    return name


def prepare_stats(
    data_dir: str, cache_dir: str | None = None, workers: int = 1, domain: str = "molecules"
) -> dict[str, Any]:
    """Load and featurize (ECFP) a task folder, or load rating data; return its statistics."""
    from metascreen.domains.molecules.featurize import MoleculeFeaturizer

    if resolve_domain(domain) == "movielens":
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
    if resolve_domain(domain) == "movielens":
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

    if resolve_domain(domain) == "movielens":
        from metascreen.models.serving.ratings import score_users

        return score_users(
            Path(model_dir), Path(support), Path(library), Path(output), **kwargs
        ).to_json()

    from metascreen.models.serving.molecules import score_library

    rep = score_library(
        Path(model_dir), Path(support), Path(library), Path(output), progress=False, **kwargs
    )
    return {**asdict(rep), "mol_per_s": rep.mol_per_s}
