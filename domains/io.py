"""Atomic file writes, content hashes and the one reader of plain tables (CSV/TSV/Parquet)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metascreen.domains.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; written files are ordinary outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[Path]) -> str:
    """Hex sha256 over (name, content hash) of files, in sorted name order."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def canonical_json_hash(obj: Any) -> str:
    """Hex sha256 of the canonical (sorted-key, compact) JSON of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def temp_path(path: Path, suffix: str = ".partial") -> Path:
    """A fresh hidden name beside ``path`` for writing it (unique per process and call).

    Two runs writing the same output never share a temporary file, so neither can tear the
    other's; each renames its own complete file into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the renamed file is an ordinary output
    return Path(tmp)


class OutputBusyError(ConfigError):
    """Another process holds the lock of an output (or registry) file."""


@contextlib.contextmanager
def exclusive_lock(path: Path, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.<name>.lock`` beside ``path`` for the block.

    With ``wait=False`` a second holder is refused at once (``OutputBusyError`` naming the file);
    with ``wait=True`` it queues. The kernel drops the lock with the process, so a killed run
    never leaves a stale lock. The holder deletes the lock file before releasing it; a waiter
    that then finds it locked a deleted file simply tries again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"{path}: another metascreen run is writing it now (lock {lock.name}); "
                "wait for it to finish or choose another output"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder deleted it meanwhile: lock the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # still held: nobody else can be holding this file
        os.close(fd)  # closing the descriptor releases the lock


FRAME_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def checked_suffix(path: Path, allowed: tuple[str, ...]) -> str:
    """``path``'s lower-case suffix, once the file exists and the suffix is one of ``allowed``.

    Raises:
        InputError: the file is missing, not a file, or of another type (naming the file).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise InputError(f"{path}: unsupported file type {suffix!r}; use one of {allowed}")
    return suffix


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV/TSV (every column as text, nothing read as NA) or Parquet file as a DataFrame.

    Both domains read their tables here, so both treat ``NA``/empty cells alike: as the text
    they are, left to each domain's validation to quarantine or reject with a reason.

    Raises:
        InputError: the file is missing, of another type, or unreadable (naming the file).
    """
    path = Path(path)
    suffix = checked_suffix(path, FRAME_SUFFIXES)
    import pandas as pd  # lazily: this module is on the CLI's start-up path

    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(
            path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read as {suffix} ({err})") from err
