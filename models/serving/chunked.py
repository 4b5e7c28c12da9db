"""Resumable chunked scoring: the pieces a distributed engine runs (numpy/pandas/onnxruntime only).

A scoring job is keyed by the sha256 of its inputs (library file, support file, model ONNX and
featurizer hashes, chunk size, columns). Its work folder holds one Parquet file per finished
chunk, each written to a temporary name and renamed into place, so a chunk file exists only when
it is complete. Rerunning the same job skips the chunks already there; ``finalize`` concatenates
the chunks in order into the output (Parquet, CSV or SDF by its suffix), checks that every input row appears exactly once (scored or quarantined),
and writes the output and quarantine files atomically.

The orchestration (which engine runs ``score_chunk``) lives in ``metascreen.pipelines``.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metascreen.domains.errors import InputError
from metascreen.domains.io import (
    atomic_write_bytes,
    atomic_write_json,
    canonical_json_hash,
    sha256_file,
)
from metascreen.domains.quarantine import QUARANTINE_COLUMNS
from metascreen.domains.types import FloatArray
from metascreen.models.serving import molecules as serving
from metascreen.models.serving.molecules import OnnxPredictor, ScoreReport
from metascreen.models.serving.writers import check_output_suffix, open_writer

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class ScoringJob:
    """Everything a chunk needs, small enough to send to every worker."""

    model_dir: str
    work_dir: str
    support_x: FloatArray
    support_y: FloatArray
    device: str = "cpu"

    def chunk_path(self, index: int) -> Path:
        """The finished-chunk file (its existence marks the chunk as done)."""
        return Path(self.work_dir) / f"chunk-{index:06d}.parquet"

    def quarantine_path(self, index: int) -> Path:
        """The chunk's rejected rows (written before the chunk file)."""
        return Path(self.work_dir) / f"chunk-{index:06d}.quarantine.parquet"

    def done(self, index: int) -> bool:
        """True when chunk ``index`` finished in this or an earlier run."""
        return self.chunk_path(index).exists()


def job_key(
    model_dir: Path,
    support_path: Path,
    library_path: Path,
    chunk_size: int,
    smiles_column: str | None,
    label_column: str | None,
) -> str:
    """sha256 of the inputs that determine the chunks' contents."""
    meta = json.loads((Path(model_dir) / "metadata.json").read_text())
    return canonical_json_hash(
        {
            "library": sha256_file(Path(library_path)),
            "support": sha256_file(Path(support_path)),
            "onnx": meta["onnx"]["sha256"],
            "featurizer": meta["featurizer"]["hash"],
            "chunk_size": chunk_size,
            "smiles_column": smiles_column,
            "label_column": label_column,
        }
    )


def default_work_root(output: Path) -> Path:
    """Work folders live next to the output: ``<output dir>/.<output name>.work/``."""
    output = Path(output)
    return output.parent / f".{output.name}.work"


def prepare_job(
    model_dir: Path,
    support_path: Path,
    library_path: Path,
    output: Path,
    chunk_size: int = 4096,
    smiles_column: str | None = None,
    label_column: str | None = "label",
    device: str = "cpu",
    work_root: Path | None = None,
) -> ScoringJob:
    """Verify the model, featurize the support set and create (or reopen) the job's work folder."""
    check_output_suffix(output)
    predictor = OnnxPredictor.load(Path(model_dir), device="cpu", threads=1)
    s_x, s_y = serving.support_features(predictor, Path(support_path), label_column)
    key = job_key(model_dir, support_path, library_path, chunk_size, smiles_column, label_column)
    work = Path(work_root or default_work_root(output)) / key[:20]
    work.mkdir(parents=True, exist_ok=True)
    manifest = {
        "key": key,
        "model_dir": str(model_dir),
        "support": str(support_path),
        "library": str(library_path),
        "chunk_size": chunk_size,
        "smiles_column": smiles_column,
        "label_column": label_column,
    }
    if not (work / MANIFEST).exists():
        atomic_write_json(work / MANIFEST, manifest)
    n_done = len(list(work.glob("chunk-*[0-9].parquet")))
    if n_done:
        logger.info("resuming %s: %d chunks already done", work, n_done)
    return ScoringJob(str(model_dir), str(work), s_x, s_y, device)


_PREDICTORS: dict[tuple[str, str], OnnxPredictor] = {}


