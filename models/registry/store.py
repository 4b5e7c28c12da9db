"""A file-system model registry with an atomically switched ``current`` pointer (no torch).

Layout of a registry folder::

    <root>/<name>/v0001/            a registered artifact (model.onnx, weights.pt.gz, config.json,
                                    metadata.json) plus registry.json: the sha256 of every file
    <root>/<name>/v0002/ ...
    <root>/<name>/current           symlink to the version that scoring uses (replaced atomically)
    <root>/<name>/decisions.jsonl   one JSON line per gate decision, promotion and rollback

Versions are immutable: a version folder is copied into a temporary folder and renamed into place,
never overwritten. Every change (register, promote, rollback, gate decision) holds an exclusive
``flock`` on ``<root>/<name>/.registry.lock`` (there while held), so concurrent commands queue: ``current`` always
names a valid version and ``decisions.jsonl`` records every switch in the order it happened. ``current`` is switched with ``os.replace`` of a fresh symlink, so a reader sees
either the old or the new version, never a half-written pointer. Every resolve re-hashes the files
recorded in ``registry.json`` (and ``read_artifact`` re-checks the ONNX sha256 in the metadata),
so a modified artifact is refused before use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metascreen.domains.errors import ArtifactMismatchError, ConfigError, InputError
from metascreen.domains.io import atomic_write_json, exclusive_lock, sha256_file
from metascreen.models.serving.artifact import (
    DEFAULT_MODEL_DIR,
    ArtifactInfo,
    read_artifact,
    utc_now,
    verify_sha256,
)

logger = logging.getLogger(__name__)

REGISTRY_ENV = "METASCREEN_REGISTRY"
DEFAULT_NAME = "molecules"
ENTRY_FILE = "registry.json"
POINTER = "current"
DECISIONS = "decisions.jsonl"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered version and what the registry knows about it."""

    name: str
    version: str
    path: Path
    entry: dict[str, Any]
    is_current: bool

    @property
    def metric(self) -> float | None:
        """Validation ΔAUPRC at the smallest recorded support size, if the metadata has one."""
        valid = self.entry.get("valid_delta_auprc") or {}
        return float(next(iter(valid.values()))) if valid else None


