"""Screening-policy workflows as plain functions: meta-train, simulate (benchmark), propose.

``simulate_molecules`` and ``propose`` need onnxruntime only; ``train_policy_model`` imports torch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from metascreen.domains.errors import ConfigError
from metascreen.domains.io import atomic_write_json, sha256_file, sha256_files
from metascreen.domains.molecules.load import find_task_files
from metascreen.models.screening.factory import policy_label
from metascreen.models.screening.simulator import SimulationResult, simulate
from metascreen.models.serving.artifact import (
    DEFAULT_MODEL_DIR,
    MOLECULES_POLICY,
    policy_input_axes,
    provenance,
    read_artifact,
    refuse_existing,
)
from metascreen.models.serving.policy import resolve_molecule_picker
from metascreen.models.workflows.common import DEFAULT_CACHE_DIR, command_line, run_folder
from metascreen.models.workflows.molecules import (
    prepare_tasks,
    resolve_splits,
    split_holdout,
    train_slice_files,
)

logger = logging.getLogger(__name__)


def simulate_molecules(
    data_dir: Path,
    policy: str | Path | None = None,
    budget: int = 32,
    batch: int = 1,
    init: int = 0,
    active_fraction: float = 0.1,
    repeats: int = 5,
    seed: int = 0,
    model_dir: Path | None = None,
    cache_dir: Path | None = None,
    workers: int = 2,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    train_slice: float | None = None,
    slice_seed: int = 0,
    min_task_size: int = 1,
) -> SimulationResult:
    """Run one policy (artifact folder, or a ``BASELINE_POLICIES`` name) over the tasks of ``data_dir``.

    Predictor-based baselines (``greedy``, ``greedy-random-start``, ``ens``, ``thompson``)
    re-adapt the predictor in ``model_dir`` (default: the shipped model) on the history each step;
    ``knn`` and ``gp`` work on ECFP4 bits; a policy artifact uses its own encoder and featurizer.
    All of them meet the same pools (drawn from ``seed``). ``options`` override the baseline
    knobs (``factory.PICKER_DEFAULTS``); ``train_slice`` simulates only a seeded fraction of the
    task files (``slice_seed``), the split on which those knobs are chosen; ``min_task_size``
    skips smaller tasks (FS-Mol train has many tasks of < 128 compounds, valid/test few).
    """
    resolved = resolve_molecule_picker(policy, model_dir, options)
    files = train_slice_files(data_dir, train_slice, slice_seed) if train_slice else None
    data = prepare_tasks(
        Path(data_dir), resolved.featurizer, cache_dir, workers, progress, files, min_task_size
    )
    picker = resolved.build(data.x)
    result = simulate(
        picker,
        data.taskset.tasks,
        budget,
        batch,
        init,
        active_fraction,
        repeats,
        seed,
        progress=progress,
    )
    result.policy = policy_label(policy)
    result.extra["n_invalid_smiles_excluded"] = data.taskset.n_invalid
    result.extra["data_dir"] = str(data_dir)
    if train_slice:
        result.extra["train_slice"] = {"fraction": train_slice, "slice_seed": slice_seed}
    result.extra["min_task_size"] = min_task_size
    result.extra.update(resolved.provenance())
    return result


def train_policy_model(
    data_dir: Path,
    out_dir: Path,
    policy_cfg: Any = None,
    train_cfg: Any = None,
    model_dir: Path | None = None,
    valid_dir: Path | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    run_dir: Path | None = None,
    eval_repeats: int = 5,
    workers: int = 2,
    progress: bool = True,
    command: str | None = None,
    holdout_slice: float | None = None,
    slice_seed: int = 0,
    slice_min_task_size: int = 128,
) -> Path:
    """Meta-train a screening policy on the frozen encoder of ``model_dir`` and write an artifact.

    The artifact (``encoder.onnx``, ``policy.onnx``, weights, config, metadata) records the
    command, seed, data hashes, featurizer and the valid figures measured by ``simulate_molecules``
    on the written artifact (onnxruntime), at active fractions 0.1 and 1.

    ``holdout_slice``: keep the seeded slice of train task files that
    ``simulate molecules --train-slice F --slice-seed S`` simulates on (``train_slice_files``) out
    of training, so configurations can be chosen on train tasks the policy never saw; the slice
    is recorded in the metadata (``training_data.held_out_slice``).
    """
    import torch

    from metascreen.models.learners.registry import HEAD_LEARNERS, LearnerConfig, head_state
    from metascreen.models.nn.policy import PolicyConfig, ScreeningPolicy
    from metascreen.models.serving.artifact import staged_dir
    from metascreen.models.training.export import (
        compact_counts,
        compactly_storable,
        export_encoder_onnx,
        export_policy_onnx,
        load_learner,
        write_weights,
    )
    from metascreen.models.training.policy import PolicyTrainConfig, train_policy
    from metascreen.models.training.seeding import device_info, seed_everything

    tcfg = PolicyTrainConfig.model_validate(train_cfg or {})
    out_dir = refuse_existing(out_dir)
    model_dir = Path(model_dir or DEFAULT_MODEL_DIR)
    info = read_artifact(model_dir)
    fz = info.metadata["featurizer"]
    from metascreen.domains.molecules.featurize import MoleculeFeaturizer

    featurizer = MoleculeFeaturizer.from_spec(fz["spec"], expected_hash=fz["hash"])
    learner, pred_cfg = load_learner(model_dir, info, featurizer.dim)
    from metascreen.models.learners.ensemble import EnsembleLearner

    if isinstance(learner, EnsembleLearner):
        # One encoder embeds the pool: the first member's (the run of the ensemble's seed). Its
        # head is that member's head, so the policy is built as on that member alone.
        logger.warning(
            "predictor %s is an ensemble of %d: the policy uses its first member's encoder and head",
            model_dir,
            len(learner.members),
        )
        learner = learner.members[0]
        first = LearnerConfig.model_validate(pred_cfg["learner"]).member(0)
        pred_cfg = {**pred_cfg, "learner": first.model_dump(mode="json")}
    encoder = learner.encoder.eval()
    raw_cfg = dict(policy_cfg or {})
    prior_file = raw_cfg.pop("prior_file", None)
    raw_cfg["prior"] = prior_file is not None
    raw_cfg.setdefault("predictor_head", True)
    if raw_cfg["predictor_head"] is True:  # "the predictor's own head", where it has one
        name = pred_cfg["learner"]["learner"]
        # The policy network rebuilds the predictor's head with the global kernel only.
        batched = (
            name in HEAD_LEARNERS
            and pred_cfg["learner"].get("ensemble_size", 1) == 1
            and pred_cfg["learner"].get("gp_kernel", "global") == "global"
        )
        raw_cfg["predictor_head"] = name if batched else None
        if not batched:
            logger.warning("predictor %s has no batched head: the policy goes without it", name)
    elif raw_cfg["predictor_head"] is False:
        raw_cfg["predictor_head"] = None
    pcfg = PolicyConfig.model_validate(raw_cfg)
    if pcfg.predictor_head is not None and pcfg.predictor_head != pred_cfg["learner"]["learner"]:
        raise ConfigError(
            f"predictor_head {pcfg.predictor_head!r} does not match the predictor's learner "
            f"{pred_cfg['learner']['learner']!r} in {model_dir}"
        )

    train_dir, valid_dir = resolve_splits(Path(data_dir), valid_dir)
    prior = prior_doc = None
    if prior_file is not None:
        prior, prior_doc = _load_policy_prior(
            Path(prior_file), info.metadata, holdout_slice, slice_seed
        )
    train_files = None
    held: list[Path] = []
    held_out: dict[str, Any] | None = None
    slice_cmd = ""
    if holdout_slice is not None:
        train_files, held = split_holdout(train_dir, holdout_slice, slice_seed)
        slice_cmd = (
            f"--train-slice {holdout_slice} --slice-seed {slice_seed} "
            f"--min-task-size {slice_min_task_size}"
        )
        held_out = {
            "fraction": holdout_slice,
            "slice_seed": slice_seed,
            "n_task_files": len(held),
            "task_files": sorted(f.name for f in held),
            "simulate_with": f"metascreen simulate molecules {train_dir} {slice_cmd}",
        }
    t0 = time.perf_counter()
    train = prepare_tasks(train_dir, featurizer, cache_dir, workers, progress, files=train_files)
    # The split the validation checks during training read: the held-out slice's valid-sized
    # tasks, else valid (older recipe). Valid is read once at the end either way.
    select = (
        prepare_tasks(
            train_dir, featurizer, cache_dir, workers, progress, held, slice_min_task_size
        )
        if held
        else prepare_tasks(valid_dir, featurizer, cache_dir, workers, progress)
        if valid_dir
        else None
    )

    def embed(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate(
                [encoder(torch.as_tensor(x[i : i + 4096])).numpy() for i in range(0, len(x), 4096)]
            ).astype(np.float32)

    e_train = embed(train.x)
    e_select = embed(select.x) if select is not None else None
    if prior is not None:
        _check_prior_embedding(prior, info, train.x, e_train)
    logger.info("tasks featurized and embedded in %.0fs", time.perf_counter() - t0)
    seed_everything(tcfg.seed)
    policy = ScreeningPolicy(e_train.shape[1], pcfg)
    if policy.head is not None:
        policy.head.load_state_dict(head_state(learner))
    if prior is not None:
        policy.set_prior(torch.as_tensor(prior.weights), prior.bias)
    run_dir = run_folder(run_dir, "policy", f"seed{tcfg.seed}")
    config = {
        "policy": pcfg.model_dump(mode="json"),
        "train": tcfg.model_dump(mode="json"),
        "encoder_from": str(model_dir),
    }
    if prior_file is not None:
        config["prior_file"] = str(prior_file)
    atomic_write_json(run_dir / "config.json", config)
    result = train_policy(
        policy,
        e_train,
        train.taskset.tasks,
        e_select,
        select.taskset.tasks if select is not None else [],
        tcfg,
        run_dir,
        progress=progress,
        select_label="train-slice" if held else "valid",
    )
    policy.cpu().eval()
    chose = (
        f"the warm-start state REINFORCE starts from (--rl-from {tcfg.rl_from}) and the kept "
        f"state (--keep {tcfg.keep}): best mean hits@{tcfg.budget} at active fraction "
        f"{tcfg.valid_fractions[0]}, {tcfg.valid_repeats} repeats"
    )
    name = out_dir.name
    with staged_dir(out_dir) as tmp:
        # Weights that are exactly int8 codes × row scales or float16 values (the encoder and head
        # of an int8- or float16-stored predictor) are stored so in all three files, losslessly;
        # the rest stay float32.
        enc_parity = export_encoder_onnx(encoder, featurizer.dim, tmp / "encoder.onnx", narrow=True)
        pol_parity = export_policy_onnx(policy, tmp / "policy.onnx", narrow=True)
        state = {f"policy.{k}": v for k, v in policy.state_dict().items()}
        state.update({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
        halves = compactly_storable(state)
        write_weights(tmp / "weights.pt.gz", state, halves)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        meta: dict[str, Any] = {
            **provenance(MOLECULES_POLICY),
            "name": name,
            "budget": tcfg.budget,
            "embedding_dim": int(e_train.shape[1]),
            "use_history": pcfg.use_history,
            "onnx": {
                "file": "policy.onnx",
                "sha256": sha256_file(tmp / "policy.onnx"),
                "inputs": policy_input_axes(int(e_train.shape[1])),
                "outputs": {"logits": ["batch", "n_candidates"], "value": ["batch"]},
                "parity_max_abs_diff": pol_parity,
            },
            "encoder_onnx": {
                "file": "encoder.onnx",
                "sha256": sha256_file(tmp / "encoder.onnx"),
                "from_model": str(model_dir),
                "from_model_onnx_sha256": info.metadata["onnx"]["sha256"],
                "parity_max_abs_diff": enc_parity,
            },
            "weights": {
                "file": "weights.pt.gz",
                "sha256": sha256_file(tmp / "weights.pt.gz"),
                **compact_counts(state, halves),
            },
            "featurizer": fz,
            "prior": prior_doc,
            "seed": tcfg.seed,
            "command": command_line(command),
            "trained_on": device_info(tcfg.device, tcfg.amp),
            "training_data": {
                "train_dir": str(train_dir),
                "train_sha256": train.data_hash,
                "n_train_tasks": len(train.taskset.tasks),
                "valid_dir": str(valid_dir) if valid_dir else None,
                "valid_sha256": sha256_files(find_task_files(valid_dir)) if valid_dir else None,
                "held_out_slice": held_out,
            },
            "selection": {
                "split": "train slice",
                "chose": chose,
                "min_task_size": slice_min_task_size,
                "n_tasks": len(select.taskset.tasks) if select else 0,
                "data_sha256": select.data_hash if select else None,
                "valid": "read once, after training, for the final figures",
            }
            if held
            else {"split": "valid", "chose": chose},
            "metrics": {
                "train": {
                    f"best_{'train_slice' if held else 'valid'}_hits": result.best_score,
                    "best_step": result.best_step,
                    "best_phase": result.best_phase,
                    "steps": result.steps_done,
                    "seconds": round(result.seconds, 1),
                    "history": result.history,
                }
            },
            "run_dir": str(run_dir),
        }
        atomic_write_json(tmp / "metadata.json", meta)
    # Figures of the written artifact (onnxruntime, the simulate command's code): the selection
    # slice first, then valid, read once.
    splits: list[tuple[str, Path, dict[str, Any], str]] = []
    if held:
        slice_kw = {
            "train_slice": holdout_slice,
            "slice_seed": slice_seed,
            "min_task_size": slice_min_task_size,
        }
        splits.append(("selection", train_dir, slice_kw, slice_cmd + " "))
    if valid_dir is not None:
        splits.append(("valid", valid_dir, {}, ""))
    for key, split_dir, kw, extra_opts in splits:
        meta["metrics"][key] = {}
        for frac in (0.1, 1.0):
            res = simulate_molecules(
                split_dir,
                out_dir,
                tcfg.budget,
                1,
                0,
                frac,
                eval_repeats,
                0,
                None,
                cache_dir,
                workers,
                False,
                **kw,
            )
            meta["metrics"][key][str(frac)] = {
                "mean_hits": res.mean_hits,
                "mean_hit_fraction": res.mean_hit_fraction,
                "n_tasks": len(res.task_ids),
                "repeats": eval_repeats,
                "measured_with": f"metascreen simulate molecules {split_dir} --policy {out_dir} "
                f"{extra_opts}--budget {tcfg.budget} --active-fraction {frac} "
                f"--repeats {eval_repeats} --seed 0",
            }
            logger.info(
                "%s hits@%d at active fraction %s: %.3f", key, tcfg.budget, frac, res.mean_hits
            )
        atomic_write_json(out_dir / "metadata.json", meta)
    return out_dir


def _load_policy_prior(
    path: Path, predictor_metadata: dict[str, Any], holdout_slice: float | None, slice_seed: int
) -> tuple[Any, dict[str, Any]]:
    """The activity prior a policy takes as a feature, checked against the predictor and slice.

    Refused when it was fitted on another predictor (``ActivityPrior.load``) or, when the policy
    keeps a slice out, on rows of that slice (a prior fitted without the same ``--holdout-slice``
    and ``--slice-seed`` has seen the tasks the policy is selected on).
    """
    from metascreen.models.serving.policy import ActivityPrior

    doc = ActivityPrior.read(path)
    prior = ActivityPrior.from_doc(doc, path, predictor_metadata)
    data = doc.get("training_data", {})
    if holdout_slice is not None and (
        data.get("holdout_slice") != holdout_slice or data.get("slice_seed") != slice_seed
    ):
        raise ConfigError(
            f"{path}: the prior was fitted with holdout_slice {data.get('holdout_slice')} and "
            f"slice_seed {data.get('slice_seed')}, the policy keeps --holdout-slice "
            f"{holdout_slice} --slice-seed {slice_seed} out: it would have seen the selection "
            "slice (refit it: metascreen train prior … --holdout-slice F --slice-seed S)"
        )
    return prior, {
        "file": str(path),
        "sha256": sha256_file(path),
        "command": doc.get("command"),
        "embedding_tensor": doc.get("embedding_tensor"),
        "training_data": data,
    }


def _check_prior_embedding(prior: Any, info: Any, x: np.ndarray, emb: np.ndarray) -> None:
    """Refuse a prior whose embedding (the predictor graph's) is not the policy's encoder's."""
    from metascreen.models.serving.policy import PredictorEmbedder

    rows = slice(0, min(256, len(x)))
    theirs = PredictorEmbedder(info, "cpu").embed(x[rows])
    if theirs.shape != emb[rows].shape:
        raise ConfigError(f"{prior.path}: the prior's embedding is not the policy encoder's")
    gap = float(np.abs(theirs - emb[rows]).max())
    if gap > 1e-3:
        raise ConfigError(
            f"{prior.path}: the prior's embedding differs from the policy encoder's by {gap:.3g}"
        )


def fit_activity_prior(
    train_dir: Path,
    out: Path,
    model_dir: Path | None = None,
    holdout_slice: float | None = None,
    slice_seed: int = 0,
    max_rows: int = 150_000,
    l2: float = 1.0,
    seed: int = 0,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    workers: int = 2,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Fit the ``prior`` cold start of the predictor baselines and write it to ``out`` (JSON).

    A logistic regression (scikit-learn, L2 ``1/l2``) on the predictor's encoder embedding of
    every (task, compound) row of the train task files, labels pooled over tasks: how likely a
    compound like this is active in an assay at all. ``holdout_slice`` keeps the slice
    ``simulate --train-slice`` reads out of the fit; ``max_rows`` rows are drawn with ``seed``.
    """
    from sklearn.linear_model import LogisticRegression

    from metascreen.models.serving.molecules import OnnxPredictor
    from metascreen.models.serving.policy import PredictorEmbedder

    t0 = time.time()
    train_dir = Path(train_dir)
    model_dir = Path(model_dir or DEFAULT_MODEL_DIR)
    predictor = OnnxPredictor.load(model_dir, "cpu")
    files = (
        split_holdout(train_dir, holdout_slice, slice_seed)[0]
        if holdout_slice
        else find_task_files(train_dir)
    )
    prep = prepare_tasks(
        train_dir, predictor.featurizer, cache_dir, workers, progress=progress, files=files
    )
    embedder = PredictorEmbedder(predictor.info, "cpu")
    emb = embedder.embed(prep.x)
    idx = np.concatenate([t.item_idx for t in prep.taskset.tasks])
    y = np.concatenate([t.labels for t in prep.taskset.tasks]) > 0.5
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(idx.size, min(idx.size, max_rows), replace=False))
    logger.info("fitting the activity prior on %d of %d rows", rows.size, idx.size)
    xs, ys = emb[idx[rows]], y[rows]
    model = LogisticRegression(C=1.0 / l2, max_iter=1000).fit(xs, ys)
    proba = model.predict_proba(xs)[np.arange(rows.size), ys.astype(int)]
    doc = {
        "kind": "molecules-activity-prior",
        "weights": [float(v) for v in model.coef_[0]],
        "bias": float(model.intercept_[0]),
        "predictor": str(model_dir),
        "predictor_onnx_sha256": predictor.info.metadata["onnx"]["sha256"],
        "embedding_tensor": embedder.tensor,
        "training_data": {
            "dir": str(train_dir),
            "sha256": prep.data_hash,
            "n_task_files": len(files),
            "n_rows": int(idx.size),
            "n_rows_fitted": int(rows.size),
            "active_rate": float(y.mean()),
            "holdout_slice": holdout_slice,
            "slice_seed": slice_seed if holdout_slice else None,
        },
        "l2": l2,
        "seed": seed,
        "train_log_loss": float(-np.mean(np.log(np.clip(proba, 1e-12, 1.0)))),
        "command": command or command_line(),
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(Path(out), doc)
    logger.info("activity prior written to %s", out)
    return doc
