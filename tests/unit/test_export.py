from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.nn.encoders import EncoderConfig
from metascreen.models.serving.session import open_session
from metascreen.models.training.export import ExportError, check_parity, export_onnx, load_weights

pytestmark = pytest.mark.unit


def _wake_context(learner: torch.nn.Module) -> None:
    """Give a context stage's zero-initialised output projections weights, so it is not identity."""
    for name, p in learner.named_parameters():
        if "context." in name and ("_out." in name or "label_" in name):
            with torch.no_grad():
                p.normal_(0, 0.3)


@pytest.mark.parametrize(
    "name",
    [
        "protonet",
        "maml",
        "matching",
        "probe",
        "gp",
        "multihead",
        "gp:per-task",
        "multihead:per-task",
        "context",
        "context:refs",
    ],
)
def test_onnx_parity_at_new_shapes(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    learner_name, _, kernel = name.partition(":")
    refs = 24 if kernel == "refs" else 0
    learner = build_learner(
        LearnerConfig(
            learner=learner_name,  # type: ignore[arg-type]
            encoder=EncoderConfig(hidden=(32,), out_dim=16),
            gp_kernel="global" if kernel in ("", "refs") else kernel,  # type: ignore[arg-type]
            context_refs=refs,
        ),
        40,
    )
    if refs:
        learner.set_references(torch.rand(refs, 40))  # type: ignore[operator]
    _wake_context(learner)
    worst = export_onnx(
        learner, tmp_path / "m.onnx", 40
    )  # checks 3 shapes unlike the export example
    assert worst < 1e-4


def test_parity_check_catches_a_different_model(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = LearnerConfig(encoder=EncoderConfig(hidden=(32,), out_dim=16))
    a, b = build_learner(cfg, 40), build_learner(cfg, 40)
    export_onnx(a, tmp_path / "a.onnx", 40)
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(b.eval(), tmp_path / "a.onnx", 40)


def test_ensemble_exports_and_averages_probabilities(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = LearnerConfig(encoder=EncoderConfig(hidden=(16,), out_dim=8), ensemble_size=3)
    ens = build_learner(cfg, 20).eval()
    assert export_onnx(ens, tmp_path / "e.onnx", 20) < 1e-4
    sx, sy, qx = torch.rand(6, 20), torch.tensor([1.0, 0, 1, 0, 1, 0]), torch.rand(4, 20)
    with torch.no_grad():
        want = torch.stack([torch.sigmoid(m(sx, sy, qx)) for m in ens.members]).mean(0)
        torch.testing.assert_close(torch.sigmoid(ens(sx, sy, qx)), want, rtol=1e-4, atol=1e-5)


STORAGE_DIM = 300
STORAGE_CFG = LearnerConfig(learner="multihead", encoder=EncoderConfig(hidden=(128,), out_dim=32))


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same seeded learner written with each weight storage."""
    from metascreen.models.training.export import write_artifact

    root = tmp_path_factory.mktemp("storage")
    out = {}
    for dtype in ("float32", "float16", "int8"):
        torch.manual_seed(0)
        learner = build_learner(STORAGE_CFG, STORAGE_DIM)
        out[dtype] = write_artifact(
            root / dtype,
            learner,
            STORAGE_DIM,
            {},
            "h",
            {},
            {},
            weights_dtype=dtype,  # type: ignore[arg-type]
        )
    return out


def _graph_matches_stored_weights(
    path: Path, state: dict[str, torch.Tensor]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The stored graph's logits equal torch's with the stored weights; (feeds, logits)."""
    learner = build_learner(STORAGE_CFG, STORAGE_DIM).eval()
    learner.load_state_dict(state)
    gen = torch.Generator().manual_seed(5)
    sx = torch.rand(9, STORAGE_DIM, generator=gen)
    qx = torch.rand(13, STORAGE_DIM, generator=gen)
    sy = torch.tensor([1.0, 0, 0, 1, 0, 0, 1, 0, 0])
    feeds = {"support_x": sx.numpy(), "support_y": sy.numpy(), "query_x": qx.numpy()}
    got = open_session(path / "model.onnx", device="cpu").run(None, feeds)[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, learner(sx, sy, qx).numpy(), atol=1e-5, rtol=1e-5)
    return feeds, got


def test_float16_storage_halves_the_files_and_computes_what_torch_computes(
    stored: dict[str, Path], tmp_path: Path
) -> None:
    from metascreen.models.serving.weight_storage import FP16_SUFFIX, widen_initializers

    wide, narrow = stored["float32"], stored["float16"]
    meta = json.loads((narrow / "metadata.json").read_text())
    assert meta["weights"]["dtype"] == "float16" and meta["weights"]["float16_tensors"] >= 2
    assert meta["onnx"]["parity_max_abs_diff"] < 1e-4
    wide_meta = json.loads((wide / "metadata.json").read_text())
    assert wide_meta["weights"]["dtype"] == "float32"

    # the stored weights load as float32 and reproduce the graph; they are the float32 model's
    # weights rounded to float16, nothing else
    state16, state32 = load_weights(narrow, meta), load_weights(wide, wide_meta)
    assert all(t.dtype != torch.float16 for t in state16.values())
    big = [k for k, t in state32.items() if t.numel() >= 4096]
    assert big
    # both files shrink by about half the large weights' float32 bytes (shared tensors once)
    big_bytes = sum({state32[k].data_ptr(): state32[k].numel() * 4 for k in big}.values())
    for name in ("model.onnx", "weights.pt.gz"):
        saved = (wide / name).stat().st_size - (narrow / name).stat().st_size
        assert saved > 0.45 * big_bytes, (name, saved, big_bytes)
    for k, t in state32.items():
        want = t.half().float() if k in big else t
        torch.testing.assert_close(state16[k], want, rtol=0, atol=0)
    feeds, got = _graph_matches_stored_weights(narrow, state16)

    # widening (the int8 quantizer's input) gives float32 initializers and the same outputs
    graph = onnx.load(str(narrow / "model.onnx"))
    n16 = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
    assert n16 >= 2 and widen_initializers(graph) == n16
    assert not any(i.name.endswith(FP16_SUFFIX) for i in graph.graph.initializer)
    assert all(i.data_type != onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
    onnx.save(graph, str(tmp_path / "wide.onnx"))
    again = open_session(tmp_path / "wide.onnx", device="cpu").run(None, feeds)[0]
    np.testing.assert_array_equal(again, got)


def test_float16_storage_never_rounds_a_weight_itself(tmp_path) -> None:
    """Without ``round_to_fp16`` first, no weight is float16-exact and none is narrowed."""
    import onnx

    torch.manual_seed(0)
    learner = build_learner(LearnerConfig(encoder=EncoderConfig(hidden=(128,), out_dim=32)), 300)
    assert export_onnx(learner, tmp_path / "m.onnx", 300, narrow=True) < 1e-4
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert all(i.data_type != onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)


def test_int8_storage_quarters_the_matrices_and_computes_what_torch_computes(
    stored: dict[str, Path], tmp_path: Path
) -> None:
    from metascreen.models.serving.weight_storage import int8_round, widen_initializers

    wide, small = stored["float32"], stored["int8"]
    meta = json.loads((small / "metadata.json").read_text())
    assert meta["weights"]["dtype"] == "int8" and meta["weights"]["int8_tensors"] >= 2
    assert meta["onnx"]["parity_max_abs_diff"] < 1e-4
    state8 = load_weights(small, meta)
    state32 = load_weights(wide, json.loads((wide / "metadata.json").read_text()))
    assert all(t.dtype == torch.float32 for t in state8.values() if t.is_floating_point())
    assert not any(k.endswith("int8_scale") for k in state8)
    mats = [k for k, t in state32.items() if t.numel() >= 4096 and t.dim() == 2]
    assert mats
    # the stored matrices are the float32 ones rounded per row to int8 codes × scale, no more
    for k in mats:
        q, s = int8_round(state32[k].numpy(), axis=0)
        want = torch.from_numpy(q).float() * torch.from_numpy(s)[:, None]
        torch.testing.assert_close(state8[k], want, rtol=0, atol=0, msg=k)
        err = (state8[k] - state32[k]).abs().max(dim=1).values
        assert (err <= state32[k].abs().max(dim=1).values / 254 * 1.001 + 1e-12).all(), k
    mat_bytes = sum({state32[k].data_ptr(): state32[k].numel() * 4 for k in mats}.values())
    for name in ("model.onnx", "weights.pt.gz"):
        saved = (wide / name).stat().st_size - (small / name).stat().st_size
        assert saved > 0.6 * mat_bytes, (name, saved, mat_bytes)  # float16 saves 0.5

    feeds, got = _graph_matches_stored_weights(small, state8)

    graph = onnx.load(str(small / "model.onnx"))
    n8 = sum(
        i.data_type == onnx.TensorProto.INT8 and i.name.endswith("__int8")
        for i in graph.graph.initializer
    )
    assert n8 >= 2 and sum(n.op_type == "DequantizeLinear" for n in graph.graph.node) == n8
    assert widen_initializers(graph) == n8
    assert not any(i.data_type == onnx.TensorProto.INT8 for i in graph.graph.initializer)
    assert not any(i.name.endswith(("__scale", "__zero")) for i in graph.graph.initializer)
    assert not any(n.op_type == "DequantizeLinear" for n in graph.graph.node)
    onnx.save(graph, str(tmp_path / "wide.onnx"))
    again = open_session(tmp_path / "wide.onnx", device="cpu").run(None, feeds)[0]
    np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("axis", [0, 1])
def test_int8_codes_are_found_by_value_along_either_axis(axis: int) -> None:
    import numpy as np

    from metascreen.models.serving.weight_storage import int8_codes, int8_round

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 96)).astype(np.float32)
    w[3] = 0.0  # an all-zero row keeps scale 1
    assert int8_codes(w, axis) is None  # plain float weights are not int8-exact
    q, s = int8_round(w, axis)
    shape = (-1, 1) if axis == 0 else (1, -1)
    exact = q.astype(np.float32) * s.reshape(shape)
    found = int8_codes(exact, axis)
    assert found is not None
    np.testing.assert_array_equal(found[0], q)
    np.testing.assert_array_equal(found[1], s)
    assert np.abs(q).max() == 127
    # the exporter may transpose a matrix: the codes are found along the other axis
    t = int8_codes(np.ascontiguousarray(exact.T), 1 - axis)
    assert t is not None
    np.testing.assert_array_equal(t[0], q.T)
