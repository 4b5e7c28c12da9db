"""Rejected rows go to a quarantine CSV with a reason, never silently dropped."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from types import TracebackType
from typing import Protocol

logger = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ("row", "input", "reason")


class QuarantineSink(Protocol):
    """Where rejected rows go: a CSV file (``QuarantineWriter``) or a list (``QuarantineRows``)."""

    count: int

    def add(self, row: int | str, value: str, reason: str) -> None:
        """Reject input ``row`` holding ``value`` because of ``reason``."""


class QuarantineRows:
    """Rejected rows kept in memory (the Python API returns them as a DataFrame)."""

    def __init__(self) -> None:
        """Start empty."""
        self.rows: list[tuple[int | str, str, str]] = []
        self.count = 0

    def add(self, row: int | str, value: str, reason: str) -> None:
        """Reject input ``row`` holding ``value`` because of ``reason``."""
        self.rows.append((row, value, reason))
        self.count += 1


class QuarantineWriter:
    """Append-only CSV of rejected rows: ``row`` (0-based input row), ``input``, ``reason``.

    The file is created on the first rejected row, so a clean run leaves none behind, and is
    written to a temporary file beside it and renamed into place on ``close`` (atomic for readers).
    A block that ends in an error discards it: a failed run leaves no quarantine that looks
    complete.
    """

    def __init__(self, path: Path) -> None:
        """Prepare a quarantine file at ``path``."""
        self.path = Path(path)
        self.count = 0
        self._tmp: Path | None = None
        self._fh: object | None = None
        self._writer: csv.writer | None = None  # type: ignore[valid-type]

    def add(self, row: int | str, value: str, reason: str) -> None:
        """Quarantine input ``row`` holding ``value`` because of ``reason``."""
        if self._writer is None:
            from metascreen.domains.io import temp_path

            self._tmp = temp_path(self.path)
            fh = open(self._tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._fh = fh
            self._writer = csv.writer(fh)
            self._writer.writerow(QUARANTINE_COLUMNS)
        self._writer.writerow((row, value, reason))
        self.count += 1

    def close(self) -> None:
        """Flush and move the file into place; logs a warning with the count."""
        if self._fh is not None and self._tmp is not None:
            self._fh.close()  # type: ignore[attr-defined]
            self._tmp.chmod(0o644)
            self._tmp.replace(self.path)
            self._fh = None
            logger.warning("quarantined %d rows to %s", self.count, self.path)

    def __enter__(self) -> QuarantineWriter:
        """Use as a context manager."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on exit; after an error, discard the rows seen so far (the run failed)."""
        if exc_type is None:
            self.close()
        elif self._fh is not None and self._tmp is not None:
            self._fh.close()  # type: ignore[attr-defined]
            self._fh = None
            self._tmp.unlink(missing_ok=True)
