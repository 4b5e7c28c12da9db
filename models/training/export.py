"""ONNX export with a parity check, and artifact directories written atomically."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metascreen.domains.errors import MetascreenError
from metascreen.domains.io import atomic_write_json, sha256_file
from metascreen.models.learners.base import EpisodicLearner
from metascreen.models.learners.topn import TopNRecommender
from metascreen.models.nn.policy import ScreeningPolicy
from metascreen.models.serving.artifact import (
    MOLECULES_PREDICTOR,
    POLICY_INPUTS,
    POLICY_OUTPUTS,
    ArtifactInfo,
    provenance,
    staged_dir,
    verify_sha256,
)
from metascreen.models.serving.session import open_session
from metascreen.models.serving.topn import TOPN_INPUTS, TOPN_OUTPUTS
from metascreen.models.serving.weight_storage import (
    MIN_ELEMENTS,
    WeightsDtype,
    int8_codes,
    int8_round,
    int8_values,
    narrow_initializers,
)

logger = logging.getLogger(__name__)

OPSET = 18
INPUT_NAMES = ("support_x", "support_y", "query_x")
OUTPUT_NAMES = ("logit",)
WEIGHTS_FILE = "weights.pt.gz"
SCALE_KEY = "::int8_scale"  # weights file key of an int8-stored tensor's per-row scales
# metadata keys ``write_artifact`` writes afresh; a re-export keeps every other key
REGENERATED_KEYS = frozenset(
    {"schema_version", "kind", "created_at", "git_sha", "versions"}
    | {"learner", "onnx", "weights", "featurizer", "files"}
)


def load_weights(model_dir: Path, metadata: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The artifact's torch state dict, after checking its sha256 (``weights_only`` load)."""
    path = Path(model_dir) / metadata["weights"]["file"]
    verify_sha256(path, metadata["weights"]["sha256"])
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    state: dict[str, torch.Tensor] = torch.load(
        io.BytesIO(raw), map_location="cpu", weights_only=True
    )
    # int8-stored weights (codes + a scale per row) and float16-stored ones are computed in
    # float32; codes · scale is exact in float32, so this is the graph's DequantizeLinear
    scales = {k[: -len(SCALE_KEY)]: state.pop(k) for k in list(state) if k.endswith(SCALE_KEY)}
    for name, scale in scales.items():
        state[name] = torch.from_numpy(int8_values(state[name].numpy(), scale.numpy()))
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}


def load_learner(
    model_dir: Path, info: ArtifactInfo, in_dim: int
) -> tuple[EpisodicLearner, dict[str, Any]]:
    """A molecule artifact's torch learner (rebuilt from its ``config.json``, verified weights
    loaded) and that configuration."""
    from metascreen.models.learners.registry import LearnerConfig, build_learner

    cfg: dict[str, Any] = json.loads((Path(model_dir) / "config.json").read_text())
    learner = build_learner(LearnerConfig.model_validate(cfg["learner"]), in_dim)
    learner.load_state_dict(load_weights(Path(model_dir), info.metadata))
    return learner, cfg


def round_to_fp16(
    module: torch.nn.Module, min_elements: int = MIN_ELEMENTS, skip: frozenset[str] = frozenset()
) -> list[str]:
    """Round ``module``'s large float32 tensors to float16 values (kept float32), in place.

    Afterwards the torch model computes exactly what its float16-stored artifact computes, so the
    parity check still compares like with like. A tensor that would overflow float16 is left as
    it is, and so are the tensors named in ``skip``. Returns the names of the rounded tensors.
    """
    rounded = []
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if t.dtype != torch.float32 or t.numel() < min_elements or name in skip:
                continue
            narrow = t.detach().half()
            if not torch.isfinite(narrow).all():
                continue
            t.data.copy_(narrow.float())
            rounded.append(name)
    return rounded


def round_to_int8(module: torch.nn.Module, min_elements: int = MIN_ELEMENTS) -> list[str]:
    """Round ``module``'s large float32 matrices to int8 codes times one scale per row (kept
    float32), in place: weight-only per-output-channel quantization.

    Afterwards the torch model computes exactly what its int8-stored artifact computes (the
    graph's ``DequantizeLinear`` gives the same float32 values), so the parity check compares
    like with like. Tensors of one dimension stay as they are. Returns the rounded names.
    """
    rounded = []
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if t.dtype != torch.float32 or t.numel() < min_elements or t.dim() < 2:
                continue
            values = t.detach().cpu().numpy()
            if not np.isfinite(values).all():
                continue
            exact = torch.from_numpy(int8_values(*int8_round(values, axis=0)))
            t.data.copy_(exact.to(t.device))
            rounded.append(name)
    return rounded


class ExportError(MetascreenError):
    """The exported graph does not reproduce the torch model."""


