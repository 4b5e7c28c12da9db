"""Batch scoring with onnxruntime: adapt to an assay's support set, score a library in chunks.

Imports numpy, pandas, pyarrow, onnxruntime, RDKit and ``metascreen.domains`` only — never torch
(tested in a subprocess where torch cannot be imported). Memory stays flat in the library size:
chunks are parsed and featurized by a forked worker pool, scored, and appended to the output
(Parquet, CSV or SDF by its suffix; ``serving.writers``) under a temporary name that is renamed
into place at the end. Invalid SMILES go to a
quarantine CSV; every input row is either scored or quarantined.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rdkit import Chem

from metascreen.domains.episodes import TaskSet
from metascreen.domains.errors import InputError, MetascreenError
from metascreen.domains.molecules.featurize import MoleculeFeaturizer, invalid_reason, parse_smiles
from metascreen.domains.molecules.load import iter_table_chunks, load_table_tasks
from metascreen.domains.parallel import fork_pool
from metascreen.domains.quarantine import QuarantineWriter
from metascreen.domains.types import FloatArray
from metascreen.models.serving.artifact import MOLECULES_PREDICTOR, ArtifactInfo, read_artifact
from metascreen.models.serving.session import open_session
from metascreen.models.serving.writers import check_output_suffix, open_writer

logger = logging.getLogger(__name__)


class OnnxPredictor:
    """An artifact's ONNX graph plus its featurizer; verifies hashes on load.

    Example:
        >>> pred = OnnxPredictor.load("data/artifacts/molecules-default")
        >>> logits = pred.logits(support_x, support_y, query_x)
    """

    def __init__(
        self, info: ArtifactInfo, device: str = "auto", threads: int | None = None
    ) -> None:
        """Open an inference session for a verified artifact."""
        self.info = info
        fz = info.metadata["featurizer"]
        if info.metadata.get("kind") == MOLECULES_PREDICTOR:
            self.featurizer = MoleculeFeaturizer.from_spec(fz["spec"], expected_hash=fz["hash"])
        # read_artifact has already checked the graph's sha256
        self.session = open_session(info.onnx_path, None, device, threads)

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: str = "auto",
        threads: int | None = None,
        kind: str = MOLECULES_PREDICTOR,
    ) -> OnnxPredictor:
        """Read, verify and open the artifact in ``model_dir`` (of the given ``kind``)."""
        return cls(read_artifact(Path(model_dir), kind=kind), device=device, threads=threads)

    @property
    def name(self) -> str:
        """Learner name and folder, for reports."""
        return f"{self.info.metadata.get('learner', '?')}:{self.info.path}"

    def logits(
        self, support_x: FloatArray, support_y: FloatArray, query_x: FloatArray
    ) -> np.ndarray:
        """(Q,) logits for ``query_x`` adapted to the support set."""
        out = self.session.run(
            None,
            {
                "support_x": np.ascontiguousarray(support_x, dtype=np.float32),
                "support_y": np.ascontiguousarray(support_y, dtype=np.float32),
                "query_x": np.ascontiguousarray(query_x, dtype=np.float32),
            },
        )[0]
        return np.asarray(out)

    __call__ = logits


@dataclass(slots=True)
class ScoreReport:
    """Row accounting of one scoring run: ``n_input == n_scored + n_quarantined``."""

    n_input: int
    n_scored: int
    n_quarantined: int
    n_support: int
    output: str
    quarantine: str | None
    seconds: float
    providers: list[str]

    @property
    def mol_per_s(self) -> float:
        """End-to-end throughput."""
        return self.n_input / self.seconds if self.seconds > 0 else float("nan")


def load_support(
    path: Path, label_column: str | None = "label", smiles_column: str | None = None
) -> TaskSet:
    """The new assay's labelled compounds (a table with SMILES and a binary label)."""
    ts = load_table_tasks(Path(path), smiles_column=smiles_column, label_column=label_column)
    if ts.n_invalid:
        raise InputError(
            f"{path}: {ts.n_invalid} support rows have invalid SMILES; fix or remove them (support rows carry labels)"
        )
    return ts


def check_support_labels(s_y: FloatArray, where: str) -> None:
    """Refuse a support set without both classes (adaptation needs actives and inactives)."""
    if len(s_y) == 0 or s_y.min() == s_y.max():
        raise InputError(
            f"{where}: the support set needs both actives (1) and inactives (0); "
            f"all labels are {s_y[0]:.0f}"
            if len(s_y)
            else f"{where}: the support set is empty"
        )


def support_features(
    predictor: OnnxPredictor, support_path: Path, label_column: str | None = "label"
) -> tuple[FloatArray, FloatArray]:
    """(support_x (S, D), support_y (S,)) of the assay's labelled compounds; needs both classes."""
    support = load_support(support_path, label_column=label_column)
    if not support.tasks:
        raise InputError(f"{support_path}: the support set has no rows")
    s_rows = np.concatenate([t.item_idx for t in support.tasks])
    s_y = np.concatenate([t.labels for t in support.tasks]).astype(np.float32)
    check_support_labels(s_y, str(support_path))
    return predictor.featurizer.transform_smiles([support.items[i] for i in s_rows]), s_y


