"""Where flow outputs go, and the Prefect artifacts that show a run's results in the UI.

Results root: a flow's ``results`` parameter, else ``$METASCREEN_RESULTS``, else
``./metascreen-results`` under the working directory — or ``~/metascreen-results`` when the
working directory is inside the installed code (a deployment's worker runs flows from the code
checkout; outputs never land there). Relative output paths of a flow resolve under the root.

Artifacts (``prefect.artifacts``): every flow publishes a ``<flow>-summary`` table (rows in,
scored or quarantined, model and version, seconds, finish time) and a ``<flow>-outputs``
Markdown list of absolute output paths; batch scoring adds ``<flow>-top50`` (the 50 best rows),
evaluation a per-model × support-size table, simulation the hits table and hit-curve plot.
Outside a flow run the calls do nothing (``.fn()`` in tests).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from metascreen.models.serving.artifact import utc_now

logger = logging.getLogger(__name__)

RESULTS_ENV = "METASCREEN_RESULTS"
CODE_ROOT = Path(__file__).resolve().parent.parent  # the installed metascreen package
DEFAULT_FOLDER = "metascreen-results"
TOP_N = 50


def results_root(results: str | Path | None = None) -> Path:
    """The results root (absolute): ``results``, ``$METASCREEN_RESULTS``, or a folder the
    working directory implies (never inside the installed code)."""
    chosen = results or os.environ.get(RESULTS_ENV) or None
    if chosen:
        return Path(chosen).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if cwd == CODE_ROOT or CODE_ROOT in cwd.parents:
        return Path.home() / DEFAULT_FOLDER
    return cwd / DEFAULT_FOLDER


def under_results(path: str | Path, results: str | Path | None = None) -> Path:
    """``path`` if absolute, else ``path`` under the results root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else results_root(results) / p


def find_input(path: str | None, results: str | Path | None = None) -> str | None:
    """An input a flow may have written earlier (a model folder): a relative ``path`` that exists
    under the results root resolves there; anything else (a name such as ``mf``) is unchanged."""
    if not path or Path(path).is_absolute():
        return path
    candidate = results_root(results) / path
    return str(candidate) if candidate.exists() else path


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def model_version(model_dir: str | Path | None) -> dict[str, str]:
    """``model`` (learner and folder) and ``version`` (registry name/version, else 'unregistered')."""
    from metascreen.models.registry.store import ENTRY_FILE

    if not model_dir:
        return {"model": "", "version": ""}
    path = Path(model_dir)
    learner = "?"
    meta = path / "metadata.json"
    if meta.exists():
        learner = str(json.loads(meta.read_text()).get("learner", "?"))
    version = "unregistered"
    entry = path / ENTRY_FILE
    if entry.exists():
        e = json.loads(entry.read_text())
        version = f"{e.get('name')}/{e.get('version')}"
    return {"model": f"{learner}:{path.resolve()}", "version": version}


def publish_summary(flow: str, row: dict[str, Any], description: str = "") -> None:
    """One-row ``<flow>-summary`` table artifact (a ``finished_at`` column is added)."""
    if not _in_run():
        return
    from prefect.artifacts import create_table_artifact

    cells = {k: _cell(v) for k, v in {**row, "finished_at": utc_now()}.items()}
    create_table_artifact(
        key=f"{flow}-summary", table=[cells], description=description or f"{flow} summary"
    )


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact (list of row dicts)."""
    if not _in_run():
        return
    from prefect.artifacts import create_table_artifact

    create_table_artifact(
        key=key,
        table=[{k: _cell(v) for k, v in r.items()} for r in rows],
        description=description,
    )


def publish_outputs(
    flow: str, paths: dict[str, str | Path | None], plot: Path | None = None
) -> None:
    """``<flow>-outputs`` Markdown: each output's absolute path (and the plot inline)."""
    if not _in_run():
        return
    from prefect.artifacts import create_markdown_artifact

    lines = [f"# {flow} outputs", ""]
    lines += [
        f"- {name}: `{Path(p).resolve()}`" for name, p in paths.items() if p is not None and str(p)
    ]
    if plot is not None and Path(plot).exists():
        lines += ["", f"![{Path(plot).name}]({Path(plot).resolve().as_uri()})"]
    create_markdown_artifact(
        key=f"{flow}-outputs", markdown="\n".join(lines) + "\n", description="absolute output paths"
    )


def _cell(v: Any) -> Any:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float):
        return round(v, 6)
    return v


def _chunks(path: Path, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=columns):
            yield batch.to_pandas()
    elif suffix == ".csv":
        yield from pd.read_csv(path, chunksize=65536, usecols=columns)
    elif suffix == ".sdf":
        from rdkit import Chem

        rows = []
        with Chem.ForwardSDMolSupplier(str(path), sanitize=False) as supplier:
            for mol in supplier:
                if mol is not None:
                    rows.append(mol.GetPropsAsDict())
                    if len(rows) == 65536:
                        yield pd.DataFrame(rows)
                        rows = []
        if rows:
            yield pd.DataFrame(rows)


def top_rows(path: str | Path, n: int = TOP_N, by: str = "score") -> pd.DataFrame:
    """The ``n`` rows with the highest ``by`` of a scored table, read in chunks (memory flat)."""
    best: pd.DataFrame | None = None
    for df in _chunks(Path(path), None):
        if by not in df.columns or not len(df):
            continue
        cand = df if best is None else pd.concat([best, df], ignore_index=True)
        best = cand.nlargest(n, by, keep="first")
    return best.reset_index(drop=True) if best is not None else pd.DataFrame()


def publish_top(flow: str, path: str | Path, n: int = TOP_N, by: str = "score") -> None:
    """``<flow>-top50`` table artifact: the best ``n`` rows of the scored output."""
    if not _in_run():
        return
    top = top_rows(path, n, by)
    rows = json.loads(top.to_json(orient="records")) if len(top) else []
    publish_table(f"{flow}-top{n}", rows, f"top {n} rows of {Path(path).resolve()} by {by}")