def export_graph(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic_shapes: tuple[dict[int, Any], ...],
) -> None:
    """``torch.onnx.export`` (dynamo, opset 18, weights inside the file), quietly."""
    # The exporter prints progress lines to stdout; keep them in the debug log instead.
    captured = io.StringIO()
    # It also warns once per missing torchvision operator, which we never export.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.cpu().eval(),
            example,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )
    logger.debug("torch.onnx.export: %s", captured.getvalue().strip())


def check_graph_parity(
    module: torch.nn.Module,
    path: Path,
    input_names: tuple[str, ...],
    cases: Sequence[tuple[torch.Tensor, ...]],
    atol: float = 1e-4,
) -> float:
    """Largest |onnxruntime − torch| over ``cases`` (every output); raises past ``atol``."""

    sess = open_session(path, device="cpu")
    worst = 0.0
    for case in cases:
        with torch.no_grad():
            want = module(*case)
        wants = [want] if isinstance(want, torch.Tensor) else list(want)
        got = sess.run(None, {n: t.numpy() for n, t in zip(input_names, case, strict=True)})
        for w, g in zip(wants, got, strict=True):
            diff = float(np.max(np.abs(g - w.numpy()))) if w.numel() else 0.0
            worst = max(worst, diff)
            if not np.allclose(g, w.numpy(), atol=atol, rtol=1e-4):
                raise ExportError(
                    f"{path}: onnxruntime differs from torch by {diff:.2e} (> {atol}) at input "
                    f"shapes {[tuple(t.shape) for t in case]}"
                )
    logger.info("ONNX parity ok for %s: max |diff| %.2e", Path(path).name, worst)
    return worst


def export_onnx(
    learner: EpisodicLearner,
    path: Path,
    in_dim: int,
    atol: float = 1e-4,
    seed: int = 0,
    narrow: bool = False,
) -> float:
    """Export ``learner`` (dynamic support and query sizes) and check parity with onnxruntime.

    ``narrow``: store the int8- or float16-exact large weights compactly
    (``serving/weight_storage.py``); round the learner first (``round_to_int8`` or
    ``round_to_fp16``) for them to be exact.

    Returns:
        The largest absolute difference seen on shapes unlike the export example.

    Raises:
        ExportError: onnxruntime's output differs from torch by more than ``atol``.
    """
    learner = learner.cpu().eval()
    gen = torch.Generator().manual_seed(seed)
    example = (
        torch.rand(16, in_dim, generator=gen),
        (torch.arange(16) % 2).float(),
        torch.rand(24, in_dim, generator=gen),
    )
    s_dim, q_dim = torch.export.Dim("n_support", min=2), torch.export.Dim("n_query", min=1)
    export_graph(
        learner,
        example,
        Path(path),
        INPUT_NAMES,
        OUTPUT_NAMES,
        ({0: s_dim}, {0: s_dim}, {0: q_dim}),
    )
    if narrow:
        narrow_onnx_file(Path(path))
    return check_parity(learner, Path(path), in_dim, atol=atol, seed=seed + 1)


def narrow_onnx_file(path: Path) -> int:
    """Store the graph's int8- or float16-exact large weights compactly
    (``narrow_initializers``), in place; lossless: any other weight stays float32.

    Returns:
        The number of weight tensors stored compactly.
    """
    import onnx

    graph = onnx.load(str(path))
    counts = narrow_initializers(graph)
    n = sum(counts.values())
    if n:
        onnx.save(graph, str(path))
    logger.info(
        "stored weight tensors of %s as int8 (%d) and float16 (%d)",
        Path(path).name,
        counts["int8"],
        counts["float16"],
    )
    return n


def row_int8_codes(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, row scales) when matrix ``t`` is exactly int8 codes times row scales (what
    ``round_to_int8`` makes), else None; 1-d tensors never are."""
    return int8_codes(t.detach().cpu().numpy(), axis=0) if t.dim() >= 2 else None


def compactly_storable(
    state: dict[str, torch.Tensor], min_elements: int = MIN_ELEMENTS
) -> frozenset[str]:
    """Names of the float32 tensors of ``state`` (at least ``min_elements``) that ``write_weights``
    can store compactly without loss: exactly int8 codes times row scales (the matrices of an
    int8-stored predictor), or exactly float16 values."""
    names = set()
    for name, t in state.items():
        if t.dtype != torch.float32 or t.numel() < min_elements:
            continue
        values = t.detach().cpu()
        if row_int8_codes(values) is not None or torch.equal(values.half().float(), values):
            names.add(name)
    return frozenset(names)


def compact_counts(state: dict[str, torch.Tensor], names: frozenset[str]) -> dict[str, int]:
    """How ``write_weights`` stores the tensors ``names`` of ``state``: metadata counts."""
    n_int8 = sum(1 for k in names if row_int8_codes(state[k]) is not None)
    return {"float16_tensors": len(names) - n_int8, **({"int8_tensors": n_int8} if n_int8 else {})}


def sparse_rows(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Random rows that look like fingerprints: ~10% non-zero."""
    return (torch.rand(n, dim, generator=gen) < 0.1).float() * torch.rand(n, dim, generator=gen)


