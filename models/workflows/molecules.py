"""End-to-end molecule workflows as plain functions: the CLI, the flows and notebooks call these.

prepare_tasks → train_model → evaluate_model → export_model → (serving.score_library)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from metascreen.domains.episodes import TaskSet
from metascreen.domains.errors import ConfigError, InputError
from metascreen.domains.io import atomic_write_json, sha256_files
from metascreen.domains.molecules.featurize import FAST_DESCRIPTORS, MoleculeFeaturizer
from metascreen.domains.molecules.load import find_task_files, load_fsmol_dir, slice_task_files
from metascreen.domains.types import FloatArray
from metascreen.models.evaluation.molecules import EvalResult, PredictFn, evaluate_tasks
from metascreen.models.features.molecules import featurize_items, fit_featurizer
from metascreen.models.serving.artifact import (
    DEFAULT_MODEL_DIR,
    read_artifact,
    refuse_existing,
)
from metascreen.models.serving.weight_storage import WeightsDtype
from metascreen.models.workflows.common import DEFAULT_CACHE_DIR, command_line, run_folder

logger = logging.getLogger(__name__)

FEATURIZER_SEED = 0  # the descriptor-scaling sample's seed, independent of the training seed


@dataclass(slots=True)
class PreparedSplit:
    """A TaskSet with its feature matrix (row i = features of ``taskset.items[i]``)."""

    taskset: TaskSet
    x: FloatArray
    data_hash: str


def resolve_splits(data_dir: Path, valid_dir: Path | None = None) -> tuple[Path, Path | None]:
    """``DATA_DIR`` holding ``train/`` and ``valid/`` (FS-Mol layout), or a train folder + ``valid_dir``."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise InputError(f"{data_dir}: no such directory")
    if (data_dir / "train").is_dir():
        return data_dir / "train", valid_dir or (
            (data_dir / "valid") if (data_dir / "valid").is_dir() else None
        )
    return data_dir, valid_dir


def train_slice_files(data_dir: Path, fraction: float, seed: int) -> list[Path]:
    """The seeded slice of ``data_dir``'s task files (``--train-slice`` / ``--holdout-slice``)."""
    return slice_task_files(find_task_files(Path(data_dir)), fraction, seed)