def _predictor(model_dir: str, device: str) -> OnnxPredictor:
    """One verified session per worker process (loaded on the worker's first chunk)."""
    key = (model_dir, device)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = OnnxPredictor.load(Path(model_dir), device=device, threads=1)
    return _PREDICTORS[key]


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def score_chunk(job: ScoringJob, index: int, df: pd.DataFrame) -> dict[str, int]:
    """Featurize and score one chunk and write it atomically; a finished chunk is left alone.

    The frame written is exactly what ``serving.score_library`` writes for the same rows.
    """
    if job.done(index):
        return {"index": index, "n_scored": -1, "n_quarantined": -1, "skipped": 1}
    predictor = _predictor(job.model_dir, job.device)
    serving._init_worker(predictor.featurizer.spec())
    valid, x, bad = serving._prepare_chunk(df)
    valid = serving.add_scores(predictor, job.support_x, job.support_y, valid, x)
    q = pd.DataFrame(bad, columns=list(QUARANTINE_COLUMNS)).astype(
        {"row": "int64", "input": "str", "reason": "str"}
    )
    atomic_write_bytes(job.quarantine_path(index), _parquet_bytes(q))
    atomic_write_bytes(job.chunk_path(index), _parquet_bytes(valid))  # the done marker: last
    return {"index": index, "n_scored": len(valid), "n_quarantined": len(q), "skipped": 0}


def finalize(
    job: ScoringJob,
    n_chunks: int,
    n_rows: int,
    output: Path,
    seconds: float,
    keep_work: bool = False,
) -> ScoreReport:
    """Concatenate the chunks in order into ``output`` (+ quarantine CSV); check row accounting.

    Then, unless ``keep_work``, remove the job's folder and the work root if that leaves it empty.

    Raises:
        InputError: a chunk is missing, or rows are missing or duplicated.
    """
    output = Path(output)
    missing = [i for i in range(n_chunks) if not job.done(i)]
    if missing:
        raise InputError(
            f"{job.work_dir}: {len(missing)} chunks unfinished (first {missing[:5]}); rerun the command"
        )
    n_scored, quarantined = _write_output(job, n_chunks, n_rows, output)
    q_path, n_q = _write_quarantine(output, quarantined)
    providers = list(_predictor(job.model_dir, job.device).session.get_providers())
    report = ScoreReport(
        n_input=n_rows,
        n_scored=n_scored,
        n_quarantined=n_q,
        n_support=len(job.support_y),
        output=str(output),
        quarantine=str(q_path) if n_q else None,
        seconds=seconds,
        providers=providers,
    )
    atomic_write_json(Path(job.work_dir) / "report.json", asdict(report))
    if not keep_work:
        shutil.rmtree(job.work_dir, ignore_errors=True)
        remove_if_empty(Path(job.work_dir).parent)
    return report


def _write_output(
    job: ScoringJob, n_chunks: int, n_rows: int, output: Path
) -> tuple[int, list[pd.DataFrame]]:
    """Write the chunks' scored rows in order to ``output`` (atomically, only if every input row
    appears exactly once); the number written and the chunks' quarantined rows."""
    import pyarrow.parquet as pq

    seen = np.zeros(n_rows, dtype=np.int64)
    writer = open_writer(output)
    quarantined = []
    n_scored = 0
    try:
        for i in range(n_chunks):
            table = pq.read_table(job.chunk_path(i))
            q = pd.read_parquet(job.quarantine_path(i))
            rows = np.concatenate([table.column("row").to_numpy(), q["row"].to_numpy()])
            np.add.at(seen, rows, 1)
            if len(q):
                quarantined.append(q)
            writer.write(table.to_pandas())
            n_scored += table.num_rows
    except BaseException:
        writer.abort()
        raise
    if n_chunks == 0 or n_rows == 0:
        writer.abort()
        raise InputError(f"{job.model_dir}: the library has no rows")
    if (seen != 1).any():
        writer.abort()
        raise InputError(
            f"{job.work_dir}: row accounting failed ({int((seen == 0).sum())} missing, "
            f"{int((seen > 1).sum())} duplicated); delete the work folder and rerun"
        )
    writer.commit()
    return n_scored, quarantined


def _write_quarantine(output: Path, quarantined: list[pd.DataFrame]) -> tuple[Path, int]:
    """Replace ``<output stem>.quarantine.csv`` by the quarantined rows (none: no file)."""
    q_path = output.with_name(output.stem + ".quarantine.csv")
    q_path.unlink(missing_ok=True)
    if not quarantined:
        return q_path, 0
    qdf = pd.concat(quarantined, ignore_index=True)
    atomic_write_bytes(q_path, qdf.to_csv(index=False).encode())
    logger.warning("quarantined %d rows to %s", len(qdf), q_path)
    return q_path, len(qdf)


def remove_if_empty(folder: Path) -> bool:
    """Remove ``folder`` (a work root) if nothing is left in it; whether it is gone.

    A completed job removes its own folder; the root beside the output goes with its last job,
    so a successful run leaves only its outputs. A job folder of other inputs (a killed run that
    was not rerun) keeps the root, to be resumed.
    """
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        logger.info("kept %s: %s", folder, ", ".join(sorted(p.name for p in folder.iterdir())))
        return False
    return True


def now() -> float:
    """Monotonic seconds (for the orchestrator's timing)."""
    return time.perf_counter()