def check_parity(
    learner: EpisodicLearner, path: Path, in_dim: int, atol: float = 1e-4, seed: int = 1
) -> float:
    """Compare torch and onnxruntime on several shapes unlike the export example."""
    gen = torch.Generator().manual_seed(seed)
    cases: list[tuple[torch.Tensor, ...]] = []
    for n_s, n_q in ((5, 1), (37, 301), (128, 7)):
        sy = torch.zeros(n_s)
        sy[: max(1, n_s // 3)] = 1.0
        cases.append((sparse_rows(n_s, in_dim, gen), sy, sparse_rows(n_q, in_dim, gen)))
    return check_graph_parity(learner, path, INPUT_NAMES, cases, atol)


def write_weights(
    path: Path, state: dict[str, torch.Tensor], narrow: frozenset[str] = frozenset()
) -> None:
    """gzip'd ``torch.save`` of a state dict (float32 weights shrink ~8%, losslessly).

    The tensors named in ``narrow`` are stored compactly, losslessly: as int8 codes plus a
    ``<name>::int8_scale`` row-scale tensor when they are exactly codes times row scales
    (``round_to_int8``), else as float16 (they must then be float16 values). Tensors that share
    memory (a learner's heads hold its encoder) still share it in the file.
    """
    packed: dict[tuple[int, tuple[int, ...], tuple[int, ...]], dict[str, torch.Tensor]] = {}

    def stored(name: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
        t = t.detach().cpu()
        if name not in narrow:
            return {name: t}
        key = (t.data_ptr(), tuple(t.shape), t.stride())
        if key not in packed:
            codes = row_int8_codes(t)
            if codes is None:
                packed[key] = {"": t.half()}
            else:
                packed[key] = {
                    "": torch.from_numpy(codes[0]),
                    SCALE_KEY: torch.from_numpy(codes[1]),
                }
        return {name + suffix: v for suffix, v in packed[key].items()}

    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        out.update(stored(k, v))
    buf = io.BytesIO()
    torch.save(out, buf)
    Path(path).write_bytes(gzip.compress(buf.getvalue(), compresslevel=6, mtime=0))


def write_artifact(
    out_dir: Path,
    learner: EpisodicLearner,
    in_dim: int,
    featurizer_spec: dict[str, Any],
    featurizer_hash: str,
    config: dict[str, Any],
    extra_metadata: dict[str, Any],
    overwrite: bool = False,
    kind: str = MOLECULES_PREDICTOR,
    extra_files: dict[str, bytes] | None = None,
    weights_dtype: WeightsDtype = "float32",
) -> Path:
    """Write ONNX + weights + metadata into a temp folder and rename it to ``out_dir``.

    ``extra_files`` (name → bytes) are written next to them and their sha256 recorded under
    ``metadata["files"]`` (e.g. the recommendation item table).

    ``weights_dtype="float16"`` rounds the learner's large weight tensors to float16 values in
    place and stores them as float16 in both files (about half the size); ``"int8"`` rounds its
    large matrices to int8 codes times one scale per row (weight-only quantization) and stores
    them so (about a quarter), its other large tensors as float16. Either way the graph still
    computes in float32, and the parity check runs on the stored graph.
    """
    out_dir = Path(out_dir)
    int8 = frozenset(round_to_int8(learner)) if weights_dtype == "int8" else frozenset()
    narrow = int8
    if weights_dtype in ("float16", "int8"):
        narrow |= frozenset(round_to_fp16(learner, skip=int8))
    with staged_dir(out_dir, overwrite) as tmp:
        parity = export_onnx(learner, tmp / "model.onnx", in_dim, narrow=bool(narrow))
        write_weights(tmp / WEIGHTS_FILE, learner.state_dict(), narrow)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        files = {}
        for name, blob in (extra_files or {}).items():
            (tmp / name).write_bytes(blob)
            files[name] = sha256_file(tmp / name)
        meta = {
            **provenance(kind),
            "learner": learner.name,
            "onnx": {
                "file": "model.onnx",
                "sha256": sha256_file(tmp / "model.onnx"),
                "opset": OPSET,
                "inputs": {
                    "support_x": ["n_support", in_dim],
                    "support_y": ["n_support"],
                    "query_x": ["n_query", in_dim],
                },
                "outputs": {"logit": ["n_query"]},
                "parity_max_abs_diff": parity,
                "weights_dtype": weights_dtype,
            },
            "weights": {
                "file": WEIGHTS_FILE,
                "sha256": sha256_file(tmp / WEIGHTS_FILE),
                "dtype": weights_dtype,
                "float16_tensors": len(narrow - int8),
                **({"int8_tensors": len(int8)} if weights_dtype == "int8" else {}),
            },
            "featurizer": {"spec": featurizer_spec, "hash": featurizer_hash},
            **({"files": files} if files else {}),
            **extra_metadata,
        }
        atomic_write_json(tmp / "metadata.json", meta)
    logger.info("wrote model artifact %s", out_dir)
    return out_dir


def policy_parity_cases(in_dim: int, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """Policy inputs at shapes unlike the export example (incl. an empty history)."""
    gen = torch.Generator().manual_seed(seed)
    cases: list[tuple[torch.Tensor, ...]] = []
    for b, n, h in ((1, 5, 1), (3, 41, 9), (2, 130, 33)):
        cm = (torch.rand(b, n, generator=gen) < 0.8).float()
        cm[:, 0] = 1.0
        hm = (torch.rand(b, h, generator=gen) < 0.7).float()
        hm[0] = 0.0  # the first row has an empty history
        cases.append(
            (
                torch.randn(b, n, in_dim, generator=gen),
                cm,
                torch.randn(b, h, in_dim, generator=gen),
                (torch.rand(b, h, generator=gen) < 0.3).float(),
                hm,
                torch.rand(b, generator=gen),
            )
        )
    return cases


def export_policy_onnx(
    policy: ScreeningPolicy, path: Path, atol: float = 1e-4, narrow: bool = False
) -> float:
    """Export with dynamic B, N, H and check parity; returns the largest |diff| seen.

    ``narrow``: store the float16-exact large weights as float16 (``narrow_onnx_file``) before
    the parity check.
    """

    policy = policy.cpu().eval()
    d = policy.in_dim
    example = policy_parity_cases(d, seed=0)[1]
    b, n, h = (torch.export.Dim(x, min=1) for x in ("batch", "n_candidates", "n_history"))
    names = POLICY_INPUTS
    export_graph(
        policy,
        example,
        path,
        names,
        POLICY_OUTPUTS,
        ({0: b, 1: n}, {0: b, 1: n}, {0: b, 1: h}, {0: b, 1: h}, {0: b, 1: h}, {0: b}),
    )
    if narrow:
        narrow_onnx_file(path)
    return check_graph_parity(policy, path, names, policy_parity_cases(d, seed=1), atol)


def export_encoder_onnx(
    encoder: torch.nn.Module, in_dim: int, path: Path, atol: float = 1e-4, narrow: bool = False
) -> float:
    """Export a frozen encoder (rows → embeddings, dynamic rows) and check parity.

    ``narrow``: as in ``export_policy_onnx`` (an encoder from a float16-stored predictor is
    float16-exact, so its file halves).
    """
    encoder = encoder.cpu().eval()
    gen = torch.Generator().manual_seed(0)
    n = torch.export.Dim("n", min=1)
    export_graph(encoder, (sparse_rows(8, in_dim, gen),), path, ("x",), ("embedding",), ({0: n},))
    if narrow:
        narrow_onnx_file(path)
    cases: list[tuple[torch.Tensor, ...]] = [(sparse_rows(k, in_dim, gen),) for k in (1, 37, 300)]
    return check_graph_parity(encoder, path, ("x",), cases, atol)


def topn_parity_cases(n_items: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """(support_items, support_ratings, support_mask) batches of several shapes, some padded."""
    gen = torch.Generator().manual_seed(seed)
    cases: list[tuple[torch.Tensor, ...]] = []
    for b, s in ((1, 1), (3, 7), (5, 24)):
        items = torch.randint(0, n_items, (b, s), generator=gen)
        ratings = torch.randint(1, 6, (b, s), generator=gen).float()
        mask = (torch.rand(b, s, generator=gen) > 0.2).float()
        mask[:, 0] = 1.0
        cases.append((items, ratings, mask))
    return cases


def export_topn_onnx(model: TopNRecommender, path: Path, atol: float = 1e-4) -> float:
    """Export the top-N recommender (dynamic users and support length) with its large tensors
    stored as float16 (rounded in place first, so torch computes what the file computes), and
    check parity; returns the largest |diff| seen."""
    model = model.cpu().eval()
    round_to_fp16(model)
    n_items = model.n_items
    b, s = torch.export.Dim("users", min=1), torch.export.Dim("support", min=1)
    example = topn_parity_cases(n_items, seed=0)[1]
    export_graph(model, example, path, TOPN_INPUTS, TOPN_OUTPUTS, ({0: b, 1: s},) * 3)
    narrow_onnx_file(path)
    return check_graph_parity(model, path, TOPN_INPUTS, topn_parity_cases(n_items, seed=1), atol)
