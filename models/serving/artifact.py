"""Model artifact directories: metadata, hashes and verification (numpy/json only, no torch).

Layout of an artifact directory::

    model.onnx       the adapted-inference graph (support_x, support_y, query_x) -> logit
    weights.pt.gz    gzip'd torch state dict (for re-exporting or fine-tuning; never used for scoring)
    metadata.json    schema, learner, featurizer spec + hash, versions, data hash, metrics, sha256s
    config.json      the resolved learner and training configuration
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from metascreen.domains.errors import ArtifactMismatchError, ConfigError, InputError
from metascreen.domains.io import sha256_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# artifact kinds (metadata.json "kind"); scoring refuses an artifact of another kind
MOLECULES_PREDICTOR = "molecules-predictor"
MOLECULES_POLICY = "molecules-policy"
MOVIELENS_PREDICTOR = "movielens-predictor"
# the screening policy's ONNX inputs, in order, with their axes (D = the embedding width)
POLICY_INPUTS = (
    "candidates",
    "candidate_mask",
    "history",
    "history_labels",
    "history_mask",
    "t_frac",
)
POLICY_OUTPUTS = ("logits", "value")


def policy_input_axes(dim: int) -> dict[str, list[str | int]]:
    """Each policy input's axes as recorded in an artifact's metadata."""
    return {
        "candidates": ["batch", "n_candidates", dim],
        "candidate_mask": ["batch", "n_candidates"],
        "history": ["batch", "n_history", dim],
        "history_labels": ["batch", "n_history"],
        "history_mask": ["batch", "n_history"],
        "t_frac": ["batch"],
    }


DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "data" / "artifacts" / "molecules-default"


def package_versions() -> dict[str, str]:
    """Versions of the libraries that determine an artifact's behaviour."""
    out = {"python": platform.python_version()}
    for dist in (
        "metascreen",
        "torch",
        "torch-geometric",
        "rdkit",
        "onnx",
        "onnxruntime-gpu",
        "onnxruntime",
        "scikit-learn",
        "numpy",
    ):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def git_sha(cwd: Path | None = None) -> str | None:
    """Current commit of the source checkout, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def utc_now() -> str:
    """ISO-8601 UTC timestamp."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance(kind: str) -> dict[str, Any]:
    """The metadata every artifact opens with: schema, kind, time, commit and library versions."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created_at": utc_now(),
        "git_sha": git_sha(),
        "versions": package_versions(),
    }


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """A verified artifact directory and its metadata."""

    path: Path
    metadata: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        """The ONNX graph."""
        return self.path / self.metadata["onnx"]["file"]


def read_artifact(path: Path, kind: str = MOLECULES_PREDICTOR, verify: bool = True) -> ArtifactInfo:
    """Read ``metadata.json`` and verify the ONNX file's sha256 against it.

    Raises:
        InputError: the directory or its metadata is missing.
        ArtifactMismatchError: wrong kind, schema, or a file whose hash differs from the metadata.
    """
    path = Path(path)
    meta_path = path / "metadata.json"
    if not path.is_dir():
        raise InputError(
            f"{path}: model directory not found (expected a folder with metadata.json and model.onnx)"
        )
    if not meta_path.exists():
        raise InputError(f"{path}: no metadata.json; not a metascreen model directory")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactMismatchError(f"{meta_path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ArtifactMismatchError(
            f"{meta_path}: a JSON {type(meta).__name__}, expected an object"
        )
    if meta.get("kind") != kind:
        raise ArtifactMismatchError(
            f"{path}: artifact kind {meta.get('kind')!r}, expected {kind!r}"
        )
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactMismatchError(
            f"{path}: schema_version {meta.get('schema_version')}, this code reads {SCHEMA_VERSION}"
        )
    onnx = meta.get("onnx")
    if not (isinstance(onnx, dict) and isinstance(onnx.get("file"), str) and "sha256" in onnx):
        raise ArtifactMismatchError(
            f"{meta_path}: field 'onnx' must hold 'file' and 'sha256'; the metadata is damaged"
        )
    info = ArtifactInfo(path=path, metadata=meta)
    if verify:
        onnx_path = info.onnx_path
        if not onnx_path.exists():
            raise InputError(f"{onnx_path}: ONNX file missing from the artifact")
        verify_sha256(onnx_path, meta["onnx"]["sha256"])
    return info


def verify_sha256(path: Path, expected: str, record: str = "metadata") -> None:
    """Refuse a file whose sha256 differs from the one ``record`` holds for it.

    Raises:
        ArtifactMismatchError: naming the file and both digests.
    """
    digest = sha256_file(path)
    if digest != expected:
        raise ArtifactMismatchError(
            f"{path}: sha256 differs from {record} ({digest[:12]} vs {expected[:12]}); "
            "the file was modified"
        )


def refuse_existing(out_dir: Path) -> Path:
    """``out_dir`` as a Path, or a ``ConfigError`` if it exists: artifacts are never overwritten."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"{out_dir} exists; artifacts are never overwritten, choose a new --out")
    return out_dir


@contextlib.contextmanager
def staged_dir(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """A temp folder beside ``out_dir``, renamed to it when the block succeeds (removed if not)."""
    out_dir = Path(out_dir)
    if not overwrite:
        refuse_existing(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tmp.chmod(0o755)  # mkdtemp makes it private; artifacts are meant to be shared
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
