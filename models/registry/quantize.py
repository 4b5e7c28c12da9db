"""int8 dynamic quantization of an artifact's ONNX graph (onnxruntime.quantization), no torch.

``quantize_dynamic`` stores MatMul/Gemm weights as int8 and quantizes activations on the fly; the
graph's inputs and outputs are unchanged, so the quantized artifact scores and evaluates exactly
like the fp32 one. The result is a new artifact folder (artifacts are never overwritten) whose
metadata names its source and carries the new ONNX sha256; it has no torch weights of its own
(re-export from the source artifact).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from metascreen.domains.io import atomic_write_json, sha256_file
from metascreen.models.serving.artifact import package_versions, read_artifact, staged_dir, utc_now
from metascreen.models.serving.weight_storage import widen_initializers

logger = logging.getLogger(__name__)


def quantize_artifact(src_dir: Path, out_dir: Path) -> Path:
    """Write an int8 dynamically quantized copy of the artifact in ``src_dir`` to ``out_dir``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    info = read_artifact(Path(src_dir))
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        model = onnx.load(str(info.onnx_path))
        # The dynamo exporter's value_info carries shapes that onnx shape inference (run by the
        # quantizer) rejects as conflicting; they are optional, so drop them.
        del model.graph.value_info[:]
        # float16-stored weights go back to float32 initializers, which the quantizer reads
        widen_initializers(model)
        plain = tmp / "fp32.onnx"
        onnx.save(model, str(plain))
        # The quantizer logs a generic "consider pre-processing" warning on the root logger.
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(str(plain), str(tmp / "model.onnx"), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        plain.unlink()
        shutil.copy2(Path(src_dir) / "config.json", tmp / "config.json")
        meta: dict[str, Any] = {
            k: v for k, v in info.metadata.items() if k not in ("weights", "metrics")
        }
        meta["onnx"] = {
            **info.metadata["onnx"],
            "file": "model.onnx",
            "sha256": sha256_file(tmp / "model.onnx"),
            "quantization": "int8 dynamic (onnxruntime.quantization.quantize_dynamic, QInt8 weights)",
            "weights_dtype": "int8",
        }
        meta.pop("weights", None)
        meta["created_at"] = utc_now()
        meta["versions"] = package_versions()
        meta["quantized_from"] = {
            "path": str(src_dir),
            "onnx_sha256": info.metadata["onnx"]["sha256"],
            "weights_sha256": (info.metadata.get("weights") or {}).get("sha256"),
        }
        meta["metrics"] = {"source_valid": (info.metadata.get("metrics") or {}).get("valid")}
        atomic_write_json(tmp / "metadata.json", meta)
    logger.info(
        "quantized %s -> %s (%.1f MB -> %.1f MB)",
        info.onnx_path,
        out_dir / "model.onnx",
        info.onnx_path.stat().st_size / 1e6,
        (out_dir / "model.onnx").stat().st_size / 1e6,
    )
    return out_dir
