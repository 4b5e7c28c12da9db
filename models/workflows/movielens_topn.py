"""Top-N over the whole catalogue for cold users: models and references on the hold-out users.

``evaluate_topn_movielens`` runs the protocol of ``models.evaluation.topn`` on the hold-out users
of ``split_users(inter, fraction, split_seed)`` (every one with at least ``support_n + 10``
ratings) for several models at several support sizes. A model is a reference name
(``models.evaluation.topn_refs.REFERENCES``, fitted on the training users = everyone outside
the hold-out) or an artifact folder, dispatched by ``artifact_topn_fn``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from metascreen.domains.errors import ConfigError, InputError
from metascreen.domains.recommendation.load import Interactions, load_interactions
from metascreen.domains.recommendation.tasks import catalogue, split_users
from metascreen.models.evaluation.ratings import onnx_rating_fn
from metascreen.models.evaluation.topn import DEFAULT_KS, TopNFn, evaluate_topn
from metascreen.models.evaluation.topn_refs import (
    REFERENCES,
    item_counts,
    rated_users,
    reference_fns,
)
from metascreen.models.serving.artifact import MOVIELENS_PREDICTOR, read_artifact
from metascreen.models.serving.ratings import RatingPredictor

logger = logging.getLogger(__name__)

Objective = Literal["topn", "rating"]
OBJECTIVES = ("topn", "rating")


def artifact_topn_fn(
    model_dir: Path, items: list[str], inter: Interactions, objective: Objective = "topn"
) -> TopNFn:
    """The artifact's ranker over the catalogue ``items``.

    ``objective="rating"``: the rating predictor (onnxruntime), adapted on the support, scores
    every catalogue position (items it never saw through their side features). ``"topn"``: the
    artifact's top-N model.
    """
    if objective == "topn":
        return _artifact_topn_graph(Path(model_dir), items)
    if objective != "rating":
        raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    predict, _ = onnx_rating_fn(Path(model_dir), items, inter)
    every = np.arange(len(items), dtype=np.int64)
    return lambda uid, s, sy: predict(s, sy, every)


def _artifact_topn_graph(model_dir: Path, items: list[str]) -> TopNFn:
    """The artifact's top-N graph (onnxruntime) over ``items``: catalogue positions are mapped
    to the artifact's item table; items it does not know score −inf (never shown), and so do
    support items it does not know (left out of the support)."""
    model = RatingPredictor(model_dir)
    scorer = model.topn
    to_model = model.table.positions(list(items))  # evaluator position → artifact row (−1)
    known = to_model >= 0

    def fn(uid: str, s: np.ndarray, sy: np.ndarray) -> np.ndarray:
        rows = to_model[s]
        keep = rows >= 0
        scores = scorer.scores([rows[keep]], [np.asarray(sy, np.float32)[keep]])[0]
        out = np.full(len(items), -np.inf)
        out[known] = scores[to_model[known]]
        return out

    return fn


def model_label(model: str) -> str:
    """A reference's name, or an artifact folder's name."""
    return model if model in REFERENCES else Path(model).name


def resolve_holdout(
    models: Sequence[str], holdout_fraction: float | None, split_seed: int | None
) -> tuple[float, int]:
    """The hold-out split to evaluate: the options, else the artifacts' own, else 0.1 / seed 0.

    Refuses an artifact trained on every user or on another split (its hold-out users would
    have been seen in training), and artifacts that disagree with each other.
    """
    frac, seed = holdout_fraction, split_seed
    for m in models:
        if m in REFERENCES:
            continue
        split = (
            read_artifact(Path(m), kind=MOVIELENS_PREDICTOR)
            .metadata.get("training_data", {})
            .get("holdout", {})
        )
        if not split.get("fraction"):
            raise ConfigError(
                f"{m} was trained on every user (no --holdout-fraction): it has no held-out "
                "users to evaluate; train with --holdout-fraction"
            )
        if (frac is not None and frac != split["fraction"]) or (
            seed is not None and seed != split.get("split_seed", 0)
        ):
            raise ConfigError(
                f"{m} held out fraction {split['fraction']} with split seed "
                f"{split.get('split_seed', 0)}; other hold-out users were seen in training"
            )
        frac, seed = float(split["fraction"]), int(split.get("split_seed", 0))
    return (0.1 if frac is None else float(frac)), (0 if seed is None else int(seed))


def evaluate_topn_movielens(
    data_dir: Path,
    models: Sequence[str],
    support_ns: Sequence[int] = (10,),
    ks: Sequence[int] = DEFAULT_KS,
    seed: int = 0,
    holdout_fraction: float | None = None,
    split_seed: int | None = None,
    objective: Objective = "topn",
    extra: Mapping[str, Callable[[pd.DataFrame, list[str]], TopNFn]] | None = None,
) -> dict[str, Any]:
    """Every model of ``models`` at every support size on the same hold-out users and draws.

    ``extra``: more models by label, each built from (training ratings, catalogue) — a ranker
    being developed, evaluated beside the references without an artifact. Returns the report:
    protocol settings, and per model its fit information (chosen hyper-parameters, tuning
    grid) and per support size the mean metrics and per-user values.
    """
    start = time.perf_counter()
    if not models and not extra:
        raise ConfigError("no model to evaluate")
    extra = dict(extra or {})
    labels = [model_label(m) for m in models] + list(extra)
    if len(set(labels)) < len(labels):
        raise ConfigError(f"models named twice: {', '.join(labels)}")
    frac, s_seed = resolve_holdout(models, holdout_fraction, split_seed)
    inter = load_interactions(Path(data_dir))
    rs = split_users(inter, frac, s_seed)
    items = catalogue(inter)
    users = rated_users(inter.ratings[inter.ratings["user_id"].isin(rs.holdout)], items)
    if not users:
        raise InputError(f"{data_dir}: no hold-out user to evaluate")
    pop = item_counts(rs.train, items)
    out: dict[str, Any] = {}
    for model, label in zip([*models, *extra], labels, strict=True):
        t0 = time.perf_counter()
        is_ref = label not in extra and model in REFERENCES
        if label in extra:
            built = extra[label](rs.train, items)
            fns, info = {n: built for n in support_ns}, {"objective": "in-memory"}
        elif model in REFERENCES:
            fns, info = reference_fns(model, rs.train, items, support_ns, seed)
        else:
            fn = artifact_topn_fn(Path(model), items, inter, objective)
            fns, info = {n: fn for n in support_ns}, {"objective": objective}
        fit_s = time.perf_counter() - t0
        res = {n: evaluate_topn(users, len(items), fns[n], pop, n, ks, seed) for n in support_ns}
        out[label] = {
            "model": str(Path(model).resolve()) if info.get("objective") in OBJECTIVES else model,
            "reference": is_ref,
            "fit": info,
            "support": {str(n): r.to_json() for n, r in res.items()},
            "fit_seconds": round(fit_s, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        logger.info(
            "%s: %s",
            label,
            ", ".join(
                f"n={n} NDCG@{min(ks)} {r.means()[f'ndcg@{min(ks)}']:.4f}" for n, r in res.items()
            ),
        )
        del fns
    return {
        "protocol": "topn",
        "data_dir": str(data_dir),
        "holdout": {"fraction": frac, "split_seed": s_seed, "n_users": len(rs.holdout)},
        "n_items": len(items),
        "n_train_users": int(rs.train["user_id"].nunique()),
        "support_ns": [int(n) for n in support_ns],
        "ks": sorted(int(k) for k in set(ks)),
        "seed": seed,
        "objective": objective,
        "relevant": "the user's other ratings ≥ 4",
        "n_rejected_rows": inter.n_rejected,
        "models": out,
        "seconds": round(time.perf_counter() - start, 1),
    }
