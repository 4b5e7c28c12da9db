"""Read an activity table (CSV/TSV/Parquet/Excel, delimiter sniffed), find its columns, and
write ``prepare_tasks``' result as an FS-Mol-format folder with its quarantine and summary.

The folder is built beside ``--out`` under a temporary name and renamed into place, so a failed
run leaves nothing that looks complete.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from metascreen.domains.errors import ConfigError, InputError, SchemaError
from metascreen.domains.io import checked_suffix
from metascreen.domains.molecules.prepare import (
    CHEMBL_COLUMNS,
    SPLITS,
    Columns,
    PrepareConfig,
    PrepareResult,
    prepare_tasks,
    reason_kind,
)

logger = logging.getLogger(__name__)

ACTIVITY_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".xlsx", ".xls")
DELIMITERS = ",;\t|"
FSMOL_FIELDS = (
    "SMILES",
    "Property",
    "Assay_ID",
    "RegressionProperty",
    "LogRegressionProperty",
    "Relation",
    "AssayType",
)
# Alternative names of a ChEMBL export's columns (FS-Mol's own raw query names them so).
CHEMBL_ALIASES = {"target_class": ("Target Class", "protein_class_desc")}


def sniff_delimiter(path: Path, sample_bytes: int = 65536) -> str:
    """The delimiter of a text table: csv.Sniffer on its start, among ``,;<tab>|``."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        sample = fh.read(sample_bytes)
    if not sample.strip():
        raise InputError(f"{path}: empty file")
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = sample.splitlines()[0]
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def read_activity_table(path: Path) -> pd.DataFrame:
    """Every column as text (nothing read as NA), from CSV/TSV/.txt, Parquet or Excel.

    Raises:
        InputError: the file is missing, of another type, empty or unreadable (naming it).
    """
    path = Path(path)
    suffix = checked_suffix(path, ACTIVITY_SUFFIXES)
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".xlsx", ".xls"):
            df = pd.read_excel(path, dtype=str, keep_default_na=False)
        else:
            sep = sniff_delimiter(path)
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except InputError:
        raise
    except ImportError as err:
        raise InputError(f"{path}: cannot read {suffix} files here ({err})") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read as {suffix} ({err})") from err
    df.columns = [str(c).strip() for c in df.columns]
    return df


def resolve_columns(df: pd.DataFrame, path: Path | str, **given: str | None) -> Columns:
    """The table's columns by role (``assay``, ``smiles``, ``value``, ``relation``, ``units``,
    ``label``, ``target``, ``target_class``, ``assay_type``): ``given`` names first, else a
    ChEMBL web export's name when the table has that column.

    Raises:
        SchemaError: a needed column is missing, naming the file and the column.
    """
    names: dict[str, str | None] = {}
    for role in Columns.__dataclass_fields__:
        options = CHEMBL_ALIASES.get(role, (getattr(CHEMBL_COLUMNS, role),))
        names[role] = next((c for c in options if c and c in df.columns), None)
    names.update({k: v for k, v in given.items() if v is not None})
    if given.get("label"):
        names["value"] = names["units"] = names["relation"] = None
    required = ["assay", "smiles"] + (["label"] if names.get("label") else ["value", "units"])
    for role in required:
        if not names.get(role):
            wanted = getattr(CHEMBL_COLUMNS, role) or role
            raise SchemaError(
                f"{path}: no {role} column ({wanted!r} in a ChEMBL export; columns are "
                f"{list(df.columns)}); name it with --{role.replace('_', '-')}-column"
            )
    for role, col in names.items():
        if col and col not in df.columns:
            raise SchemaError(
                f"{path}: column {col!r} ({role}) not found; columns are {list(df.columns)}"
            )
    return Columns(**names)