def split_holdout(train_dir: Path, fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files) of ``train_dir`` for ``--holdout-slice fraction``."""
    files = find_task_files(Path(train_dir))
    held = slice_task_files(files, fraction, seed)  # = train_slice_files(train_dir, ...)
    kept = set(held)
    train_files = [f for f in files if f not in kept]
    if not train_files:
        raise ConfigError(f"--holdout-slice {fraction} leaves no training task files")
    logger.info(
        "holding out %d of %d train task files (slice %s, seed %d)",
        len(held),
        len(held) + len(train_files),
        fraction,
        seed,
    )
    return train_files, held


def prepare_tasks(
    data_dir: Path,
    featurizer: MoleculeFeaturizer,
    cache_dir: Path | None = None,
    workers: int = 2,
    progress: bool = True,
    files: Sequence[Path] | None = None,
    min_size: int = 1,
) -> PreparedSplit:
    """Load an FS-Mol-format task folder (or only ``files`` of it) and featurize its molecules.

    Tasks with fewer than ``min_size`` valid rows are skipped (one warning per load).
    """
    files = list(files) if files is not None else find_task_files(Path(data_dir))
    ts = load_fsmol_dir(
        Path(data_dir), workers=workers, min_size=min_size, cache_dir=cache_dir, files=files
    )
    if not ts.tasks:
        raise InputError(f"{data_dir}: no task file has a valid row")
    x = featurize_items(featurizer, ts.items, cache_dir, workers=workers, progress=progress)
    logger.info(
        "%s: %d tasks, %d rows, %d molecules, %d invalid rows excluded",
        data_dir,
        len(ts.tasks),
        ts.n_rows,
        len(ts.items),
        ts.n_invalid,
    )
    return PreparedSplit(ts, x, sha256_files(files))


def start_from(learner: Any, state: dict[str, Any], source: str) -> None:
    """Start ``learner`` from an artifact's weights ``state`` (``--init-from``).

    Member k of an ensemble starts from the artifact's member k (member 0 when the artifact has
    fewer; the artifact itself when it is a single model). Every tensor whose name and shape
    match is loaded: the encoder, and the head too when the learner is of the artifact's kind, so
    fine-tuning continues the artifact's model; the rest (another learner's head) starts fresh.
    """
    n_src = len({k.split(".")[1] for k in state if k.startswith("members.")})
    for k, target in enumerate(getattr(learner, "members", [learner])):
        prefix = f"members.{min(k, n_src - 1)}." if n_src else ""
        sub = {key.removeprefix(prefix): v for key, v in state.items() if key.startswith(prefix)}
        own = target.state_dict()
        same = {key: v for key, v in sub.items() if key in own and own[key].shape == v.shape}
        if not all(key in same for key in own if key.startswith("encoder.")):
            raise ConfigError(f"{source}: no encoder weights that fit this learner's encoder")
        target.load_state_dict(same, strict=False)
        logger.info(
            "member %d starts from %s%s: %d of its %d tensors (%d of them not the encoder's)",
            k,
            source,
            f" member {prefix.split('.')[1]}" if prefix else "",
            len(same),
            len(own),
            sum("encoder." not in key for key in same),
        )


def train_model(
    data_dir: Path,
    out_dir: Path,
    learner_cfg: Any,
    train_cfg: Any,
    valid_dir: Path | None = None,
    init_from: Path | None = None,
    featurizer: MoleculeFeaturizer | None = None,
    featurizer_params: dict[str, Any] | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    run_dir: Path | None = None,
    eval_support_sizes: tuple[int, ...] = (16, 32, 64),
    eval_repeats: int = 10,
    workers: int = 2,
    progress: bool = True,
    command: str | None = None,
    holdout_slice: float | None = None,
    slice_seed: int = 0,
    weights_dtype: WeightsDtype = "float16",
    member_radii: Sequence[int] | None = None,
) -> Path:
    """Meta-train a learner on FS-Mol-format tasks and write a model artifact to ``out_dir``.

    ``member_radii`` (one per ensemble member): member k reads the Morgan fingerprint of radius
    ``member_radii[k]`` (and the descriptors) out of one row holding a block per radius (the
    union featurizer, ``LearnerConfig.member_input_ranges``). Member k is then the model
    ``train --fp-radius member_radii[k] --seed seed+k`` writes, and the ensemble is what
    ``models combine`` makes of those runs.

    ``weights_dtype``: how the artifact stores its large weight tensors (``write_artifact``);
    float16 halves the files, the graph computes in float32 either way.

    ``holdout_slice``: a seeded fraction of the train task files (``slice_task_files``) is kept
    out of training and is the selection split: early stopping reads it, and its figures are
    recorded under ``metrics.selection``. Valid is then read once, after training, for the
    final figures. Without it, early stopping reads valid (the older recipe).

    ``featurizer_params`` are ``MoleculeFeaturizer`` fields (radius, n_bits, counts, descriptors;
    default descriptors: ``FAST_DESCRIPTORS``); descriptor scaling is fitted on the training
    molecules. ``init_from`` starts the encoder (and
    featurizer) from an existing artifact — required for the
    ``probe`` learner, which fits a linear head per task on that frozen encoder.
    """
    from metascreen.models.learners.registry import LearnerConfig, build_learner
    from metascreen.models.training.export import load_weights, write_artifact
    from metascreen.models.training.loop import TrainConfig, meta_train
    from metascreen.models.training.seeding import device_info, seed_everything

    learner_cfg = LearnerConfig.model_validate(learner_cfg)
    train_cfg = TrainConfig.model_validate(train_cfg)
    out_dir = refuse_existing(out_dir)
    train_dir, valid_dir = resolve_splits(Path(data_dir), valid_dir)
    init_meta: dict[str, Any] | None = None
    if init_from is not None:
        info = read_artifact(Path(init_from))
        init_meta = info.metadata
        fz = init_meta["featurizer"]
        featurizer = MoleculeFeaturizer.from_spec(fz["spec"], expected_hash=fz["hash"])
        init_cfg = json.loads((Path(init_from) / "config.json").read_text())
        learner_cfg = learner_cfg.model_copy(
            update={"encoder": LearnerConfig.model_validate(init_cfg["learner"]).encoder}
        )
    elif learner_cfg.learner == "probe":
        raise ConfigError("the probe learner needs --init-from MODEL_DIR (a meta-trained encoder)")

    t0 = time.perf_counter()
    train_files, held_files = (
        split_holdout(train_dir, holdout_slice, slice_seed)
        if holdout_slice is not None
        else (find_task_files(train_dir), [])
    )
    train_ts = load_fsmol_dir(train_dir, workers=workers, cache_dir=cache_dir, files=train_files)
    enc_cfg = learner_cfg.encoder
    graph_atoms = enc_cfg.graph_atoms if enc_cfg.kind == "hybrid" else 0
    if featurizer is None:
        params = {**(featurizer_params or {}), "graph_atoms": graph_atoms}
        if params.get("descriptors") is None:
            # The shipped recipe's set, chosen on the held-out train slice (docs/benchmarks.md).
            params["descriptors"] = FAST_DESCRIPTORS
        # Descriptor scaling is fitted on the same seeded sample whatever the run's seed, so runs
        # with other seeds share one featurizer (and its feature cache) and can be combined into
        # one ensemble graph (``combine_models``).
        featurizer = fit_featurizer(MoleculeFeaturizer(**params), train_ts, seed=FEATURIZER_SEED)
    if member_radii:
        if len(member_radii) != learner_cfg.ensemble_size:
            raise ConfigError(
                f"{len(member_radii)} member radii for an ensemble of {learner_cfg.ensemble_size}"
            )
        if init_from is not None or enc_cfg.kind != "mlp":
            raise ConfigError("member radii need the mlp encoder and no --init-from")
        own = [replace(featurizer, radius=r, extra_radii=()) for r in member_radii]
        featurizer = MoleculeFeaturizer.union(own)
        if featurizer.extra_radii:
            learner_cfg = learner_cfg.model_copy(
                update={"member_input_ranges": tuple(featurizer.columns_for(f) for f in own)}
            )
    if enc_cfg.kind == "hybrid" and featurizer.graph_atoms != graph_atoms:
        raise ConfigError(
            f"the hybrid encoder expects a {graph_atoms}-atom graph block, the featurizer has "
            f"graph_atoms={featurizer.graph_atoms}"
        )
    train = PreparedSplit(
        train_ts,
        featurize_items(featurizer, train_ts.items, cache_dir, workers, progress),
        sha256_files(train_files),
    )
    # The split early stopping reads: the held-out train slice, else valid (older recipe).
    select = (
        prepare_tasks(train_dir, featurizer, cache_dir, workers, progress, files=held_files)
        if held_files
        else prepare_tasks(valid_dir, featurizer, cache_dir, workers, progress)
        if valid_dir
        else None
    )
    logger.info(
        "data ready in %.0fs: %d train tasks, %d selection tasks (%s)",
        time.perf_counter() - t0,
        len(train_ts.tasks),
        len(select.taskset.tasks) if select else 0,
        "train slice" if held_files else "valid",
    )

    # Weights are initialised from the run's seed; ensemble member k from seed + k, so it is the
    # model ``train --seed seed+k`` writes (and ``combine_models`` of those runs is this ensemble).
    if learner_cfg.ensemble_size > 1:
        from metascreen.models.learners.ensemble import EnsembleLearner

        built = []
        for k in range(learner_cfg.ensemble_size):
            seed_everything(train_cfg.seed + k)
            built.append(build_learner(learner_cfg.member(k), featurizer.dim))
        learner: Any = EnsembleLearner(built)
    else:
        seed_everything(train_cfg.seed)
        learner = build_learner(learner_cfg, featurizer.dim)
    if init_from is not None and init_meta is not None:
        start_from(learner, load_weights(Path(init_from), init_meta), str(init_from))
    if learner_cfg.context_refs > 0:
        _set_context_references(learner, train.x, learner_cfg.context_refs)
    run_dir = run_folder(run_dir, "molecules", learner_cfg.learner, f"seed{train_cfg.seed}")
    config = {
        "learner": learner_cfg.model_dump(mode="json"),
        "train": train_cfg.model_dump(mode="json"),
    }
    atomic_write_json(run_dir / "config.json", config)
    from metascreen.models.learners.ensemble import EnsembleLearner

    members = list(learner.members) if isinstance(learner, EnsembleLearner) else [learner]
    member_metrics = []
    for k, member in enumerate(members):
        member_cfg = train_cfg.model_copy(update={"seed": train_cfg.seed + k})
        result = meta_train(
            member,
            train_ts.tasks,
            train.x,
            select.taskset.tasks if select else [],
            select.x if select is not None else np.zeros((0, featurizer.dim), np.float32),
            member_cfg,
            run_dir / f"member{k}" if len(members) > 1 else run_dir,
            progress=progress,
            select_label="train-slice" if held_files else "valid",
        )
        member_metrics.append(
            {
                "seed": member_cfg.seed,
                f"best_{'train_slice' if held_files else 'valid'}_delta_auprc@"
                f"{train_cfg.valid_support_size}": result.best_score,
                "best_step": result.best_step,
                "steps": result.steps_done,
                "seconds": round(result.seconds, 1),
                "skipped_episodes": result.skipped_episodes,
                "history": result.history,
            }
        )
    learner.cpu()
    metrics: dict[str, Any] = {
        "train": member_metrics[0] if len(members) == 1 else {"members": member_metrics}
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    selection: dict[str, Any] = (
        {
            "split": "train slice",
            "chose": "early-stopping step (best ΔAUPRC on the slice)",
            "fraction": holdout_slice,
            "slice_seed": slice_seed,
            "n_task_files": len(held_files),
            "task_files": [f.name for f in held_files],
            "data_sha256": select.data_hash if select else None,
            "valid": "read once, after training, for the final figures",
        }
        if held_files
        else {"split": "valid", "chose": "early-stopping step (best ΔAUPRC on valid)"}
    )
    extra = {
        "seed": train_cfg.seed,
        "command": command_line(command),
        "trained_on": device_info(train_cfg.device, train_cfg.amp),
        "training_data": {
            "train_dir": str(train_dir),
            "train_sha256": train.data_hash,
            "n_train_tasks": len(train_ts.tasks),
            "valid_dir": str(valid_dir) if valid_dir else None,
            "valid_sha256": sha256_files(find_task_files(valid_dir)) if valid_dir else None,
            "n_invalid_rows_excluded": train_ts.n_invalid,
        },
        "selection": selection,
        "init_from": {"path": str(init_from), "onnx_sha256": init_meta["onnx"]["sha256"]}
        if init_meta
        else None,
        "metrics": metrics,
        "run_dir": str(run_dir),
    }
    path = write_artifact(
        out_dir,
        learner,
        featurizer.dim,
        featurizer.spec(),
        featurizer.hash,
        config,
        extra,
        weights_dtype=weights_dtype,
    )
    slice_of = (
        (train_dir, holdout_slice, slice_seed, held_files) if held_files and holdout_slice else None
    )
    metrics = record_figures(
        path, metrics, slice_of, valid_dir, eval_support_sizes, eval_repeats, cache_dir, workers
    )
    if held_files or valid_dir is not None:
        atomic_write_json(run_dir / "metrics.json", metrics)
    return path


def record_figures(
    path: Path,
    metrics: dict[str, Any],
    slice_of: tuple[Path, float, int, Sequence[Path]] | None,
    valid_dir: Path | None,
    support_sizes: Sequence[int],
    repeats: int,
    cache_dir: Path | None,
    workers: int,
) -> dict[str, Any]:
    """Measure an artifact as served and record the figures in its metadata (atomic rewrite).

    The evaluate command's own code path (onnxruntime on the exported graph): on the selection
    slice ``slice_of`` = (train folder, fraction, slice seed, its task files), 3 repeats, ~10x
    the tasks of valid, under ``metrics.selection``; then on ``valid_dir``, read once, with
    ``repeats``, under ``metrics.valid``. Returns ``metrics`` with them.
    """
    metrics = dict(metrics)
    if slice_of is not None:
        train_dir, fraction, slice_seed, files = slice_of
        opts = f"--train-slice {fraction} --slice-seed {slice_seed} "
        metrics["selection"] = artifact_figures(
            train_dir, path, support_sizes, 3, cache_dir, workers, files, opts
        )
    if valid_dir is not None:
        metrics["valid"] = artifact_figures(
            valid_dir, path, support_sizes, repeats, cache_dir, workers
        )
    if slice_of is not None or valid_dir is not None:
        meta = json.loads((path / "metadata.json").read_text())
        meta["metrics"] = metrics
        atomic_write_json(path / "metadata.json", meta)
    return metrics


def artifact_figures(
    data_dir: Path,
    path: Path,
    support_sizes: Sequence[int],
    repeats: int,
    cache_dir: Path | None,
    workers: int,
    files: Sequence[Path] | None = None,
    options: str = "",
) -> dict[str, Any]:
    """``{support size: figures}`` of an artifact on a split; sizes no task can serve are skipped."""
    out: dict[str, Any] = {}
    for n in support_sizes:
        try:
            res, _, _ = evaluate_model(
                data_dir, path, (n,), repeats, 0, cache_dir, workers, False, files=files
            )
        except ConfigError as err:
            logger.warning("no figure at support %d on %s: %s", n, data_dir, err)
            continue
        r = res[n]
        out[str(n)] = {
            "mean": r.mean,
            "std": r.std,
            "n_tasks": r.n_tasks,
            "repeats": repeats,
            "seed": 0,
            "measured_with": f"metascreen evaluate molecules {data_dir} --model {path} {options}"
            f"--support-size {n} --repeats {repeats} --seed 0",
        }
        logger.info(
            "%s ΔAUPRC@%d = %.4f ± %.4f over %d tasks", data_dir, n, r.mean, r.std, r.n_tasks
        )
    return out


def export_model(model_dir: Path, out_dir: Path, weights_dtype: WeightsDtype | None = None) -> Path:
    """Re-export an artifact's torch weights to a new artifact folder (ONNX parity-checked).

    ``weights_dtype``: storage of the large weights (default: the source artifact's).
    """
    from metascreen.models.training.export import REGENERATED_KEYS, load_learner, write_artifact

    info = read_artifact(Path(model_dir))
    fz = info.metadata["featurizer"]
    featurizer = MoleculeFeaturizer.from_spec(fz["spec"], expected_hash=fz["hash"])
    learner, cfg = load_learner(Path(model_dir), info, featurizer.dim)
    keep = {k: v for k, v in info.metadata.items() if k not in REGENERATED_KEYS}
    keep["exported_from"] = str(model_dir)
    dtype = weights_dtype or info.metadata["weights"].get("dtype", "float32")
    return write_artifact(
        Path(out_dir),
        learner,
        featurizer.dim,
        fz["spec"],
        fz["hash"],
        cfg,
        keep,
        weights_dtype=dtype,
    )


def combine_models(
    model_dirs: Sequence[Path],
    out_dir: Path,
    weights_dtype: WeightsDtype | None = None,
    command: str | None = None,
    data_dir: Path | None = None,
    eval_support_sizes: tuple[int, ...] = (16, 32, 64),
    eval_repeats: int = 10,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    workers: int = 2,
) -> Path:
    """Average trained artifacts into one ensemble artifact (mean probability, one ONNX graph).

    The members must share the learner configuration, the featurizer (spec and hash) and the
    training data and selection slice; they differ by seed — or by the fingerprint radius: the
    ensemble then reads the union of their featurizers (``MoleculeFeaturizer.union``, one row
    with a fingerprint block per radius) and each member's encoder reads its own columns
    (``LearnerConfig.member_input_ranges``). A model that is itself an ensemble
    contributes its members (so a shipped ensemble can take one more run); all members weigh the
    same in the mean. The result is what ``train --ensemble
    N`` writes when its members are these runs: member k of that command is the run of
    ``--seed seed+k``, so members can be trained apart (in parallel, on several machines) and
    combined. The artifact records every member's provenance and figures under ``combined_from``.

    ``data_dir`` (train's ``DATA_DIR``: a train folder, or a folder with ``train/`` and
    ``valid/``): the ensemble's own figures are measured and recorded as ``train`` records them —
    on the members' held-out train slice (``metrics.selection``; the folder must hold the very
    files the members kept out) and, where the folder has a valid split, on valid
    (``metrics.valid``). Without it, ``metrics`` stays empty (measure with ``bench model``).

    Raises:
        ConfigError: fewer than two models, or models whose learner configuration (ensemble
            size aside), training data or selection slice differ; a
            ``data_dir`` whose slice is not the members'.
        ArtifactMismatchError: featurizers that differ by more than the Morgan radius.
    """
    from metascreen.domains.errors import ArtifactMismatchError
    from metascreen.models.learners.base import EpisodicLearner
    from metascreen.models.learners.ensemble import EnsembleLearner
    from metascreen.models.learners.registry import LearnerConfig, build_learner
    from metascreen.models.training.export import load_learner, write_artifact

    dirs = [Path(d) for d in model_dirs]
    if len(dirs) < 2:
        raise ConfigError(f"combining needs at least two models, got {len(dirs)}")
    out_dir = refuse_existing(out_dir)
    infos = [read_artifact(d) for d in dirs]
    cfgs = [json.loads((d / "config.json").read_text()) for d in dirs]

    def plain(cfg: dict[str, Any]) -> LearnerConfig:  # the configuration up to size and inputs
        lc = LearnerConfig.model_validate(cfg["learner"])
        enc = lc.encoder.model_copy(update={"input_ranges": ()})
        return lc.model_copy(update={"ensemble_size": 1, "member_input_ranges": (), "encoder": enc})

    first = plain(cfgs[0])
    featurizers = []
    for d, info, cfg in zip(dirs, infos, cfgs, strict=True):
        meta = info.metadata
        if not meta.get("weights"):
            raise ConfigError(
                f"{d}: has no torch weights (an int8 copy?); combine the float models it came from"
            )
        if plain(cfg) != first:
            raise ConfigError(f"{d}: learner configuration differs from {dirs[0]}'s")
        if LearnerConfig.model_validate(cfg["learner"]).member_input_ranges:
            raise ConfigError(f"{d}: an ensemble over several featurizers; combine its runs")
        if lineage(meta) != lineage(infos[0].metadata):
            raise ConfigError(
                f"{d}: training data or selection slice differs from {dirs[0]}'s "
                f"({lineage(meta)} vs {lineage(infos[0].metadata)})"
            )
        f = meta["featurizer"]
        featurizers.append(MoleculeFeaturizer.from_spec(f["spec"], expected_hash=f["hash"]))
    try:
        featurizer = MoleculeFeaturizer.union(featurizers)
    except ConfigError as err:
        raise ArtifactMismatchError(
            f"{', '.join(map(str, dirs))}: {err}; members must read the same feature rows or "
            "rows that differ by the fingerprint radius only"
        ) from err
    mixed = featurizer.hash != featurizers[0].hash
    members: list[EpisodicLearner] = []
    members_train: list[Any] = []
    ranges: list[tuple[tuple[int, int], ...]] = []
    for d, info, cfg, f in zip(dirs, infos, cfgs, featurizers, strict=True):
        learner = load_learner(d, info, f.dim)[0]
        own = list(learner.members) if isinstance(learner, EnsembleLearner) else [learner]
        members.extend(own)  # an ensemble contributes its members
        members_train.extend(cfg.get("members_train") or [cfg.get("train")] * len(own))
        ranges.extend([featurizer.columns_for(f)] * len(own))
    ensemble_cfg = first.model_copy(
        update={
            "ensemble_size": len(members),
            "member_input_ranges": tuple(ranges) if mixed else (),
        }
    )
    # the ensemble the configuration describes, holding the members' weights (a member of a
    # mixed ensemble reads its own columns of the union row)
    ensemble = build_learner(ensemble_cfg, featurizer.dim)
    assert isinstance(ensemble, EnsembleLearner)
    for target, member in zip(ensemble.members, members, strict=True):
        target.load_state_dict(member.state_dict())
    config = {
        "learner": ensemble_cfg.model_dump(mode="json"),
        "train": cfgs[0].get("train"),
        "members_train": members_train,
    }
    base = infos[0].metadata
    extra = {
        "seed": base.get("seed"),
        "command": command_line(command),
        "combined_from": [
            {
                "path": str(d),
                "onnx_sha256": info.metadata["onnx"]["sha256"],
                "weights_sha256": info.metadata["weights"]["sha256"],
                "seed": info.metadata.get("seed"),
                "command": info.metadata.get("command"),
                "git_sha": info.metadata.get("git_sha"),
                "trained_on": info.metadata.get("trained_on"),
                "metrics": info.metadata.get("metrics"),
                **(
                    {"combined_from": info.metadata["combined_from"]}
                    if info.metadata.get("combined_from")
                    else {}
                ),
            }
            for d, info in zip(dirs, infos, strict=True)
        ],
        "training_data": base.get("training_data"),
        "selection": base.get("selection"),
        "init_from": None,
        "metrics": {},
    }
    slice_of, valid_dir = None, None
    if data_dir is not None:  # checked before the export, so a mismatch writes nothing
        train_dir, valid_dir = resolve_splits(Path(data_dir))
        slice_of = members_slice(train_dir, base)
    dtype = weights_dtype or base["weights"].get("dtype", "float32")
    path = write_artifact(
        out_dir,
        ensemble,
        featurizer.dim,
        featurizer.spec(),
        featurizer.hash,
        config,
        extra,
        weights_dtype=dtype,
    )
    if data_dir is not None:
        record_figures(
            path, {}, slice_of, valid_dir, eval_support_sizes, eval_repeats, cache_dir, workers
        )
    return path


def members_slice(
    train_dir: Path, metadata: dict[str, Any]
) -> tuple[Path, float, int, list[Path]] | None:
    """(train folder, fraction, slice seed, files) of the slice an artifact's training kept out.

    ``None`` for an artifact selected on valid. Raises ``ConfigError`` when ``train_dir`` does not
    hold that slice's files, byte for byte (another folder, or changed files).
    """
    sel = metadata.get("selection") or {}
    if sel.get("split") != "train slice":
        return None
    fraction, slice_seed = float(sel["fraction"]), int(sel["slice_seed"])
    held = split_holdout(train_dir, fraction, slice_seed)[1]
    if [f.name for f in held] != sel.get("task_files") or sha256_files(held) != sel.get(
        "data_sha256"
    ):
        raise ConfigError(
            f"{train_dir}: its --holdout-slice {fraction} --slice-seed {slice_seed} files are not "
            "the ones the models kept out of training (another train folder, or changed files)"
        )
    return train_dir, fraction, slice_seed, held


def lineage(metadata: dict[str, Any]) -> tuple[Any, ...]:
    """What members of one ensemble share: the training data's hash and the selection slice."""
    sel = metadata.get("selection") or {}
    train = (metadata.get("training_data") or {}).get("train_sha256")
    return (
        train,
        sel.get("split"),
        sel.get("fraction"),
        sel.get("slice_seed"),
        sel.get("data_sha256"),
    )


