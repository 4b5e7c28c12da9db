"""The one place that opens onnxruntime sessions (torch-free): providers, threads, hash check."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from metascreen.domains.errors import ArtifactMismatchError, InputError
from metascreen.models.serving.artifact import verify_sha256

logger = logging.getLogger(__name__)


def available_providers(device: str = "auto") -> list[str]:
    """onnxruntime providers to ask for: CUDA first when compiled in (it falls back to CPU)."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(
    path: Path,
    sha256: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    what: str = "ONNX graph",
) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``path``, refusing a file whose hash differs.

    Args:
        path: the ``.onnx`` file.
        sha256: the digest the artifact's metadata records; ``None`` when already verified.
        device: ``auto`` / ``cuda`` ask for the CUDA provider first (it falls back to CPU).
        threads: intra-op threads (``None``: onnxruntime's default).
        what: how the file is named in the error when it is missing.

    Raises:
        InputError: the file is missing.
        ArtifactMismatchError: its sha256 differs from ``sha256``.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # a CUDA-less machine logs errors before falling back
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} missing from the artifact")
    if sha256 is not None:
        verify_sha256(path, sha256)
    session = _session(str(path), path, device, threads)
    logger.info("%s: onnxruntime providers in use: %s", path.name, session.get_providers())
    return session


def session_from_model(
    model: bytes, name: str, device: str = "auto", threads: int | None = None
) -> Any:
    """A session on an in-memory graph (e.g. a sub-graph cut out of a verified artifact)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    session = _session(model, Path(name), device, threads)
    logger.info("%s: onnxruntime providers in use: %s", name, session.get_providers())
    return session


def _session(model: str | bytes, path: Path, device: str, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    # Fold the DequantizeLinear of int8-stored weights (``serving/weight_storage.py``) into
    # float32 constants when the session opens, as Cast is folded for float16 ones; by default
    # onnxruntime keeps it to fuse QDQ pairs, and would dequantize the weights on every call.
    # Graphs quantized by ``models quantize`` (dynamic, no QDQ pairs) are not affected.
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=available_providers(device))
    except Exception as err:  # onnxruntime raises its own (non-ValueError) types
        raise ArtifactMismatchError(f"{path}: onnxruntime cannot load it ({err})") from err
