"""Recommendation workflows as plain functions: train, evaluate (model or baselines), export.

MeLU's cold-user protocol on MovieLens-format data. ``train_rating_model`` fits biased MF on the
training users, builds the rating predictor's item rows, meta-trains
``AttentiveRatingLearner`` with the shared loop (``models.train.meta_train``) and writes an ONNX
artifact. ``evaluate_ratings`` runs the protocol for an artifact (onnxruntime) or a baseline.

Honest validation: ``holdout_fraction`` removes a seeded share of the users from everything
training sees (MF, item statistics, meta-training); ``evaluate ... --users holdout`` scores
exactly those users. Meta-training episodes are *cross-fitted*: the training users are split into
``folds``, and a user's item rows come from an MF fitted without that user's fold, so the
predictor learns to correct fold-in on users the MF never saw — the situation of a new user.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pandas as pd

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError, InputError
from metascreen.domains.io import atomic_write_json, canonical_json_hash, sha256_file
from metascreen.domains.recommendation.load import load_interactions
from metascreen.domains.recommendation.tasks import (
    MAX_RATINGS,
    MIN_RATINGS,
    RatingEpisodeSampler,
    build_user_tasks,
    catalogue,
    liked_task,
    split_users,
    user_ratings,
)
from metascreen.models.evaluation.ratings import (
    BASELINE_MF,
    BASELINES,
    STAIRCASE_TS,
    baseline_fn,
    evaluate_tasks_ratings,
    onnx_rating_fn,
)
from metascreen.models.features.ratings import (
    N_EXTRA,
    POLICY_ITEMS_FILE,
    ItemTable,
    RatingModelConfig,
    build_item_table,
    cross_fit_rows,
)
from metascreen.models.screening.factory import MOVIELENS_PICKERS, picker_spec
from metascreen.models.screening.simulator import simulate
from metascreen.models.serving.artifact import (
    MOVIELENS_PREDICTOR,
    read_artifact,
    refuse_existing,
    verify_sha256,
)
from metascreen.models.serving.ratings import ITEM_TABLE_FILE, RatingPredictor
from metascreen.models.serving.topn import has_topn
from metascreen.models.workflows.common import command_line, run_folder
from metascreen.models.workflows.movielens_policy import (
    POLICY_ONNX_FILE,
    POLICY_WEIGHTS_FILE,
    RecPolicyConfig,
    train_rec_policy,
)
from metascreen.models.workflows.topn_training import (
    SELECTION_SUPPORT,
    TopNConfig,
    train_topn_files,
)

logger = logging.getLogger(__name__)

"""The ``mf`` baseline's settings: the best of a grid (dim 8/16/32 × ALS ridge 5/10/20 × fold-in
ridges 2–20 / 1–10) on ML-1M hold-out split 0 — tuned on the evaluation users themselves, which
favours the baseline."""
"""(support item positions, support ratings, query item positions) → (Q,) predicted ratings."""


def evaluate_ratings(
    data_dir: Path,
    model: str | Path,
    seed: int = 0,
    users: Literal["all", "holdout"] = "all",
    holdout_fraction: float | None = None,
    split_seed: int | None = None,
    cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """MeLU's protocol on every user of ``data_dir`` with 13–100 ratings (or only the hold-out).

    ``model`` is an artifact folder (scored with onnxruntime) or a baseline name; baselines are
    fitted on the users outside the evaluated hold-out, so they need ``users="holdout"``. The
    hold-out split defaults to the artifact's own (its metadata), else 0.1 / seed 0.
    """
    start = time.perf_counter()
    inter = load_interactions(Path(data_dir))
    is_baseline = str(model) in BASELINES
    meta: dict[str, Any] = {}
    if not is_baseline:
        meta = read_artifact(Path(model), kind=MOVIELENS_PREDICTOR).metadata
    split = meta.get("training_data", {}).get("holdout", {}) if meta else {}
    if meta and users == "holdout" and not split.get("fraction"):
        raise ConfigError(
            f"{model} was trained on every user (no --holdout-fraction): it has no held-out "
            "users to evaluate; use --users all or train with --holdout-fraction"
        )
    if (
        meta
        and users == "holdout"
        and (
            (holdout_fraction is not None and holdout_fraction != split.get("fraction"))
            or (split_seed is not None and split_seed != split.get("split_seed"))
        )
    ):
        raise ConfigError(
            f"{model} held out fraction {split.get('fraction')} with split seed "
            f"{split.get('split_seed')}; other hold-out users were seen in training"
        )
    frac = holdout_fraction if holdout_fraction is not None else split.get("fraction") or 0.1
    s_seed = split_seed if split_seed is not None else split.get("split_seed") or 0
    if users == "holdout":
        rs = split_users(inter, float(frac), int(s_seed))
        eval_ratings = inter.ratings[inter.ratings["user_id"].isin(rs.holdout)]
    elif is_baseline:
        raise ConfigError(
            "baselines are fitted on the users outside the hold-out: use --users holdout "
            "(with --holdout-fraction / --split-seed)"
        )
    else:
        rs, eval_ratings = None, inter.ratings
    items = catalogue(inter)
    ts = build_user_tasks(eval_ratings, items, source=str(data_dir))
    if not ts.tasks:
        raise InputError(
            f"{data_dir}: no user with {MIN_RATINGS}–{MAX_RATINGS} ratings to evaluate"
        )
    if is_baseline:
        assert rs is not None
        mcfg = RatingModelConfig.model_validate({**BASELINE_MF, **(cfg or {})})
        predict = baseline_fn(str(model), rs.train, items, mcfg)
        label = str(model)
    else:
        predict, _ = onnx_rating_fn(Path(model), items, inter)
        label = f"{meta.get('learner', '?')}:{model}"
    out = evaluate_tasks_ratings(ts.tasks, predict, seed)
    out.update(
        model=label,
        seconds=round(time.perf_counter() - start, 2),
        seed=seed,
        users=users,
        holdout={"fraction": frac, "split_seed": s_seed} if users == "holdout" else None,
        n_rejected_rows=inter.n_rejected,
    )
    return out


def train_rating_model(
    data_dir: Path,
    out_dir: Path,
    model_cfg: dict[str, Any] | None = None,
    train_cfg: dict[str, Any] | None = None,
    holdout_fraction: float = 0.0,
    split_seed: int = 0,
    run_dir: Path | None = None,
    progress: bool = True,
    command: str | None = None,
    threads: int | None = 1,
    policy_cfg: dict[str, Any] | None = None,
    topn_cfg: dict[str, Any] | None = None,
    topn: bool = True,
) -> Path:
    """Fit MF, meta-train the rating predictor on MovieLens-format data and write an artifact.

    ``threads``: torch intra-op threads while training (default 1: the per-user matrices are tiny,
    and on a shared 2-core machine extra threads oversubscribe it; None keeps torch's setting).
    ``policy_cfg``: ``RecPolicyConfig`` overrides of the interactive-recommendation policy trained
    after the predictor on the same training users (``{"warm_steps": 0}`` = no policy).
    ``topn_cfg``: ``TopNConfig`` overrides of the top-N recommender trained beside them (what
    ``score movielens`` ranks by); ``topn=False`` skips it (the artifact then ranks by rating).
    """
    import torch

    cfg = RatingModelConfig.model_validate(model_cfg or {})
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train_rating_model(
            data_dir,
            out_dir,
            cfg,
            train_cfg,
            holdout_fraction,
            split_seed,
            run_dir,
            progress,
            command,
            RecPolicyConfig.model_validate({"seed": _run_seed(train_cfg), **(policy_cfg or {})}),
            TopNConfig.model_validate({"seed": _run_seed(train_cfg), **(topn_cfg or {})})
            if topn
            else None,
        )
    finally:
        torch.set_num_threads(previous_threads)


RATING_TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 800,  # the validated budget (≈ 10 min on 2 busy cores, ≈ 5 min idle)
    "tasks_per_step": 32,
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "warmup_steps": 100,
    "eval_every": 200,
    "patience": 5,
    "checkpoint_every": 200,
    "max_minutes": 13.0,
}
"""The rating predictor's ``TrainConfig`` unless ``train_cfg`` overrides a field."""


def _rating_in_dim(table: ItemTable) -> int:
    """Width of the rating predictor's item rows."""
    return int(table.mf.dim + N_EXTRA + table.side.shape[1])


def _new_rating_learner(cfg: RatingModelConfig, table: ItemTable) -> Any:
    """An untrained ``AttentiveRatingLearner`` over ``table``'s item rows."""
    from metascreen.models.learners.rating import AttentiveRatingLearner

    return AttentiveRatingLearner(
        _rating_in_dim(table),
        table.mf.dim,
        table.mf.mu,
        hidden=cfg.hidden,
        heads=cfg.heads,
        dropout=cfg.dropout,
        reg=cfg.fold_reg,
        reg_bias=cfg.fold_reg_bias,
        loss=cfg.loss,
        residual=cfg.learner == "attentive-rating",
    )


def _meta_train_rating(
    learner: Any,
    train: pd.DataFrame,
    inter: Any,
    table: ItemTable,
    cfg: RatingModelConfig,
    tcfg: Any,
    run_dir: Path,
    progress: bool,
) -> dict[str, Any]:
    """Meta-train the attentive residual on cross-fitted users, fit the staircase, switch the
    residual off when the fold-in alone is better on the early-stopping users; the metrics."""
    import torch

    from metascreen.models.training.loop import EpisodeHooks, meta_train

    start = time.perf_counter()
    train_tasks, valid_tasks, x_train = cross_fit_rows(train, inter, table, cfg, tcfg.seed)
    logger.info(
        "meta-training on %d users, early stopping on %d (cross-fitted, %.0fs)",
        len(train_tasks),
        len(valid_tasks),
        time.perf_counter() - start,
    )
    x_valid = torch.as_tensor(x_train)

    def validate(model: Any, device: torch.device) -> float:
        model.eval()
        xv = x_valid.to(device)
        with torch.no_grad():
            res = evaluate_tasks_ratings(
                valid_tasks,
                lambda s, sy, q: (
                    model(xv[s], torch.as_tensor(sy, device=device), xv[q]).cpu().numpy()
                ),
                seed=0,
            )
        return -res["mae"]

    hooks = EpisodeHooks(
        samplers=[RatingEpisodeSampler()],
        select_tasks=lambda tasks: [t for t in tasks if len(t) >= MIN_RATINGS],
        validate=validate,
        metric="valid -MAE",
    )
    result = meta_train(
        learner, train_tasks, x_train, valid_tasks, x_train, tcfg, run_dir, progress, hooks
    )
    stair = fit_staircase(learner, valid_tasks, validate)
    learner.residual_gate.fill_(0.0)
    stair_off = fit_staircase(learner, valid_tasks, validate)
    use_head = stair["valid_mae"] <= stair_off["valid_mae"]
    learner.residual_gate.fill_(1.0 if use_head else 0.0)
    learner.stair_t.fill_(stair["t"] if use_head else stair_off["t"])
    logger.info(
        "early-stopping MAE with the attentive residual %.4f, fold-in alone %.4f: %s",
        stair["valid_mae"],
        stair_off["valid_mae"],
        "keeping the residual" if use_head else "residual switched off",
    )
    return {
        "staircase": stair,
        "staircase_without_residual": stair_off,
        "residual_used": use_head,
        "best_valid_mae": -result.best_score,
        "best_step": result.best_step,
        "steps": result.steps_done,
        "seconds": round(result.seconds, 1),
        "history": result.history,
        "n_train_users": len(train_tasks),
        "n_early_stopping_users": len(valid_tasks),
    }


def _side_models(
    train: pd.DataFrame,
    table: ItemTable,
    policy_cfg: RecPolicyConfig,
    topn_cfg: TopNConfig | None,
    run_dir: Path,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:
    """The models trained beside the rating predictor on the same training users: the
    interactive policy and the top-N recommender. (metrics, metadata sections, files)."""
    metrics: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if policy_cfg.warm_steps + policy_cfg.rl_steps > 0:
        policy_meta, policy_files = _train_policy_files(train, table, policy_cfg, run_dir, progress)
        metrics["policy"] = policy_meta.pop("metrics")
        sections["policy"] = policy_meta
        files.update(policy_files)
    if topn_cfg is not None:
        topn_meta, topn_files = train_topn_files(
            train, table.item_ids, topn_cfg, run_dir / "topn", progress
        )
        metrics["topn"] = topn_meta.pop("metrics")
        sections["topn"] = topn_meta
        files.update(topn_files)
    return metrics, sections, files


def _train_rating_model(
    data_dir: Path,
    out_dir: Path,
    cfg: RatingModelConfig,
    train_cfg: dict[str, Any] | None,
    holdout_fraction: float,
    split_seed: int,
    run_dir: Path | None,
    progress: bool,
    command: str | None,
    policy_cfg: RecPolicyConfig,
    topn_cfg: TopNConfig | None = None,
) -> Path:
    from metascreen.models.training.export import write_artifact
    from metascreen.models.training.loop import TrainConfig
    from metascreen.models.training.seeding import seed_everything

    tcfg = TrainConfig.model_validate({**RATING_TRAIN_DEFAULTS, **(train_cfg or {})})
    out_dir = refuse_existing(out_dir)
    start = time.perf_counter()
    inter = load_interactions(Path(data_dir))
    rs = split_users(inter, holdout_fraction, split_seed)
    run_dir = run_folder(run_dir, "movielens", cfg.learner, f"seed{tcfg.seed}")
    if inter.n_rejected:
        inter.write_quarantine(run_dir / "quarantine" / "ratings.csv")
    table = build_item_table(rs.train, inter, cfg, tcfg.seed)
    logger.info(
        "%s: %d ratings of %d training users (%d held out), %d items; MF in %.0fs",
        data_dir,
        len(rs.train),
        rs.train["user_id"].nunique(),
        len(rs.holdout),
        len(table.item_ids),
        time.perf_counter() - start,
    )
    seed_everything(tcfg.seed)
    learner = _new_rating_learner(cfg, table)
    metrics: dict[str, Any] = {}
    if cfg.learner == "attentive-rating":
        metrics["train"] = _meta_train_rating(
            learner, rs.train, inter, table, cfg, tcfg, run_dir, progress
        )
    learner.cpu().eval()
    side_metrics, sections, extra_files = _side_models(
        rs.train, table, policy_cfg, topn_cfg, run_dir, progress
    )
    metrics.update(side_metrics)
    metrics["total_training_seconds"] = round(time.perf_counter() - start, 1)
    table_bytes = table.to_bytes()
    items_sha = __import__("hashlib").sha256(table_bytes).hexdigest()
    fz_spec = {
        "side": table.featurizer.spec(),
        "side_hash": table.featurizer.hash,
        "items_file": ITEM_TABLE_FILE,
    }
    fz_hash = canonical_json_hash({"side": table.featurizer.spec(), "items_sha256": items_sha})
    config = {"model": cfg.model_dump(mode="json"), "train": tcfg.model_dump(mode="json")}
    if "policy" in sections:
        config["policy"] = policy_cfg.model_dump(mode="json")
    atomic_write_json(run_dir / "config.json", config)
    extra = {
        "domain": "movielens",
        "seed": tcfg.seed,
        "command": command_line(command),
        "training_data": {
            "data_dir": str(data_dir),
            "data_sha256": _data_hash(Path(data_dir)),
            "n_ratings": len(rs.train),
            "n_users": int(rs.train["user_id"].nunique()),
            "n_items": len(table.item_ids),
            "n_rejected_rows": inter.n_rejected,
            "feedback": "implicit" if inter.implicit else "ratings",
            "holdout": {
                "fraction": holdout_fraction,
                "split_seed": split_seed,
                "n_users": len(rs.holdout),
            },
        },
        "metrics": metrics,
        "run_dir": str(run_dir),
        **sections,
    }
    path = write_artifact(
        out_dir,
        learner,
        _rating_in_dim(table),
        fz_spec,
        fz_hash,
        config,
        extra,
        kind=MOVIELENS_PREDICTOR,
        extra_files={ITEM_TABLE_FILE: table_bytes, **extra_files},
    )
    if holdout_fraction > 0:
        _record_holdout_metrics(path, Path(data_dir), metrics)
    atomic_write_json(run_dir / "metrics.json", metrics)
    return path


def _holdout_topn(path: Path, data_dir: Path) -> dict[str, Any]:
    """The artifact's top-N model on its own hold-out users by the top-N protocol
    (``evaluate_topn_movielens``): 10 ratings given, seed 0."""
    from metascreen.models.workflows.movielens_topn import evaluate_topn_movielens

    res = evaluate_topn_movielens(data_dir, [str(path)], support_ns=(SELECTION_SUPPORT,), ks=(10,))
    got = next(iter(res["models"].values()))["support"][str(SELECTION_SUPPORT)]
    return {
        "support_n": SELECTION_SUPPORT,
        "ndcg@10": got["metrics"]["ndcg@10"] if got["n_users"] else None,
        "recall@10": got["metrics"]["recall@10"] if got["n_users"] else None,
        "n_users": got["n_users"],
        "seed": 0,
        "measured_with": f"metascreen evaluate movielens {data_dir} --protocol topn --model "
        f"{path} --support-n {SELECTION_SUPPORT} --k 10",
    }


def _record_holdout_metrics(path: Path, data_dir: Path, metrics: dict[str, Any]) -> None:
    """Evaluate the new artifact on its hold-out users (MeLU protocol) into its metadata."""
    res = evaluate_ratings(data_dir, path, seed=0, users="holdout")
    metrics["holdout"] = {k: res[k] for k in ("mae", "ndcg@1", "ndcg@3", "n_users")}
    metrics["holdout"]["measured_with"] = (
        f"metascreen evaluate movielens {data_dir} --model {path} --users holdout --seed 0"
    )
    meta = json.loads((path / "metadata.json").read_text())
    if has_topn(meta):
        metrics["holdout_topn"] = _holdout_topn(path, data_dir)
    meta["metrics"] = metrics
    atomic_write_json(path / "metadata.json", meta)


def _run_seed(train_cfg: dict[str, Any] | None) -> int:
    """The run's seed (``train_cfg["seed"]``, default 0), shared by predictor and policy."""
    return int((train_cfg or {}).get("seed", 0))


def _train_policy_files(
    train: pd.DataFrame,
    table: ItemTable,
    cfg: RecPolicyConfig,
    run_dir: Path,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Train the interactive-recommendation policy; its metadata and artifact files.

    Files: ``policy.onnx`` (the shared policy graph, parity-checked against torch) and
    ``policy_items.npz`` (its item embedding, rows in catalogue order); ``write_artifact``
    records their sha256 under ``metadata["files"]``.
    """
    from metascreen.models.training.export import export_policy_onnx, write_weights

    res = train_rec_policy(train, table.item_ids, table.side, cfg, run_dir / "policy", progress)
    onnx_path = run_dir / "policy" / POLICY_ONNX_FILE
    parity = export_policy_onnx(res.policy, onnx_path)
    weights = run_dir / "policy" / POLICY_WEIGHTS_FILE
    write_weights(weights, res.policy.state_dict())
    meta = {
        "onnx": POLICY_ONNX_FILE,
        "items": POLICY_ITEMS_FILE,
        "weights": POLICY_WEIGHTS_FILE,
        "in_dim": int(res.items.emb.shape[1]),
        "budget": cfg.budget,
        "parity_max_abs_diff": parity,
        "policy_config": res.metrics["policy_config"],
        "metrics": res.metrics,
    }
    files = {
        POLICY_ONNX_FILE: onnx_path.read_bytes(),
        POLICY_ITEMS_FILE: res.items.to_bytes(),
        POLICY_WEIGHTS_FILE: weights.read_bytes(),
    }
    return meta, files


def _data_hash(data_dir: Path) -> str:
    from metascreen.domains.io import sha256_files

    if data_dir.is_file():
        return sha256_file(data_dir)
    return sha256_files(p for p in data_dir.iterdir() if p.is_file())


def prepare_stats(data_dir: Path) -> dict[str, Any]:
    """Load a MovieLens-format folder; counts of users, ratings, items and rejected rows."""
    inter = load_interactions(Path(data_dir))
    counts = inter.user_counts()
    eligible = int(((counts >= MIN_RATINGS) & (counts <= MAX_RATINGS)).sum())
    return {
        "data_dir": str(data_dir),
        "format": inter.fmt,
        "feedback": "implicit" if inter.implicit else "ratings",
        "n_rows": inter.n_input,
        "n_ratings": len(inter.ratings),
        "n_rejected": inter.n_rejected,
        "rejected_reasons": pd.Series([r for _, _, r in inter.rejected], dtype=object)
        .value_counts()
        .to_dict(),
        "n_users": len(counts),
        "n_eval_users": eligible,
        "n_items": len(catalogue(inter)),
        "has_user_features": inter.users is not None,
        "has_item_features": inter.items is not None,
        "data_sha256": _data_hash(Path(data_dir)),
    }


def export_rating_model(model_dir: Path, out_dir: Path) -> Path:
    """Re-export a movielens artifact's torch weights to a new artifact (ONNX parity-checked)."""
    from metascreen.models.training.export import REGENERATED_KEYS, load_weights, write_artifact

    model_dir = Path(model_dir)
    meta = read_artifact(model_dir, kind=MOVIELENS_PREDICTOR).metadata
    pred_table = RatingPredictor(model_dir).table
    cfg = json.loads((model_dir / "config.json").read_text())
    learner = _new_rating_learner(RatingModelConfig.model_validate(cfg["model"]), pred_table)
    in_dim = _rating_in_dim(pred_table)
    learner.load_state_dict(load_weights(model_dir, meta))
    keep = {k: v for k, v in meta.items() if k not in REGENERATED_KEYS}
    keep["exported_from"] = str(model_dir)
    fz = meta["featurizer"]
    return write_artifact(
        Path(out_dir),
        learner,
        in_dim,
        fz["spec"],
        fz["hash"],
        cfg,
        keep,
        kind=MOVIELENS_PREDICTOR,
        extra_files=_verified_files(model_dir, meta.get("files", {})),
    )


def _verified_files(model_dir: Path, files: dict[str, str]) -> dict[str, bytes]:
    """The artifact's extra files (item table, policy graph and embedding), sha256-checked."""
    out = {}
    for name, want in files.items():
        verify_sha256(model_dir / name, want)
        out[name] = (model_dir / name).read_bytes()
    return out


def simulate_movielens(
    data_dir: Path,
    model_dir: Path,
    policy: str | None = None,
    budget: int = 20,
    seed: int = 0,
    users: str = "all",
) -> dict[str, Any]:
    """Run one picker over every user with 13–100 ratings; the ``simulate movielens`` JSON."""
    start = time.perf_counter()
    if policy is not None:
        picker_spec(MOVIELENS_PICKERS, policy)
    predictor = RatingPredictor(Path(model_dir))
    table = predictor.table
    has_policy = "policy" in predictor.onnx.info.metadata
    if policy is None:
        if not has_policy:
            raise ConfigError(
                f"{model_dir} has no learned policy (trained with --policy-steps 0?); pass "
                f"--policy {'|'.join(p for p in MOVIELENS_PICKERS if p != 'policy')}"
            )
        policy = "policy"
    inter = load_interactions(Path(data_dir))
    ratings = inter.ratings
    split = predictor.onnx.info.metadata.get("training_data", {}).get("holdout", {})
    train_ratings = ratings
    if split.get("fraction"):
        train_ratings = split_users(inter, float(split["fraction"]), int(split["split_seed"])).train
    if users == "holdout":
        if not split.get("fraction"):
            raise ConfigError(f"{model_dir} was trained on every user: no hold-out to simulate")
        ratings = ratings[~ratings["user_id"].isin(set(train_ratings["user_id"]))]
    n_items = len(table.item_ids)
    tasks: list[Task] = []
    hidden: dict[str, dict[int, float]] = {}
    n_unknown = int((table.positions(ratings["item_id"].tolist()) < 0).sum())
    for uid, pos, rated in user_ratings(ratings, list(table.item_ids)):
        tasks.append(liked_task(uid, pos, rated, n_items))
        hidden[uid] = dict(zip(pos.astype(int).tolist(), rated.astype(float).tolist(), strict=True))
    if not tasks:
        raise InputError(f"{data_dir}: no user with {MIN_RATINGS}–{MAX_RATINGS} ratings")
    ctx = SimpleNamespace(
        predictor=predictor,
        table=table,
        hidden=hidden,
        train_ratings=train_ratings,
        model_dir=Path(model_dir),
        metadata=predictor.onnx.info.metadata,
    )
    picker = picker_spec(MOVIELENS_PICKERS, policy).build(ctx)
    res = simulate(
        picker, tasks, budget=budget, batch=1, init=0, active_fraction=1.0, repeats=1, seed=seed
    )
    curve = res.task_curves.mean(0)

    def hits_at(k: int) -> float:
        return float(curve[min(k, len(curve)) - 1])

    return {
        "metric": "hits",
        "cumulative_precision": float(curve[-1]) / budget,
        "hits@5": hits_at(5),
        "hits@10": hits_at(10),
        "hits@20": hits_at(20),
        "curve": [round(float(v), 4) for v in curve],
        "n_users": len(tasks),
        "policy": policy,
        "seconds": round(time.perf_counter() - start, 2),
        "budget": budget,
        "seed": seed,
        "users": users,
        "n_items": n_items,
        "n_ratings_of_unknown_items": n_unknown,
        "curve_ci95": [
            round(float(v), 4)
            for v in (1.96 * res.task_curves.std(0, ddof=1) / math.sqrt(max(1, len(tasks) - 1)))
        ],
    }


def fit_staircase(
    learner: Any, valid_tasks: list[Task], validate: Callable[[Any, Any], float]
) -> dict[str, Any]:
    """Choose the staircase width ``t`` minimising MAE on the early-stopping users."""
    import torch

    scores = {}
    for t in STAIRCASE_TS:
        learner.stair_t.fill_(t)
        scores[t] = -validate(learner, torch.device("cpu"))
    best = min(scores, key=lambda k: scores[k])
    learner.stair_t.fill_(best)
    learner.cpu().eval()
    logger.info(
        "staircase t=%.2f: early-stopping MAE %.4f (t=0: %.4f)", best, scores[best], scores[0.0]
    )
    return {
        "t": best,
        "valid_mae": scores[best],
        "valid_mae_by_t": {str(k): round(v, 5) for k, v in scores.items()},
    }