class ModelRegistry:
    """Registered model artifacts under ``root``; see the module docstring for the layout."""

    def __init__(self, root: Path | str) -> None:
        """Open (not create) a registry folder."""
        self.root = Path(root)

    @classmethod
    def from_env(cls, root: Path | str | None = None) -> ModelRegistry | None:
        """The registry given, else ``$METASCREEN_REGISTRY``, else None (no registry configured)."""
        root = root or os.environ.get(REGISTRY_ENV) or None
        return cls(root) if root else None

    # -- paths ---------------------------------------------------------------------------------
    def model_dir(self, name: str) -> Path:
        """The folder of one model name."""
        if not _NAME_RE.match(name):
            raise ConfigError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        return self.root / name

    @contextlib.contextmanager
    def locked(self, name: str = DEFAULT_NAME) -> Iterator[None]:
        """Hold the registry lock of ``name`` (waits for other processes; not re-entrant)."""
        if not self.model_dir(name).is_dir():
            raise InputError(
                f"{self.model_dir(name)}: no model {name!r} is registered in {self.root}"
            )
        with exclusive_lock(self.model_dir(name) / "registry", wait=True):
            yield

    def versions(self, name: str = DEFAULT_NAME) -> list[str]:
        """Registered versions of ``name``, oldest first."""
        d = self.model_dir(name)
        if not d.is_dir():
            return []
        return sorted(
            (p.name for p in d.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)),
            key=lambda v: int(v[1:]),
        )

    def current_version(self, name: str = DEFAULT_NAME) -> str | None:
        """The version ``current`` points to, or None before the first promotion."""
        link = self.model_dir(name) / POINTER
        if not link.is_symlink():
            return None
        target = os.readlink(link)
        if not _VERSION_RE.match(target) or not (link.parent / target).is_dir():
            raise ArtifactMismatchError(
                f"{link}: points to {target!r}, which is not a version of {name}; run "
                f"'metascreen models promote {name} VERSION' to repair it"
            )
        return target

    # -- registration --------------------------------------------------------------------------
    def register(
        self, artifact_dir: Path, name: str = DEFAULT_NAME, note: str | None = None
    ) -> ModelVersion:
        """Copy a verified artifact into the next version folder (atomically); does not promote."""
        info = read_artifact(Path(artifact_dir))  # refuses a tampered ONNX file
        base = self.model_dir(name)
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=".incoming."))
        try:
            for p in sorted(Path(artifact_dir).iterdir()):
                if p.is_file() and p.name != ENTRY_FILE:
                    shutil.copy2(p, tmp / p.name)
            meta = info.metadata
            weights = meta.get("weights") or {}
            if weights:
                verify_sha256(Path(artifact_dir) / weights["file"], weights["sha256"])
            valid = (meta.get("metrics") or {}).get("valid") or {}
            entry = {
                "name": name,
                "registered_at": utc_now(),
                "source": str(Path(artifact_dir).resolve()),
                "learner": meta.get("learner"),
                "note": note,
                "onnx_sha256": meta["onnx"]["sha256"],
                "valid_delta_auprc": {k: v["mean"] for k, v in valid.items()},
                "files": {
                    p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name != ENTRY_FILE
                },
            }
            tmp.chmod(0o755)
            with self.locked(name):  # the copy above runs unlocked; numbering is serialized
                versions = self.versions(name)
                version = f"v{(int(versions[-1][1:]) + 1) if versions else 1:04d}"
                entry["version"] = version
                atomic_write_json(tmp / ENTRY_FILE, entry)
                os.rename(tmp, base / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("registered %s as %s/%s", artifact_dir, name, version)
        return self.get(name, version)

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str = DEFAULT_NAME, version: str | None = None) -> ModelVersion:
        """A registered version (default: current), without re-hashing its files."""
        current = self.current_version(name)
        version = version or current
        if version is None:
            raise InputError(
                f"{self.model_dir(name)}: no current version of {name!r}; register and promote one "
                "('metascreen models promote') or pass --model"
            )
        path = self.model_dir(name) / version
        if not (path / ENTRY_FILE).exists():
            raise InputError(
                f"{path}: version {version!r} of {name!r} is not registered (have: "
                f"{', '.join(self.versions(name)) or 'none'})"
            )
        entry = json.loads((path / ENTRY_FILE).read_text())
        return ModelVersion(name, version, path, entry, version == current)

    def list_versions(self, name: str = DEFAULT_NAME) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        return [self.get(name, v) for v in self.versions(name)]

    def names(self) -> list[str]:
        """Model names in the registry."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def verify(self, mv: ModelVersion) -> ArtifactInfo:
        """Re-hash every recorded file and the metadata's ONNX hash; raise on any difference."""
        for fname, digest in mv.entry["files"].items():
            p = mv.path / fname
            if not p.exists():
                raise ArtifactMismatchError(f"{p}: missing from registered version {mv.version}")
            verify_sha256(p, digest, record=f"the registry record of {mv.name}/{mv.version}")
        return read_artifact(mv.path)

    def resolve(self, name: str = DEFAULT_NAME, version: str | None = None) -> Path:
        """Verified folder of ``name`` at ``version`` (default: current), for scoring."""
        mv = self.get(name, version)
        self.verify(mv)
        return mv.path

    # -- pointer and decisions -----------------------------------------------------------------
    def set_current(self, name: str, version: str, event: dict[str, Any]) -> None:
        """Point ``current`` at ``version`` (atomic symlink swap) and log ``event``, locked."""
        with self.locked(name):
            self.set_current_unlocked(name, version, event)

    def set_current_unlocked(self, name: str, version: str, event: dict[str, Any]) -> None:
        """``set_current`` for a caller that already holds ``locked(name)``."""
        mv = self.get(name, version)
        self.verify(mv)
        base = self.model_dir(name)
        previous = self.current_version(name)
        tmp_link = base / f".{POINTER}.{os.getpid()}.tmp"
        tmp_link.unlink(missing_ok=True)
        os.symlink(version, tmp_link)  # relative target: the registry folder can be moved
        os.replace(tmp_link, base / POINTER)
        self.log_decision(name, {**event, "from": previous, "to": version})
        logger.info("%s: current %s -> %s (%s)", name, previous, version, event.get("action"))

    def promote(self, name: str, version: str, reason: str = "manual") -> None:
        """Make ``version`` current (manual promotion, logged)."""
        self.set_current(name, version, {"action": "promote", "reason": reason})

    def rollback(self, name: str = DEFAULT_NAME, to: str | None = None) -> str:
        """Point ``current`` back to the version it had before the last switch (or to ``to``)."""
        with self.locked(name):
            return self._rollback(name, to)

    def _rollback(self, name: str, to: str | None) -> str:
        current = self.current_version(name)
        if to is None:
            history = [  # switches that made ``current`` current (not decisions that kept it)
                d
                for d in self.decisions(name)
                if d.get("to") == current and d.get("from") and d.get("from") != current
            ]
            if not history:
                raise InputError(
                    f"{name}: no earlier current version to roll back to (current: {current})"
                )
            to = str(history[-1]["from"])
        self.set_current_unlocked(
            name, to, {"action": "rollback", "reason": f"rollback from {current}"}
        )
        return to

    def log_decision(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line to ``decisions.jsonl`` (single ``write`` on an O_APPEND file)."""
        path = self.model_dir(name) / DECISIONS
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"at": utc_now(), **record}, sort_keys=True, default=str) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def decisions(self, name: str = DEFAULT_NAME) -> list[dict[str, Any]]:
        """Every logged decision, oldest first."""
        path = self.model_dir(name) / DECISIONS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resolve_model_dir(
    model: Path | str | None, registry: Path | str | None = None, name: str = DEFAULT_NAME
) -> Path:
    """The artifact scoring should use.

    An explicit ``model`` folder wins; otherwise the registry's verified ``current`` version of
    ``name`` when a registry is configured (``registry`` or ``$METASCREEN_REGISTRY``); otherwise
    the shipped default model.
    """
    if model is not None:
        return Path(model)
    reg = ModelRegistry.from_env(registry)
    if reg is None:
        return DEFAULT_MODEL_DIR
    return reg.resolve(name)
