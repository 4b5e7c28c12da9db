"""Chunk-wise, atomic writers for scored tables: Parquet, CSV or SDF, picked by the file suffix.

Every writer appends one chunk at a time to ``<output>.partial`` and renames it into place on
``commit``, so memory stays flat in the library size and readers never see a half-written file.
``abort`` removes the partial file. SDF records are the chunk's molecules (parsed from their
``SMILES``, with 2D coordinates) carrying every other column as an SD property, so ``score`` and
``logit`` — and the properties an SDF input brought in — are readable by any SDF tool.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from metascreen.domains.errors import InputError
from metascreen.domains.io import temp_path

OUTPUT_SUFFIXES = (".parquet", ".pq", ".csv", ".sdf")


class TableWriter(Protocol):
    """What the scorers need from a writer."""

    def write(self, df: pd.DataFrame) -> None:
        """Append one chunk."""

    def commit(self) -> None:
        """Close and rename the file into place."""

    def abort(self) -> None:
        """Close and delete the partial file."""


def check_output_suffix(output: Path) -> str:
    """The output's format (``parquet``, ``csv`` or ``sdf``) from its suffix.

    Raises:
        InputError: any other suffix (checked before any work is done).
    """
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(
            f"{output}: unsupported output type {suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}"
        )
    return {".pq": "parquet"}.get(suffix, suffix[1:])


def open_writer(output: Path) -> TableWriter:
    """A chunk writer for ``output`` in the format its suffix names."""
    fmt = check_output_suffix(output)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    writers: dict[str, type[_Partial]] = {
        "parquet": ParquetChunkWriter,
        "csv": CsvChunkWriter,
        "sdf": SdfChunkWriter,
    }
    return writers[fmt](output)


class _Partial:
    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.tmp = temp_path(self.output)  # unique: concurrent runs never share a temporary file
        self.n_chunks = 0

    def write(self, df: pd.DataFrame) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        self._close()
        if self.n_chunks == 0:
            self.tmp.unlink(missing_ok=True)
            raise InputError(f"{self.output}: nothing to write (the library has no rows)")
        self.tmp.replace(self.output)

    def abort(self) -> None:
        self._close()
        self.tmp.unlink(missing_ok=True)


class ParquetChunkWriter(_Partial):
    """Row groups appended to one Parquet file; later chunks are cast to the first's schema."""

    def __init__(self, output: Path) -> None:
        super().__init__(output)
        self._writer: Any = None

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))
        self.n_chunks += 1

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class CsvChunkWriter(_Partial):
    """One header, then each chunk's rows (columns in the first chunk's order)."""

    def __init__(self, output: Path) -> None:
        super().__init__(output)
        self._fh: Any = None
        self._columns: list[str] | None = None

    def write(self, df: pd.DataFrame) -> None:
        if self._fh is None:
            self._fh = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._columns = [str(c) for c in df.columns]
        df.reindex(columns=self._columns).to_csv(self._fh, header=self.n_chunks == 0, index=False)
        self.n_chunks += 1

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _prop_text(value: object) -> str | None:
    """An SD property value as text (None for a missing one, which is left out)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


class SdfChunkWriter(_Partial):
    """SD records: each row's molecule (from ``SMILES``) with the other columns as properties."""

    def __init__(self, output: Path) -> None:
        super().__init__(output)
        self._writer: Any = None
        self._fh: Any = None

    def write(self, df: pd.DataFrame) -> None:
        from rdkit import Chem
        from rdkit.Chem import rdDepictor

        if self._writer is None:
            self._fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115
            self._writer = Chem.SDWriter(self._fh)
        columns = [c for c in df.columns if c != "SMILES"]
        for rec in df.to_dict("records"):
            mol = Chem.MolFromSmiles(str(rec["SMILES"]))
            if mol is None:  # rows reach a writer only after parsing; keep them all the same
                raise InputError(f"{self.output}: row {rec.get('row')} has no valid SMILES")
            rdDepictor.Compute2DCoords(mol)
            name = rec.get("_Name") or rec.get("name") or rec.get("compound_id")
            if name is not None:
                mol.SetProp("_Name", str(name))
            mol.SetProp("SMILES", str(rec["SMILES"]))
            for c in columns:
                text = _prop_text(rec[c])
                if text is not None:
                    mol.SetProp(str(c), text)
            self._writer.write(mol)
        self.n_chunks += 1

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
