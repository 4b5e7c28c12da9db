"""Read assays: FS-Mol task directories and SMILES tables (CSV / Parquet / SDF / .smi).

Every loader returns canonical SMILES. Rows whose SMILES is empty or fails RDKit's default
sanitisation are never dropped silently: they are counted on the ``TaskSet`` (evaluation
excludes them) and reported through ``LoadReport.invalid`` with file, row and reason.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metascreen.domains.episodes import Task, TaskSet
from metascreen.domains.errors import ConfigError, InputError, SchemaError
from metascreen.domains.io import FRAME_SUFFIXES, checked_suffix, read_frame
from metascreen.domains.molecules.featurize import canonicalize, invalid_reason
from metascreen.domains.parallel import fork_pool

logger = logging.getLogger(__name__)

FSMOL_GLOB = "*.jsonl.gz"
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".sdf", ".smi", ".txt")
_TRUE = {"1", "1.0", "true", "True", "active"}
_FALSE = {"0", "0.0", "false", "False", "inactive"}


@dataclass(slots=True)
class ParsedFile:
    """Result of reading one FS-Mol task file."""

    path: str
    task_id: str
    smiles: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    invalid: list[tuple[int, str, str]] = field(default_factory=list)  # (row, input, reason)


def parse_label(value: object, where: str) -> float:
    """Binary label from ``"1.0"/"0.0"``, 1/0, True/False; anything else is a ``SchemaError``."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
        return float(value)
    if isinstance(value, str) and value.strip() in _TRUE:
        return 1.0
    if isinstance(value, str) and value.strip() in _FALSE:
        return 0.0
    raise SchemaError(f"{where}: label {value!r} is not binary; expected 1/0 (or '1.0'/'0.0')")


def read_fsmol_file(path: Path) -> ParsedFile:
    """Read one ``<task>.jsonl.gz`` file: fields ``SMILES`` and ``Property`` on every line.

    Raises:
        SchemaError: a line is not JSON, lacks ``SMILES``/``Property``, or has a non-binary label.
        InputError: the file is not a readable gzip (e.g. truncated).
    """
    path = Path(path)
    task_id = path.name.removesuffix(".jsonl.gz")
    out = ParsedFile(path=str(path), task_id=task_id)
    row = -1
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for row, line in enumerate(fh, start=1):  # noqa: B007 - row used after the loop
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise SchemaError(f"{path} line {row}: not valid JSON ({err.msg})") from err
                if not isinstance(rec, dict):
                    raise SchemaError(
                        f"{path} line {row}: a JSON {type(rec).__name__}, expected an object with "
                        "'SMILES' and 'Property'"
                    )
                for key in ("SMILES", "Property"):
                    if key not in rec:
                        raise SchemaError(
                            f"{path} line {row}: field {key!r} missing; FS-Mol task files need "
                            "'SMILES' and 'Property' on every line"
                        )
                label = parse_label(rec["Property"], f"{path} line {row} field 'Property'")
                smi = rec["SMILES"]
                canon = canonicalize(smi) if isinstance(smi, str) else None
                if canon is None:
                    out.invalid.append((row, str(smi), invalid_reason(smi)))
                    continue
                out.smiles.append(canon)
                out.labels.append(label)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise InputError(
            f"{path}: cannot read gzip data after line {max(row, 0)} ({err}); "
            "the file is truncated or not gzip-compressed JSON lines"
        ) from err
    return out


def _cached_load(
    files: list[Path], data_dir: Path, workers: int, min_size: int, cache_dir: Path
) -> TaskSet:
    from metascreen.domains.io import atomic_write_bytes, atomic_write_text, sha256_files

    key = sha256_files(files)[:24] + f"_m{min_size}"
    npz, meta = cache_dir / f"tasks_{key}.npz", cache_dir / f"tasks_{key}.json"
    if npz.exists() and meta.exists():
        info = json.loads(meta.read_text())
        arrays = np.load(npz)
        tasks = [
            Task(tid, arrays[f"i{k}"], arrays[f"y{k}"]) for k, tid in enumerate(info["task_ids"])
        ]
        log_skipped(info["skipped"], str(data_dir))
        logger.info("loaded %d tasks of %s from cache %s", len(tasks), data_dir, npz)
        return TaskSet(tasks, info["items"], str(data_dir), info["n_invalid"], info["skipped"])
    ts = load_fsmol_dir(data_dir, workers, min_size, files=files)
    import io

    buf = io.BytesIO()
    to_save: dict[str, np.ndarray] = {}
    for k, t in enumerate(ts.tasks):
        to_save[f"i{k}"], to_save[f"y{k}"] = t.item_idx, t.labels
    np.savez(buf, **to_save)  # type: ignore[arg-type]
    atomic_write_bytes(npz, buf.getvalue())
    atomic_write_text(
        meta,
        json.dumps(
            {
                "task_ids": [t.task_id for t in ts.tasks],
                "items": ts.items,
                "n_invalid": ts.n_invalid,
                "skipped": ts.skipped,
            }
        ),
    )
    return ts


