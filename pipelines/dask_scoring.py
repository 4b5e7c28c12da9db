"""Chunked, resumable scoring on Dask without Prefect: what ``score molecules --workers N`` runs.

The command needs Dask (processes for the chunks) and the resumable work folder, not a Prefect
API: running it as a flow started a temporary Prefect server in the command and another in every
Dask worker (each worker's task runs reported to an API of its own), ~10 s each, which a SIGKILL
left behind. Here the chunks are plain ``chunked.score_chunk`` calls on a ``distributed`` client.
The ``batch_score_distributed`` flow (``metascreen.pipelines.distributed``, for deployments that
have a Prefect server) drives the same loop (``drive_chunks``) through prefect-dask.

A ``LocalCluster`` keeps its scratch space (``local_directory``) inside the output's work folder,
so nothing is written to the system temp folder; both go once the output is complete.
"""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from metascreen.domains.errors import InputError
from metascreen.domains.molecules.load import iter_table_chunks
from metascreen.models.serving import chunked
from metascreen.pipelines.stack import LOCALHOST

logger = logging.getLogger(__name__)

_QUIET = ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny")
SCRATCH = "dask-scratch-space"
"""The LocalCluster's scratch folder, inside the output's work folder."""


class _Future(Protocol):
    def result(self) -> Any: ...


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


def cluster_kwargs(workers: int | None, scratch: Path | None = None) -> dict[str, Any]:
    """``LocalCluster`` options: ``workers`` single-threaded processes on loopback, no dashboard,
    scratch space in ``scratch`` (default: Dask's, in the system temp folder)."""
    kwargs: dict[str, Any] = {
        "n_workers": workers or 2,
        "threads_per_worker": 1,
        "processes": True,
        "host": LOCALHOST,
        "dashboard_address": None,  # no HTTP dashboard at all
        "silence_logs": logging.ERROR,
    }
    if scratch is not None:
        kwargs["local_directory"] = str(scratch)
    return kwargs


def scratch_in(scratch: Path) -> Any:
    """Context: every Dask server started in it (the scheduler, nannies and workers) keeps its
    scratch space in ``scratch`` instead of the system temp folder."""
    import dask

    return dask.config.set({"temporary-directory": str(scratch)})


def check_scheduler(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when nothing listens at a ``tcp://HOST:PORT`` scheduler address."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        raise InputError(f"--dask-address {address!r}: expected tcp://HOST:PORT")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
    except OSError as err:
        raise InputError(
            f"--dask-address {address}: no Dask scheduler reachable ({err.strerror or err})"
        ) from err


def drive_chunks(
    job: chunked.ScoringJob,
    library: Path,
    chunk_size: int,
    smiles_column: str | None,
    submit: Callable[[int, Any], _Future],
    max_in_flight: int = 8,
) -> tuple[int, int, int]:
    """Stream ``library`` in chunks, ``submit(index, frame)`` those not done yet, keeping at most
    ``max_in_flight`` in flight, and wait for all; ``(n_chunks, n_rows, n_skipped)``."""
    pending: list[_Future] = []
    n_chunks = n_rows = skipped = 0
    for index, df in enumerate(iter_table_chunks(library, chunk_size, smiles_column)):
        n_chunks += 1
        n_rows += len(df)
        if job.done(index):
            skipped += 1
            continue
        pending.append(submit(index, df))
        while len(pending) >= max_in_flight:
            pending.pop(0).result()
    for fut in pending:
        fut.result()
    logger.info(
        "%d chunks: %d scored now, %d done by an earlier run", n_chunks, n_chunks - skipped, skipped
    )
    return n_chunks, n_rows, skipped


def remove_scratch(work_root: Path) -> None:
    """Remove a closed LocalCluster's scratch folder, then the work root if nothing else is left
    in it (a killed run's job folder for other inputs stays, to be resumed)."""
    shutil.rmtree(Path(work_root) / SCRATCH, ignore_errors=True)
    chunked.remove_if_empty(Path(work_root))


def _run(
    client: Any,
    job: chunked.ScoringJob,
    library: Path,
    chunk_size: int,
    smiles_column: str | None,
) -> tuple[int, int, int]:
    """``drive_chunks`` with each chunk a ``chunked.score_chunk`` call on ``client``."""

    def submit(index: int, df: Any) -> _Future:
        fut: _Future = client.submit(
            chunked.score_chunk, job, index, df, pure=False, retries=1, key=f"chunk-{index:06d}"
        )
        return fut

    return drive_chunks(job, library, chunk_size, smiles_column, submit)


def score_on_dask(
    model_dir: Path,
    support: Path,
    library: Path,
    output: Path,
    workers: int | None = None,
    address: str | None = None,
    chunk_size: int = 4096,
    smiles_column: str | None = None,
    label_column: str | None = "label",
    device: str = "cpu",
) -> dict[str, Any]:
    """Score ``library`` chunk by chunk on a loopback LocalCluster of ``workers`` processes, or on
    the scheduler at ``address``; resumable (see ``metascreen.models.serving.chunked``)."""
    from distributed import Client, LocalCluster

    if address:
        check_scheduler(address)
    quiet_dask_logs()
    start = chunked.now()
    job = chunked.prepare_job(
        model_dir, support, library, output, chunk_size, smiles_column, label_column, device
    )
    work_root = chunked.default_work_root(output)
    if address:
        with Client(address) as client:
            counts = _run(client, job, library, chunk_size, smiles_column)
    else:
        scratch = work_root / SCRATCH
        with (
            scratch_in(scratch),
            LocalCluster(**cluster_kwargs(workers, scratch)) as cluster,
            Client(cluster) as client,
        ):
            counts = _run(client, job, library, chunk_size, smiles_column)
    n_chunks, n_rows, skipped = counts
    report = chunked.finalize(job, n_chunks, n_rows, output, chunked.now() - start)
    remove_scratch(work_root)
    return {
        **asdict(report),
        "mol_per_s": report.mol_per_s,
        "n_chunks": n_chunks,
        "chunks_skipped": skipped,
        "work_dir": job.work_dir,
    }
