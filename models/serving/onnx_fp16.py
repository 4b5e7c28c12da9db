"""Half-precision storage of an ONNX graph's large weights, computed in float32 (onnx only, no torch).

A float32 initializer whose every value is exactly a float16 value is stored as float16 and
widened back by a ``Cast`` node in front of the graph, so the file is about half the size and
the graph computes exactly what it computed before (onnxruntime folds the casts when the session
opens). The export rounds the torch weights to float16 first (``round_to_fp16`` in
``models/training/export.py``), which makes the large weights exactly representable; a weight
that is not is left in float32, never rounded here. ``widen_initializers`` undoes the storage
(the int8 quantizer needs float32 initializers).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

FP16_SUFFIX = "__fp16"
WeightsDtype = Literal["float32", "float16"]
MIN_ELEMENTS = 4096  # smaller weights stay float32: the saving is negligible


def narrow_initializers(model: Any, min_elements: int = MIN_ELEMENTS) -> int:
    """Store exactly-representable float32 initializers as float16 + Cast, in place.

    Returns:
        The number of initializers converted.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        values = numpy_helper.to_array(init)
        narrow = values.astype(np.float16)
        if not np.array_equal(narrow.astype(np.float32), values):
            continue  # not float16-exact: keep the float32 weights
        name = init.name
        init.CopyFrom(numpy_helper.from_array(narrow, name + FP16_SUFFIX))
        casts.append(helper.make_node("Cast", [name + FP16_SUFFIX], [name], to=TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    return len(casts)


def widen_initializers(model: Any) -> int:
    """Turn every float16 initializer + widening Cast back into a float32 initializer, in place.

    Returns:
        The number of initializers restored.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    narrow = {
        init.name: init
        for init in graph.initializer
        if init.data_type == TensorProto.FLOAT16 and init.name.endswith(FP16_SUFFIX)
    }
    restored = 0
    for node in list(graph.node):
        if node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in narrow:
            init = narrow.pop(node.input[0])
            wide = numpy_helper.to_array(init).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(wide, node.output[0]))
            graph.node.remove(node)
            restored += 1
    return restored