def baseline_predict(name: str) -> tuple[PredictFn, MoleculeFeaturizer]:
    """The ``rf`` / ``knn`` baselines with their ECFP featurizer."""
    from metascreen.models.evaluation.baselines import BASELINE_FNS, baseline_featurizer

    if name not in BASELINE_FNS:
        raise ConfigError(
            f"unknown baseline {name!r}; choose one of {sorted(BASELINE_FNS)} or a model directory"
        )
    return BASELINE_FNS[name], baseline_featurizer()


def evaluate_model(
    data_dir: Path,
    model: str | Path | None = None,
    support_sizes: tuple[int, ...] = (16,),
    repeats: int = 10,
    seed: int = 0,
    cache_dir: Path | None = None,
    workers: int = 2,
    progress: bool = True,
    files: Sequence[Path] | None = None,
) -> tuple[dict[int, EvalResult], str, int]:
    """FS-Mol protocol on every task file in ``data_dir`` with an artifact (onnxruntime) or baseline.

    Returns:
        ({support_size: result}, model label, number of invalid SMILES rows excluded).

    Raises:
        ConfigError: a support size leaves no task with a valid draw (an empty result is never
            returned as a result), or ``repeats`` is below 1.
    """
    if repeats < 1 or any(n < 1 for n in support_sizes):
        raise ConfigError(
            f"support sizes {list(support_sizes)} and repeats {repeats} must all be at least 1"
        )
    model = model if model is not None else DEFAULT_MODEL_DIR
    predict: PredictFn
    if str(model) in ("rf", "knn"):
        predict, featurizer = baseline_predict(str(model))
        label = str(model)
    else:
        from metascreen.models.serving.molecules import OnnxPredictor

        onnx_model = OnnxPredictor.load(Path(model))
        predict, featurizer, label = onnx_model.logits, onnx_model.featurizer, onnx_model.name
    data = prepare_tasks(Path(data_dir), featurizer, cache_dir, workers, progress, files=files)
    largest = max((len(t.labels) for t in data.taskset.tasks), default=0)
    for n in support_sizes:
        if n >= largest:
            raise ConfigError(
                f"support size {n} (--support-size): every task in {data_dir} is too small; the "
                f"largest has {largest} compounds and the query needs at least one more"
            )
    results = {
        n: evaluate_tasks(data.taskset.tasks, data.x, predict, n, repeats, seed, progress=progress)
        for n in support_sizes
    }
    for n, res in results.items():
        if res.n_tasks == 0:
            raise ConfigError(
                f"support size {n} (--support-size): no task in {data_dir} gave a valid draw "
                f"({res.n_skipped_draws} draws skipped: support or query would hold a single "
                "class); use a smaller support size or larger tasks"
            )
    return results, label, data.taskset.n_invalid


def _set_context_references(learner: Any, x: FloatArray, n: int) -> None:
    """Give each ``context`` member the features of ``n`` training molecules as its references.

    The rows are a sample seeded by ``FEATURIZER_SEED``, not the run's seed, so members trained
    apart share them (and can be combined). Only training rows: the selection slice and valid
    never reach the graph.
    """
    import torch

    if n > len(x):
        raise ConfigError(f"--context-refs {n}: only {len(x)} training molecules")
    rows = np.sort(np.random.default_rng(FEATURIZER_SEED).choice(len(x), size=n, replace=False))
    refs = torch.as_tensor(np.asarray(x[rows], np.float32))
    for member in getattr(learner, "members", [learner]):
        member.set_references(refs)
    logger.info("context stage: %d reference training molecules", n)