def _read_fsmol_file_safe(path: Path) -> ParsedFile | InputError:
    try:
        return read_fsmol_file(path)
    except InputError as err:  # re-raised in the parent, where the traceback is not needed
        return err


def find_task_files(data_dir: Path) -> list[Path]:
    """Sorted FS-Mol task files directly in ``data_dir`` (e.g. ``fsmol/valid``)."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise InputError(f"{data_dir}: no such directory")
    if data_dir.is_file():
        if data_dir.name.endswith(".jsonl.gz"):
            return [data_dir]
        raise InputError(f"{data_dir}: expected a directory of FS-Mol '*.jsonl.gz' task files")
    files = sorted(data_dir.glob(FSMOL_GLOB))
    if not files:
        raise InputError(
            f"{data_dir}: no '*.jsonl.gz' task files found; expected one gzipped JSON-lines file "
            "per assay with fields 'SMILES' and 'Property'"
        )
    return files


def slice_task_files(files: Sequence[Path], fraction: float, seed: int) -> list[Path]:
    """A seeded random ``fraction`` of ``files`` (at least one), in sorted order.

    The same (files, fraction, seed) always gives the same slice; the draw is a permutation of
    the sorted file list, so a smaller fraction with the same seed is a subset of a larger one.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"slice fraction must be in (0, 1], got {fraction}")
    ordered = sorted(Path(f) for f in files)
    n = max(1, round(fraction * len(ordered)))
    pick = np.random.default_rng(seed).permutation(len(ordered))[:n]
    return sorted(ordered[i] for i in pick)


def load_fsmol_dir(
    data_dir: Path,
    workers: int = 1,
    min_size: int = 1,
    cache_dir: Path | None = None,
    files: Sequence[Path] | None = None,
) -> TaskSet:
    """Load every task file in ``data_dir`` into a ``TaskSet`` over unique canonical SMILES.

    ``files`` restricts the load to those task files (e.g. a ``slice_task_files`` slice).
    Empty task files (no valid rows), and files under ``min_size`` valid rows, are skipped (one
    warning per load, ``log_skipped``) and recorded in ``TaskSet.skipped``. Invalid SMILES are
    excluded and counted in ``TaskSet.n_invalid``. With ``cache_dir`` the parsed result is cached
    under the sha256 of the files' contents.
    """
    files = list(files) if files is not None else find_task_files(data_dir)
    if cache_dir is not None:
        return _cached_load(files, Path(data_dir), workers, min_size, Path(cache_dir))
    if workers > 1 and len(files) > 8:
        with fork_pool(workers) as pool:
            parsed = pool.map(_read_fsmol_file_safe, files, chunksize=16)
    else:
        parsed = [_read_fsmol_file_safe(f) for f in files]
    for p in parsed:
        if isinstance(p, InputError):
            raise p
    return _build_taskset([p for p in parsed if isinstance(p, ParsedFile)], str(data_dir), min_size)


def log_skipped(skipped: dict[str, str], source: str, show: int = 5) -> None:
    """One warning for the task files a load skipped (every file with its reason at DEBUG).

    A simulation on the train folder with a minimum pool size skips hundreds of small tasks; one
    line per file drowned the log. The full list stays in ``TaskSet.skipped`` (and in
    ``prepare molecules --json``).
    """
    if not skipped:
        return
    for path, reason in skipped.items():
        logger.debug("skipping %s: %s", path, reason)
    counts: dict[str, int] = {}
    for reason in skipped.values():
        kind = reason.split(" (")[0] if reason.startswith("no valid rows") else reason
        kind = "fewer valid rows than the minimum" if kind.startswith("only ") else kind
        counts[kind] = counts.get(kind, 0) + 1
    names = [f"{Path(p).name} ({r})" for p, r in list(skipped.items())[:show]]
    more = f" and {len(skipped) - show} more (listed at DEBUG, -vv)" if len(skipped) > show else ""
    logger.warning(
        "%s: skipped %d task files (%s): %s%s",
        source,
        len(skipped),
        ", ".join(f"{n} {k}" for k, n in counts.items()),
        ", ".join(names),
        more,
    )


