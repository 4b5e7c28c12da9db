"""Distributed, resumable batch scoring on Dask through prefect-dask's ``DaskTaskRunner``.

``--workers N`` starts a Dask ``LocalCluster`` of N single-threaded worker processes bound to
127.0.0.1 (no dashboard); ``--dask-address tcp://HOST:PORT`` uses an existing scheduler instead.
The driver streams the library in chunks and submits one Prefect task per chunk that is not yet
in the job's work folder (see ``metascreen.models.serving.chunked``), keeping at most a few chunks in
flight so memory stays flat; the output is assembled in input order once every chunk exists.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from metascreen.domains.molecules.load import iter_table_chunks
from metascreen.models.serving import chunked
from metascreen.pipelines.results import (
    model_version,
    publish_outputs,
    publish_summary,
    publish_top,
)
from metascreen.pipelines.stack import LOCALHOST

logger = logging.getLogger(__name__)

_QUIET = ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny")


def quiet_dask_logs(level: int = logging.ERROR) -> None:
    """``distributed`` logs a hundred INFO lines per cluster; keep errors only.

    The environment variable reaches the worker processes the cluster spawns.
    """
    import os

    import dask

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", logging.getLevelName(level).lower())
    dask.config.set({"logging.distributed": logging.getLevelName(level).lower()})
    for name in _QUIET:
        logging.getLogger(name).setLevel(level)


@task(name="score-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def score_chunk_task(job: chunked.ScoringJob, index: int, df: Any) -> dict[str, int]:
    """Featurize, score and write one chunk (skipped when its file already exists)."""
    quiet_dask_logs()
    return chunked.score_chunk(job, index, df)


@flow(name="batch_score_distributed")
def distributed_score_flow(
    model_dir: str,
    support: str,
    library: str,
    output: str,
    chunk_size: int = 4096,
    smiles_column: str | None = None,
    label_column: str | None = "label",
    device: str = "cpu",
    work_root: str | None = None,
    max_in_flight: int = 8,
    keep_work: bool = False,
) -> dict[str, Any]:
    """Score ``library`` chunk by chunk on the flow's task runner; resumable (see module doc)."""
    from dataclasses import asdict

    start = chunked.now()
    job = chunked.prepare_job(
        Path(model_dir),
        Path(support),
        Path(library),
        Path(output),
        chunk_size,
        smiles_column,
        label_column,
        device,
        Path(work_root) if work_root else None,
    )
    pending: list[PrefectFuture[dict[str, int]]] = []
    n_chunks = n_rows = skipped = 0
    for index, df in enumerate(iter_table_chunks(Path(library), chunk_size, smiles_column)):
        n_chunks += 1
        n_rows += len(df)
        if job.done(index):
            skipped += 1
            continue
        pending.append(score_chunk_task.submit(job, index, df))
        while len(pending) >= max_in_flight:
            pending.pop(0).result()
    for fut in pending:
        fut.result()
    logger.info(
        "%d chunks: %d scored now, %d done by an earlier run", n_chunks, n_chunks - skipped, skipped
    )
    report = chunked.finalize(
        job, n_chunks, n_rows, Path(output), chunked.now() - start, keep_work=keep_work
    )
    publish_summary(
        "batch-score-distributed",
        {
            "rows_in": report.n_input,
            "scored": report.n_scored,
            "quarantined": report.n_quarantined,
            **model_version(model_dir),
            "chunks": n_chunks,
            "chunks_skipped": skipped,
            "seconds": report.seconds,
        },
    )
    publish_top("batch-score-distributed", report.output)
    publish_outputs(
        "batch-score-distributed", {"scores": report.output, "quarantine": report.quarantine}
    )
    return {
        **asdict(report),
        "mol_per_s": report.mol_per_s,
        "n_chunks": n_chunks,
        "chunks_skipped": skipped,
        "work_dir": job.work_dir,
    }


def task_runner(workers: int | None = None, address: str | None = None) -> Any:
    """A ``DaskTaskRunner`` on an existing scheduler, or on a loopback-only ``LocalCluster``."""
    from prefect_dask import DaskTaskRunner

    quiet_dask_logs()
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers or 2,
            "threads_per_worker": 1,
            "processes": True,
            "host": LOCALHOST,
            "dashboard_address": None,  # no HTTP dashboard at all
            "silence_logs": logging.ERROR,
        },
    )


def _check_scheduler(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a ``tcp://HOST:PORT`` scheduler address."""
    import socket
    from urllib.parse import urlsplit

    from metascreen.domains.errors import InputError

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        raise InputError(f"--dask-address {address!r}: expected tcp://HOST:PORT")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
    except OSError as err:
        raise InputError(
            f"--dask-address {address}: no Dask scheduler reachable ({err.strerror or err})"
        ) from err


def score_distributed(
    model_dir: Path,
    support: Path,
    library: Path,
    output: Path,
    workers: int | None = None,
    address: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``distributed_score_flow`` on a LocalCluster of ``workers`` or the cluster at ``address``."""
    if address:
        _check_scheduler(address)
    runner = task_runner(workers, address)
    result: dict[str, Any] = distributed_score_flow.with_options(task_runner=runner)(
        str(model_dir), str(support), str(library), str(output), **kwargs
    )
    return result
