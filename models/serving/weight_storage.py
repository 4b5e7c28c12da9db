"""Compact storage of an ONNX graph's large weights, computed in float32 (onnx only, no torch).

Two lossless encodings of a float32 initializer, chosen by its values:

* **int8 codes** — every row (or column) is exactly ``q · s`` with integer codes ``|q| ≤ 127`` and
  one scale ``s`` per row (``int8_codes``): stored as an int8 initializer plus a scale vector,
  widened by a ``DequantizeLinear`` node (per axis) in front of the graph. A quarter of the size.
* **float16** — every value is exactly a float16 value: stored as float16, widened by a ``Cast``.
  Half the size.

Either way the graph computes exactly what it computed before (onnxruntime folds the widening
nodes when the session opens). The export rounds the torch weights first (``round_to_int8`` or
``round_to_fp16`` in ``models/training/export.py``), which makes the large weights exactly
representable; a weight that is not is left in float32, never rounded here.
``widen_initializers`` undoes the storage (the int8 quantizer needs float32 initializers).

The int8 scale of a row is ``max|w| / 127`` rounded *up* to 17 significant bits, so that
``127 · s`` and every ``q · s`` are exact float32 values: the scale is recovered exactly from
the rounded weights themselves, and the codes by one division. That is what lets the ONNX side
find int8-exact weights by their values, whatever layout the exporter gave them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

FP16_SUFFIX = "__fp16"
INT8_SUFFIX = "__int8"
SCALE_SUFFIX = "__scale"
ZERO_SUFFIX = "__zero"
WeightsDtype = Literal["float32", "float16", "int8"]
MIN_ELEMENTS = 4096  # smaller weights stay float32: the saving is negligible
_LOW_BITS = 7  # float32 has 24 significant bits; scales keep 17 so that q·s (|q| ≤ 127) is exact


def int8_scale(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-slice scale along ``axis`` (one per index of that axis): ``max|w| / 127`` rounded up
    to 17 significant bits; 1 for an all-zero slice."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=other).astype(np.float32)
    s = (amax / np.float32(127.0)).astype(np.float32)
    s = np.where(amax > 0, s, np.float32(1.0)).astype(np.float32)
    bits = s.view(np.uint32)
    mask = np.uint32((1 << _LOW_BITS) - 1)
    return ((bits + mask) & ~mask).view(np.float32)


def _along(s: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Per-index values of ``axis`` shaped to broadcast against an ``ndim``-d array."""
    shape = [1] * ndim
    shape[axis] = -1
    return s.reshape(shape)


def int8_values(q: np.ndarray, s: np.ndarray, axis: int = 0) -> np.ndarray:
    """float32 ``q · s`` (codes times the scale of their index along ``axis``): what
    ``DequantizeLinear`` computes, exactly."""
    return (q.astype(np.float32) * _along(s, axis, q.ndim)).astype(np.float32)


def int8_round(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scale per index of ``axis``) nearest to float32 ``w``."""
    w = np.asarray(w, dtype=np.float32)
    s = int8_scale(w, axis)
    q = np.clip(np.rint(w / _along(s, axis, w.ndim)), -127, 127).astype(np.int8)
    return q, s


def int8_codes(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, scales) when float32 ``w`` is exactly ``codes · scale`` along ``axis``, else None."""
    w = np.asarray(w)
    if w.dtype != np.float32 or w.ndim < 1 or not np.isfinite(w).all():
        return None
    q, s = int8_round(w, axis)
    if not np.array_equal(int8_values(q, s, axis), w):
        return None
    return q, s


def narrow_initializers(model: Any, min_elements: int = MIN_ELEMENTS) -> dict[str, int]:
    """Store exactly-representable large float32 initializers compactly, in place.

    An int8-exact initializer (along any axis) becomes int8 codes + per-axis
    ``DequantizeLinear``; else a float16-exact one becomes float16 + ``Cast``; else it stays
    float32.

    Returns:
        How many initializers went to each storage: ``{"int8": n, "float16": m}``.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    widen, counts = [], {"int8": 0, "float16": 0}
    extra = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        values = numpy_helper.to_array(init)
        name = init.name
        codes = None
        for axis in range(values.ndim):
            codes = int8_codes(values, axis)
            if codes is not None:
                break
        if codes is not None:
            q, s = codes
            init.CopyFrom(numpy_helper.from_array(q, name + INT8_SUFFIX))
            extra.append(numpy_helper.from_array(s, name + SCALE_SUFFIX))
            extra.append(numpy_helper.from_array(np.zeros_like(s, np.int8), name + ZERO_SUFFIX))
            widen.append(
                helper.make_node(
                    "DequantizeLinear",
                    [name + INT8_SUFFIX, name + SCALE_SUFFIX, name + ZERO_SUFFIX],
                    [name],
                    axis=axis,
                )
            )
            counts["int8"] += 1
            continue
        narrow = values.astype(np.float16)
        if not np.array_equal(narrow.astype(np.float32), values):
            continue  # not float16-exact: keep the float32 weights
        init.CopyFrom(numpy_helper.from_array(narrow, name + FP16_SUFFIX))
        widen.append(helper.make_node("Cast", [name + FP16_SUFFIX], [name], to=TensorProto.FLOAT))
        counts["float16"] += 1
    graph.initializer.extend(extra)
    for node in reversed(widen):
        graph.node.insert(0, node)
    return counts


def widen_initializers(model: Any) -> int:
    """Turn every compactly stored initializer + its widening node back into a float32
    initializer, in place.

    Returns:
        The number of initializers restored.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    restored = 0
    drop: set[str] = set()
    for node in list(graph.node):
        src = node.input[0] if node.input else ""
        if node.op_type == "Cast" and len(node.input) == 1 and src.endswith(FP16_SUFFIX):
            init = inits.get(src)
            if init is None or init.data_type != TensorProto.FLOAT16:
                continue
            wide = numpy_helper.to_array(init).astype(np.float32)
        elif node.op_type == "DequantizeLinear" and src.endswith(INT8_SUFFIX) and src in inits:
            q = numpy_helper.to_array(inits[src])
            s = numpy_helper.to_array(inits[node.input[1]])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            wide = int8_values(q, s, axis)
            drop.update(node.input[1:])
            init = inits[src]
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(wide, node.output[0]))
        graph.node.remove(node)
        restored += 1
    keep = [init for init in graph.initializer if init.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return restored