def task_file_names(assays: list[str]) -> dict[str, str]:
    """Assay → file name ``<assay>.jsonl.gz``; characters other than letters, digits, ``._-``
    become ``_`` (a clash gets ``-2``, ``-3`` …); the ``Assay_ID`` field keeps the assay as is."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for assay in assays:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", assay).lstrip(".") or "assay"
        name, k = stem, 1
        while name.lower() in used:
            k += 1
            name = f"{stem}-{k}"
        used.add(name.lower())
        names[assay] = f"{name}.jsonl.gz"
    return names


def _task_bytes(rows: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for rec in rows[list(FSMOL_FIELDS)].to_dict("records"):
            gz.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
    return buf.getvalue()


def summary_markdown(summary: dict[str, Any], source: str) -> str:
    """The Markdown summary written beside ``prepare.json`` (and published by the flow)."""
    lines = [
        f"# prepare molecules: {source}",
        "",
        "| rows in | kept | quarantined | assays kept | assays dropped | actives |",
        "|---|---|---|---|---|---|",
        f"| {summary['rows_in']} | {summary['rows_kept']} | {summary['rows_quarantined']} "
        f"| {summary['assays_kept']} | {len(summary['assays_dropped'])} | {summary['actives']} |",
    ]
    if summary["splits"]:
        lines += ["", "| split | assays | targets | rows |", "|---|---|---|---|"]
        lines += [
            f"| {s} | {v['assays']} | {v['targets']} | {v['rows']} |"
            for s, v in summary["splits"].items()
        ]
    if summary["quarantine_reasons"]:
        lines += ["", "| quarantine reason | rows |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in summary["quarantine_reasons"].items()]
    rules: dict[str, int] = {}
    kept = (a for a in summary["thresholds"] if a not in summary["assays_dropped"])
    for t in (summary["thresholds"][a] for a in kept):
        kind = reason_kind(t["rule"])
        rules[kind] = rules.get(kind, 0) + 1
    if rules:
        lines += ["", "| threshold rule (kept assays) | assays |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in sorted(rules.items())]
    lines += [
        "",
        "Every row's reason is in `quarantine.csv`; each assay's threshold and rule, and "
        "each dropped assay's reason, in `prepare.json`.",
    ]
    return "\n".join(lines) + "\n"


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that exists and is not empty (nothing is overwritten)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: already exists and is not empty; choose a new --out folder")


def write_prepared(result: PrepareResult, out: Path, source: str) -> Path:
    """Write the task files (``train/valid/test`` or flat), ``quarantine.csv``, ``prepare.json``
    and ``prepare.md`` into ``out`` (built under a temporary name, then renamed into place)."""
    out = Path(out)
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        for s in SPLITS if result.summary["splits"] else ():
            (tmp / s).mkdir()
        names = task_file_names(list(result.tasks))
        for assay, rows in result.tasks.items():
            folder = tmp / result.splits[assay] if result.splits.get(assay) else tmp
            (folder / names[assay]).write_bytes(_task_bytes(rows))
        result.quarantine.to_csv(tmp / "quarantine.csv", index=False)
        summary = {"source": source, **result.summary}
        (tmp / "prepare.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (tmp / "prepare.md").write_text(summary_markdown(result.summary, source))
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()  # empty (check_out_dir)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def prepare_table(
    table: Path,
    out: Path,
    config: PrepareConfig | None = None,
    **column_names: str | None,
) -> dict[str, Any]:
    """Read ``table``, prepare its tasks and write them under ``out``; return the summary.

    ``column_names`` name the table's columns by role (``assay``, ``smiles``, ``value``,
    ``relation``, ``units``, ``label``, ``target``, ``target_class``, ``assay_type``); without
    them a ChEMBL web export's names are used.

    Raises:
        InputError: the table cannot be read or lacks a needed column (naming file and column).
        ConfigError: ``out`` exists and is not empty.
    """
    table, out = Path(table), Path(out)
    check_out_dir(out)
    df = read_activity_table(table)
    cols = resolve_columns(df, table, **column_names)
    result = prepare_tasks(df, cols, config)
    write_prepared(result, out, str(table))
    logger.info("wrote %d task files to %s", len(result.tasks), out)
    return {"source": str(table), "out": str(out), **result.summary}