def add_scores(
    predictor: OnnxPredictor,
    s_x: FloatArray,
    s_y: FloatArray,
    valid: pd.DataFrame,
    x: FloatArray,
) -> pd.DataFrame:
    """``valid`` with ``score`` (probability) and ``logit`` columns for its feature rows ``x``."""
    logits = predictor.logits(s_x, s_y, x) if len(x) else np.zeros(0, np.float32)
    valid["score"] = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    valid["logit"] = logits.astype(np.float32)
    return valid


_WORKER: MoleculeFeaturizer | None = None


def _init_worker(spec: dict[str, Any]) -> None:
    global _WORKER
    _WORKER = MoleculeFeaturizer.from_spec(spec)


def _prepare_chunk(df: pd.DataFrame) -> tuple[pd.DataFrame, FloatArray, list[tuple[int, str, str]]]:
    """Parse and featurize one chunk: (valid rows, their features, quarantined rows)."""
    assert _WORKER is not None
    keep, mols, bad = [], [], []
    canon = []
    for i, (row, smi) in enumerate(zip(df["row"].tolist(), df["SMILES"].tolist(), strict=True)):
        mol = parse_smiles(smi)
        if mol is None:
            bad.append((int(row), str(smi), invalid_reason(smi)))
            continue
        keep.append(i)
        mols.append(mol)
        canon.append(Chem.MolToSmiles(mol))
    valid = df.iloc[keep].reset_index(drop=True)
    valid.insert(2, "canonical_smiles", canon)
    return valid, _WORKER.transform(mols), bad  # (n_valid, dim), one batch per chunk


def _prepared_chunks(
    chunks: Iterator[pd.DataFrame],
    featurizer: MoleculeFeaturizer,
    workers: int,
    source: Path | str = "the library",
) -> Generator[tuple[pd.DataFrame, FloatArray, list[tuple[int, str, str]]], None, None]:
    """Featurized chunks; an error in a worker (or in reading) is re-raised here naming ``source``."""
    try:
        if workers <= 1:
            _init_worker(featurizer.spec())
            yield from (_prepare_chunk(c) for c in chunks)
            return
        with fork_pool(workers, _init_worker, (featurizer.spec(),)) as pool:
            yield from pool.imap(_prepare_chunk, chunks)
    except MetascreenError:
        raise
    except Exception as err:  # raised in a worker process: the parent names the file
        raise InputError(f"{source}: featurizing failed ({type(err).__name__}: {err})") from err


def score_library(
    model_dir: Path,
    support_path: Path,
    library_path: Path,
    output: Path,
    chunk_size: int = 4096,
    workers: int = 2,
    smiles_column: str | None = None,
    label_column: str | None = "label",
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
) -> ScoreReport:
    """Adapt the model in ``model_dir`` to ``support_path`` and score ``library_path``.

    Writes ``output`` — Parquet, CSV or SDF by its suffix (see ``serving.writers``): ``row``, the
    input columns, ``canonical_smiles``, ``score`` in [0, 1] and ``logit`` — chunk by chunk to a
    temporary name renamed into place at the end, and, when needed,
    ``<output stem>.quarantine.csv`` (``row``, ``input``, ``reason``).
    """
    check_output_suffix(output)  # before the model is loaded or any row is read
    start = time.perf_counter()
    # With forked featurizers busy on every core, one inference thread overlaps with them best.
    threads = threads or (1 if workers > 1 else None)
    predictor = OnnxPredictor.load(model_dir, device=device, threads=threads)
    s_x, s_y = support_features(predictor, support_path, label_column)

    output = Path(output)
    q_path = output.with_name(output.stem + ".quarantine.csv")
    q_path.unlink(missing_ok=True)
    n_input = n_scored = 0
    first_bad: tuple[int, str] | None = None
    writer = open_writer(output)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="score", unit="mol")
    chunks = iter_table_chunks(Path(library_path), chunk_size, smiles_column)
    prepared = _prepared_chunks(chunks, predictor.featurizer, workers, Path(library_path))
    with QuarantineWriter(q_path) as quarantine:
        try:
            for valid, x, bad in prepared:
                for row, smi, reason in bad:
                    quarantine.add(row, smi, reason)
                    first_bad = first_bad or (row, reason)
                writer.write(add_scores(predictor, s_x, s_y, valid, x))
                n_input += len(valid) + len(bad)
                n_scored += len(valid)
                if bar is not None:
                    bar.update(len(valid) + len(bad))
        except BaseException:
            writer.abort()
            raise
        finally:
            prepared.close()  # ends the worker pool now, also on an error or interruption
            if bar is not None:
                bar.close()
    if n_input == 0:
        writer.abort()
        raise InputError(f"{library_path}: the library has no rows (nothing to score)")
    if n_scored == 0:
        writer.abort()
        q_path.unlink(missing_ok=True)
        raise InputError(
            f"{library_path}: none of its {n_input} rows could be scored (row "
            f"{first_bad[0] if first_bad else 0}: {first_bad[1] if first_bad else '?'}); "
            "is it the right file and SMILES column?"
        )
    writer.commit()
    report = ScoreReport(
        n_input=n_input,
        n_scored=n_scored,
        n_quarantined=quarantine.count,
        n_support=len(s_y),
        output=str(output),
        quarantine=str(q_path) if quarantine.count else None,
        seconds=time.perf_counter() - start,
        providers=list(predictor.session.get_providers()),
    )
    assert report.n_input == report.n_scored + report.n_quarantined
    logger.info(
        "scored %d of %d rows (%d quarantined) in %.1fs",
        n_scored,
        n_input,
        quarantine.count,
        report.seconds,
    )
    return report
