"""Distributed, resumable batch scoring as a Prefect flow on Dask, through prefect-dask.

What deployments run (``batch_score_flow`` with ``dask_workers`` or ``dask_address``), where a
Prefect server records each chunk as a task run: a loopback Dask ``LocalCluster`` of N
single-threaded worker processes (no dashboard), or an existing scheduler. The driver streams the
library in chunks and submits one Prefect task per chunk that is not yet in the job's work folder
(see ``metascreen.models.serving.chunked``), keeping at most a few chunks in flight so memory
stays flat; the output is assembled in input order once every chunk exists. The CLI's
``score molecules --workers N / --dask-address`` runs the same loop without Prefect
(``metascreen.pipelines.dask_scoring``): it needs no Prefect API.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from metascreen.models.serving import chunked
from metascreen.pipelines.dask_scoring import (
    SCRATCH,
    check_scheduler,
    cluster_kwargs,
    drive_chunks,
    quiet_dask_logs,
    remove_scratch,
    scratch_in,
)
from metascreen.pipelines.results import (
    model_version,
    publish_outputs,
    publish_summary,
    publish_top,
)

logger = logging.getLogger(__name__)


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
    n_chunks, n_rows, skipped = drive_chunks(
        job,
        Path(library),
        chunk_size,
        smiles_column,
        lambda index, df: score_chunk_task.submit(job, index, df),
        max_in_flight,
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


def task_runner(
    workers: int | None = None, address: str | None = None, scratch: Path | None = None
) -> Any:
    """A ``DaskTaskRunner`` on an existing scheduler, or on a loopback-only ``LocalCluster``
    whose scratch space is ``scratch`` (default: Dask's, in the system temp folder)."""
    from prefect_dask import DaskTaskRunner

    quiet_dask_logs()
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs(workers, scratch)
    )


def score_distributed(
    model_dir: Path,
    support: Path,
    library: Path,
    output: Path,
    workers: int | None = None,
    address: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``distributed_score_flow`` on a LocalCluster of ``workers`` or the cluster at ``address``.

    The LocalCluster's scratch space is in the output's work folder, removed with it.
    """
    if address:
        check_scheduler(address)
    work_root = Path(kwargs.get("work_root") or chunked.default_work_root(Path(output)))
    runner = task_runner(workers, address, work_root / SCRATCH)
    with scratch_in(work_root / SCRATCH):
        result: dict[str, Any] = distributed_score_flow.with_options(task_runner=runner)(
            str(model_dir), str(support), str(library), str(output), **kwargs
        )
    if not kwargs.get("keep_work"):
        remove_scratch(work_root)
    return result