def _build_taskset(parsed: list[ParsedFile], source: str, min_size: int) -> TaskSet:
    vocab: dict[str, int] = {}
    tasks: list[Task] = []
    skipped: dict[str, str] = {}
    n_invalid = 0
    for p in parsed:
        n_invalid += len(p.invalid)
        if p.invalid:
            logger.debug("%s: excluded %d rows with invalid SMILES", p.path, len(p.invalid))
        if len(p.smiles) < min_size:
            if p.invalid and not p.smiles:
                reason = f"no valid rows (all {len(p.invalid)} SMILES invalid)"
            else:
                reason = "empty task file" if not p.smiles else f"only {len(p.smiles)} valid rows"
            skipped[p.path] = reason
            continue
        idx = np.fromiter((vocab.setdefault(s, len(vocab)) for s in p.smiles), np.int64)
        tasks.append(Task(p.task_id, idx, np.asarray(p.labels, np.float32)))
    tasks.sort(key=lambda t: t.task_id)
    log_skipped(skipped, source)
    if n_invalid:
        logger.warning("%s: excluded %d rows with invalid SMILES", source, n_invalid)
    return TaskSet(
        tasks=tasks, items=list(vocab), source=source, n_invalid=n_invalid, skipped=skipped
    )


# -- tables ---------------------------------------------------------------------------------------
def read_table(path: Path, smiles_column: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet/SDF/.smi file into a DataFrame with a ``SMILES`` column.

    ``smiles_column`` names the SMILES column when it is not ``SMILES``/``smiles``; SDF records
    get their SMILES from the molecule block (unparsable records keep an empty SMILES, so they are
    reported rather than lost) plus every SD property as a column.
    """
    path = Path(path)
    suffix = checked_suffix(path, TABLE_SUFFIXES)
    try:
        if suffix in FRAME_SUFFIXES:
            df = read_frame(path)
        elif suffix == ".sdf":
            df = _read_sdf(path)
        else:
            df = _read_smi(path)
    except InputError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read as {suffix} ({err})") from err
    return _normalise_smiles_column(df, path, smiles_column)


def _normalise_smiles_column(
    df: pd.DataFrame, path: Path, smiles_column: str | None
) -> pd.DataFrame:
    if smiles_column is not None:
        if smiles_column not in df.columns:
            raise SchemaError(
                f"{path}: column {smiles_column!r} not found; columns are {list(df.columns)}"
            )
        col = smiles_column
    else:
        matches = [c for c in df.columns if str(c).lower() == "smiles"]
        if not matches:
            raise SchemaError(
                f"{path}: no SMILES column; columns are {list(df.columns)} "
                "(name it 'SMILES' or pass the column name)"
            )
        col = matches[0]
    if col != "SMILES":
        df = df.rename(columns={col: "SMILES"})
    df["SMILES"] = df["SMILES"].astype(str).where(df["SMILES"].notna(), "")
    return df.reset_index(drop=True)


def _sdf_records(path: Path) -> Iterator[str]:
    """The text of each ``$$$$``-terminated record (a trailing unterminated one included)."""
    block: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.rstrip("\r\n") == "$$$$":
                yield "".join(block)
                block = []
            else:
                block.append(line)
    if any(line.strip() for line in block):
        yield "".join(block)


def _read_sdf(path: Path) -> pd.DataFrame:
    """One row per SD record: SMILES from the molecule block plus every SD property.

    Records are split on ``$$$$`` here and parsed one by one, so a damaged block costs exactly
    its own row (an empty SMILES, quarantined downstream) and never swallows its neighbours.
    """
    from rdkit import Chem  # (featurize has silenced RDKit's log: failures become rows)

    rows = []
    for text in _sdf_records(path):
        supplier = Chem.SDMolSupplier()
        supplier.SetData(text + "$$$$\n", sanitize=True)
        mol = supplier[0] if len(supplier) else None
        if mol is None:
            rows.append({"SMILES": ""})
            continue
        rec = {k: mol.GetProp(k) for k in mol.GetPropNames()}
        rec["SMILES"] = Chem.MolToSmiles(mol)
        rows.append(rec)
    return pd.DataFrame(rows)


def _read_smi(path: Path) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.strip().split(maxsplit=1)
            if not parts or parts[0].startswith("#"):  # blank lines and comments are not rows
                continue
            rows.append({"SMILES": parts[0], "name": parts[1] if len(parts) > 1 else ""})
    return pd.DataFrame(rows, columns=["SMILES", "name"])


def labels_from_table(
    df: pd.DataFrame,
    path: Path,
    label_column: str | None = "label",
    value_column: str | None = None,
    threshold: float | None = None,
    active_above: bool = True,
) -> np.ndarray:
    """Binary labels from ``label_column``, or from ``value_column`` compared with ``threshold``."""
    if value_column is not None:
        if threshold is None:
            raise SchemaError(f"{path}: --value-column {value_column!r} needs a --threshold")
        if value_column not in df.columns:
            raise SchemaError(
                f"{path}: column {value_column!r} not found; columns are {list(df.columns)}"
            )
        vals = pd.to_numeric(df[value_column], errors="coerce")
        bad = np.flatnonzero(vals.isna().to_numpy())
        if bad.size:
            r = int(bad[0])
            raise SchemaError(
                f"{path} row {r + 1} field {value_column!r}: {df[value_column].iloc[r]!r} is not a number"
            )
        v = vals.to_numpy(np.float64)
        return ((v >= threshold) if active_above else (v <= threshold)).astype(np.float32)
    col = _find_column(df, path, label_column, ("label", "Label", "Property", "active", "y"))
    return np.asarray(
        [
            parse_label(v, f"{path} row {i + 1} field {col!r}")
            for i, v in enumerate(df[col].tolist())
        ],
        np.float32,
    )


def _find_column(
    df: pd.DataFrame, path: Path, wanted: str | None, fallbacks: tuple[str, ...]
) -> str:
    if wanted is not None and wanted in df.columns:
        return wanted
    for c in fallbacks:
        if c in df.columns:
            return c
    raise SchemaError(
        f"{path}: no label column (looked for {wanted!r} and {list(fallbacks)}); columns are "
        f"{list(df.columns)}"
    )


def load_table_tasks(
    path: Path,
    smiles_column: str | None = None,
    assay_column: str | None = None,
    label_column: str | None = "label",
    value_column: str | None = None,
    threshold: float | None = None,
) -> TaskSet:
    """Tasks from a table: one task per ``assay_column`` value (or one task named after the file)."""
    path = Path(path)
    df = read_table(path, smiles_column)
    labels = labels_from_table(df, path, label_column, value_column, threshold)
    if assay_column is not None and assay_column not in df.columns:
        raise SchemaError(
            f"{path}: assay column {assay_column!r} not found; columns are {list(df.columns)}"
        )
    assays = df[assay_column].astype(str).tolist() if assay_column else [path.stem] * len(df)
    by_task: dict[str, ParsedFile] = {}
    for row, (smi, lab, assay) in enumerate(
        zip(df["SMILES"].tolist(), labels.tolist(), assays, strict=True)
    ):
        p = by_task.setdefault(assay, ParsedFile(path=f"{path}[{assay}]", task_id=assay))
        canon = canonicalize(smi)
        if canon is None:
            p.invalid.append((row, smi, invalid_reason(smi)))
            continue
        p.smiles.append(canon)
        p.labels.append(float(lab))
    return _build_taskset(list(by_task.values()), str(path), min_size=1)


def iter_table_chunks(
    path: Path, chunk_size: int, smiles_column: str | None = None
) -> Iterator[pd.DataFrame]:
    """Stream a library in chunks with a global ``row`` column (0-based input row).

    CSV/TSV/.smi are read incrementally; Parquet by row group batches; SDF record by record.

    Raises:
        InputError: the file is missing, of another type, or unreadable at some point (naming
            the file and the row reached), also when the failure shows only part-way through.
    """
    path = Path(path)
    suffix = checked_suffix(path, TABLE_SUFFIXES)
    if chunk_size < 1:
        raise InputError(f"chunk size must be at least 1, got {chunk_size}")
    rows = [0]
    try:
        yield from _iter_table_chunks(path, suffix, chunk_size, smiles_column, rows)
    except InputError:
        raise
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        OSError,
        EOFError,
        ValueError,  # pyarrow's ArrowInvalid and UnicodeDecodeError are ValueErrors
    ) as err:
        raise InputError(f"{path}: cannot read as {suffix} after row {rows[0]} ({err})") from err


def _iter_table_chunks(
    path: Path, suffix: str, chunk_size: int, smiles_column: str | None, rows: list[int]
) -> Iterator[pd.DataFrame]:
    start = 0
    if suffix in (".csv", ".tsv"):
        try:
            reader = pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                chunksize=chunk_size,
            )
            for df in reader:
                df = _normalise_smiles_column(df, path, smiles_column)
                df.insert(0, "row", np.arange(start, start + len(df)))
                start += len(df)
                rows[0] = start
                yield df
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: cannot read as {suffix} near row {start} ({err})") from err
        return
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=chunk_size):
            df = _normalise_smiles_column(batch.to_pandas(), path, smiles_column)
            df.insert(0, "row", np.arange(start, start + len(df)))
            start += len(df)
            rows[0] = start
            yield df
        if start == 0:  # a schema with no rows still names its columns
            df = _normalise_smiles_column(
                pf.schema_arrow.empty_table().to_pandas(), path, smiles_column
            )
            df.insert(0, "row", np.arange(0))
            yield df
        return
    df = read_table(path, smiles_column)  # .sdf / .smi: parsed whole, then chunked
    df.insert(0, "row", np.arange(len(df)))
    for i in range(0, len(df), chunk_size):
        yield df.iloc[i : i + chunk_size].reset_index(drop=True)
