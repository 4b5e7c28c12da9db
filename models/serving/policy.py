"""Serving the screening policy with onnxruntime only (never imports torch).

A policy artifact holds two graphs: ``encoder.onnx`` (features → embeddings, the frozen
meta-trained encoder) and ``policy.onnx`` (candidates, history, labels, masks, t/T → logits,
value). ``propose`` turns "what has been assayed" + "what could be assayed" into the next picks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from metascreen.domains.errors import ArtifactMismatchError, InputError, MetascreenError
from metascreen.domains.io import atomic_write_text
from metascreen.domains.molecules.featurize import MoleculeFeaturizer, canonicalize, invalid_reason
from metascreen.domains.molecules.load import labels_from_table, read_table
from metascreen.domains.quarantine import QuarantineSink, QuarantineWriter
from metascreen.domains.types import FloatArray
from metascreen.models.screening.factory import (
    BASELINE_POLICIES,
    MOLECULE_PICKERS,
    PICKER_DEFAULTS,
    PICKER_DEFAULTS_CHOSEN_ON,
    PickerSpec,
    picker_option,
    picker_spec,
    policy_label,
)
from metascreen.models.screening.simulator import BatchEnv, Picker, next_picks
from metascreen.models.serving.artifact import (
    DEFAULT_MODEL_DIR,
    MOLECULES_POLICY,
    ArtifactInfo,
    read_artifact,
)
from metascreen.models.serving.session import open_session, session_from_model

logger = logging.getLogger(__name__)

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "data" / "artifacts" / "policy-default"
DEFAULT_PRIOR_FILE = DEFAULT_POLICY_DIR.parent / "activity-prior-default.json"


def observation(env: BatchEnv, cand_emb: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX policy inputs from ``env``; ``cand_emb`` (B, N, D) embeds every pool position."""
    h = max(1, int(env.history_len.max()))
    pos = np.maximum(env.history[:, :h], 0)
    hist = np.take_along_axis(cand_emb, pos[:, :, None], axis=1)
    return {
        "candidates": cand_emb.astype(np.float32, copy=False),
        "candidate_mask": env.available.astype(np.float32),
        "history": hist.astype(np.float32, copy=False),
        "history_labels": env.history_rewards[:, :h].astype(np.float32),
        "history_mask": (env.history[:, :h] >= 0).astype(np.float32),
        "t_frac": np.full(env.n_pools, env.t_frac, np.float32),
    }


class PolicyGraph:
    """A ``policy.onnx`` session (observation → logits, value), its sha256 checked on load.

    Shared by both domains: molecule artifacts wrap it in ``PolicyRunner`` (with the encoder);
    a movielens artifact carries it next to the rating predictor with an item-embedding table.
    """

    def __init__(
        self,
        path: Path,
        sha256: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        name: str = "policy",
    ) -> None:
        """Open ``path``; refuse it if ``sha256`` is given and differs."""
        self.session = open_session(Path(path), sha256, device, threads, what="policy graph")
        self.name = name

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, N) logits and (B,) values."""
        logits, value = self.session.run(None, inputs)
        return np.asarray(logits), np.asarray(value)


class PolicyRunner:
    """A verified policy artifact: featurizer + encoder session + policy session."""

    def __init__(
        self, info: ArtifactInfo, device: str = "auto", threads: int | None = None
    ) -> None:
        """Verify the encoder graph's hash too and open both sessions."""
        self.info = info
        meta = info.metadata
        enc = meta["encoder_onnx"]
        self.encoder = open_session(
            info.path / enc["file"], enc["sha256"], device, threads, what="encoder graph"
        )
        fz = meta["featurizer"]
        self.featurizer = MoleculeFeaturizer.from_spec(fz["spec"], expected_hash=fz["hash"])
        # read_artifact has already checked the policy graph's sha256
        self.graph = PolicyGraph(info.onnx_path, None, device, threads)
        self.budget = int(meta.get("budget", 32))

    @classmethod
    def load(cls, path: Path, device: str = "auto", threads: int | None = None) -> PolicyRunner:
        """Read and verify ``path``."""
        return cls(read_artifact(Path(path), kind=MOLECULES_POLICY), device, threads)

    @property
    def name(self) -> str:
        """For reports."""
        return f"policy:{self.info.path}"

    def embed(self, x: FloatArray, batch: int = 4096) -> np.ndarray:
        """(n, E) encoder embeddings of feature rows."""
        if len(x) == 0:
            return np.zeros((0, int(self.info.metadata["embedding_dim"])), np.float32)
        return np.concatenate(
            [
                self.encoder.run(None, {"x": np.ascontiguousarray(x[i : i + batch], np.float32)})[0]
                for i in range(0, len(x), batch)
            ]
        )

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(B, N) logits and (B,) values."""
        return self.graph.run(inputs)


class OnnxPolicyPicker:
    """The policy as a simulator picker (highest logit first) on precomputed embeddings."""

    def __init__(
        self, runner: PolicyRunner | PolicyGraph, embeddings: np.ndarray, name: str | None = None
    ) -> None:
        """``embeddings[item]`` = the item's policy input row (encoder embedding, item table)."""
        self.runner = runner
        self.embeddings = embeddings
        if name is None:
            meta = runner.info.metadata if isinstance(runner, PolicyRunner) else {}
            name = str(meta.get("name", getattr(runner, "name", "policy")))
        self.name = name
        self._env: BatchEnv | None = None
        self._cand: np.ndarray | None = None

    def scores(self, env: BatchEnv) -> np.ndarray:
        """(B, N) logits."""
        if self._env is not env or self._cand is None:
            self._cand = self.embeddings[env.items]
            self._env = env
        return self.runner.run(observation(env, self._cand))[0]


@dataclass(slots=True)
class ProposeReport:
    """Counts of a ``propose`` run; pool rows = scored + already assayed + pool quarantined."""

    n_assayed: int
    n_assayed_active: int
    n_pool_rows: int
    n_scored: int
    n_already_assayed: int
    n_pool_quarantined: int
    n_assayed_quarantined: int
    n_proposed: int
    output: str
    quarantine: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """For the CLI."""
        return {k: getattr(self, k) for k in self.__slots__}


def ecfp_bits(featurizer: Any, x: np.ndarray) -> np.ndarray:
    """0/1 Morgan bits of feature rows ``x`` (the fingerprint block of the predictor's features)."""
    n_bits = int(getattr(featurizer, "n_bits", 0) or x.shape[1])
    return np.asarray(x[:, :n_bits] > 0)


def embedding_tensor(graph: Any) -> str | None:
    """The name of a predictor graph's shared encoder output, or ``None`` when it has none.

    Every predictor export encodes ``concat(support_x, query_x)`` once and slices the result into
    support and query embeddings, so the encoder output is the first tensor downstream of that
    ``Concat`` that two row ``Slice`` nodes (axis 0) read (the fp32 and the int8 graphs alike).
    Column slices (an encoder reading its ``input_ranges``) do not count.
    """
    from onnx import numpy_helper

    nodes = list(graph.node)
    cat = next(
        (n for n in nodes if n.op_type == "Concat" and list(n.input) == ["support_x", "query_x"]),
        None,
    )
    if cat is None:
        return None
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in nodes:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def rows_only(n: Any) -> bool:  # a Slice of axis 0 (no axes input: every axis from 0)
        if len(n.input) < 4 or not n.input[3]:
            return True
        axes = consts.get(n.input[3])
        return axes is not None and [int(a) for a in np.ravel(axes)] == [0]

    slicers: dict[str, int] = {}
    for n in nodes:
        if n.op_type == "Slice" and n.input and rows_only(n):
            slicers[n.input[0]] = slicers.get(n.input[0], 0) + 1
    downstream = set(cat.output)
    if slicers.get(cat.output[0], 0) >= 2:
        return None  # the raw features are sliced: no encoder in between
    for n in nodes:
        if any(i in downstream for i in n.input):
            for out in n.output:
                downstream.add(out)
                if slicers.get(out, 0) >= 2:
                    return str(out)
    return None


class PredictorEmbedder:
    """The encoder part of a predictor's own ``model.onnx``: feature rows → embeddings.

    Cut out of the verified graph with ``onnx.utils.Extractor`` (torch-free), so the baselines'
    cold start embeds with exactly the predictor they run, whatever policy is shipped.
    """

    def __init__(self, info: ArtifactInfo, device: str = "auto") -> None:
        """Raises ``MetascreenError`` when the graph has no shared encoder output to cut at."""
        import onnx
        from onnx.utils import Extractor

        model = onnx.load(str(info.onnx_path))
        name = embedding_tensor(model.graph)
        if name is None:
            raise MetascreenError(f"{info.onnx_path}: no shared encoder output found in the graph")
        sub = Extractor(model).extract_model(["support_x", "query_x"], [name])
        self.session = session_from_model(
            sub.SerializeToString(), f"{info.onnx_path} (encoder part)", device
        )
        self.tensor = name

    def embed(self, x: FloatArray, batch: int = 4096) -> np.ndarray:
        """(n, E) embeddings of feature rows ``x``."""
        x = np.ascontiguousarray(x, np.float32)
        empty = np.zeros((0, x.shape[1]), np.float32)
        return np.concatenate(
            [
                self.session.run(None, {"support_x": x[i : i + batch], "query_x": empty})[0]
                for i in range(0, max(len(x), 1), batch)
            ]
        )


def cold_start_of(name: str, ctx: Any) -> str:
    """The cold start predictor baseline ``name`` runs with (fixed for two of them)."""
    fixed = {"greedy-random-start": "random", "greedy-prior": "prior"}
    return fixed.get(name, str(picker_option(ctx, "cold_start")))


class ActivityPrior:
    """A task-agnostic activity prior: a logistic model on a predictor's encoder embedding.

    ``metascreen train prior`` fits it on pooled train labels (how often a compound like this is
    active in an assay at all); the ``prior`` cold start ranks a pool by it before any active is
    known. The file records the predictor's ONNX sha256; another predictor is refused.
    """

    def __init__(self, weights: np.ndarray, bias: float, path: Path) -> None:
        """``scores(e) = e @ weights + bias``."""
        self.weights = weights
        self.bias = bias
        self.path = path

    @classmethod
    def load(cls, path: Path, predictor_metadata: dict[str, Any]) -> ActivityPrior:
        """Read ``path`` and check it was fitted on the predictor with ``predictor_metadata``."""
        return cls.from_doc(cls.read(path), path, predictor_metadata)

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """The prior file's JSON document (a clear error when missing or not JSON)."""
        import json

        if not path.is_file():
            raise InputError(
                f"{path}: prior file not found (write one with metascreen train prior)"
            )
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ArtifactMismatchError(f"{path}: not a prior file ({err})") from err
        if not isinstance(doc, dict):
            raise ArtifactMismatchError(f"{path}: not a prior file (not a JSON object)")
        return doc

    @classmethod
    def from_doc(
        cls, doc: dict[str, Any], path: Path, predictor_metadata: dict[str, Any]
    ) -> ActivityPrior:
        """The prior in ``doc`` (read from ``path``), checked against the predictor."""
        try:
            weights = np.asarray(doc["weights"], np.float64)
            bias = float(doc["bias"])
            source = str(doc["predictor_onnx_sha256"])
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactMismatchError(f"{path}: not a prior file ({err})") from err
        if source != predictor_metadata["onnx"]["sha256"]:
            raise ArtifactMismatchError(
                f"{path}: fitted on the predictor with ONNX sha256 {source[:12]}…, not on this "
                f"one ({predictor_metadata['onnx']['sha256'][:12]}…); fit one for it with "
                "metascreen train prior and pass --option prior_file=PATH"
            )
        return cls(weights, bias, path)

    def scores(self, embeddings: np.ndarray | None) -> np.ndarray:
        """Prior logits of embedding rows."""
        if embeddings is None:
            raise ArtifactMismatchError(f"{self.path}: the predictor gives no embeddings")
        if embeddings.shape[1] != self.weights.size:
            raise ArtifactMismatchError(
                f"{self.path}: {self.weights.size} weights for {embeddings.shape[1]}-d embeddings"
            )
        return np.asarray(embeddings, np.float64) @ self.weights + self.bias


def predictor_embeddings(predictor: Path | ArtifactInfo, x: np.ndarray) -> np.ndarray | None:
    """The predictor's encoder embeddings of ``x`` (from its own graph), or ``None``.

    ``predictor`` is its artifact folder, or its already verified ``ArtifactInfo``. ``None``
    (pickers fall back to ECFP, and the report says ``cold_start_embedding: false``) only when
    the graph has no shared encoder output to cut at; the reason is logged.
    """
    try:
        info = predictor if isinstance(predictor, ArtifactInfo) else read_artifact(predictor)
        embedder = PredictorEmbedder(info)
    except MetascreenError as err:
        logger.warning("no encoder embeddings for the baselines' cold start: %s", err)
        return None
    return embedder.embed(x)


@dataclass(slots=True)
class ResolvedPicker:
    """A ``--policy`` value resolved: the featurizer its rows need, then ``build(x)``."""

    name: str  # factory name ("policy" for an artifact)
    label: str  # how reports name it
    spec: PickerSpec
    ctx: SimpleNamespace
    featurizer: Any

    def build(self, x: FloatArray) -> Picker:
        """The picker over feature rows ``x`` (``items`` of the pools index these rows)."""
        self.ctx.x = x
        if self.spec.needs == "predictor":
            self.ctx.bits = ecfp_bits(self.featurizer, x)
            cold = cold_start_of(self.name, self.ctx)
            if cold in ("far", "prior"):  # the predictor was read and verified by the resolver
                self.ctx.embeddings = predictor_embeddings(self.ctx.predictor.info, x)
            if cold == "prior":
                self.ctx.prior = self.ctx.activity_prior.scores(self.ctx.embeddings)
        return self.spec.build(self.ctx)

    def provenance(self) -> dict[str, Any]:
        """The knobs a predictor baseline ran with, and where each was chosen (for the JSON)."""
        if self.spec.needs != "predictor":
            return {}
        prefix = self.name.split("-")[0] + "_"
        keys = [k for k in PICKER_DEFAULTS if k == "cold_start" or k.startswith(prefix)]
        cold = cold_start_of(self.name, self.ctx)
        if cold == "prior":
            keys[1:1] = ["prior_file", "prior_weight"]
        used: dict[str, Any] = {k: picker_option(self.ctx, k) for k in keys}
        used["cold_start"] = cold
        if cold == "prior":
            used["prior_file"] = str(self.ctx.activity_prior.path)
        given = self.ctx.options
        return {
            "options": used,
            "options_chosen_on": {
                k: "command line" if k in given else PICKER_DEFAULTS_CHOSEN_ON[k] for k in used
            },
            "cold_start_embedding": getattr(self.ctx, "embeddings", None) is not None,
        }


def resolve_molecule_picker(
    policy: str | Path | None,
    model_dir: Path | None = None,
    options: dict[str, Any] | None = None,
    device: str = "auto",
) -> ResolvedPicker:
    """A policy artifact folder (default: the shipped one) or a ``MOLECULE_PICKERS`` name.

    Loads what the picker needs (predictor from ``model_dir``, default the shipped model; policy
    artifact) and checks ``options`` keys before any featurizing.
    """
    name = str(policy) if policy is not None and str(policy) in BASELINE_POLICIES else "policy"
    label = policy_label(policy)
    spec = picker_spec(MOLECULE_PICKERS, name)
    ctx = SimpleNamespace(label=label, options=dict(options or {}))
    for key in ctx.options:
        picker_option(ctx, key)  # unknown keys fail before any work
    featurizer: Any
    if spec.needs == "ecfp":
        from metascreen.models.evaluation.baselines import baseline_featurizer

        featurizer = baseline_featurizer()
    elif spec.needs == "predictor":
        from metascreen.models.serving.molecules import OnnxPredictor

        model_dir = Path(model_dir or DEFAULT_MODEL_DIR)
        ctx.predictor = OnnxPredictor.load(model_dir, device)
        featurizer = ctx.predictor.featurizer
        if cold_start_of(name, ctx) == "prior":
            given = picker_option(ctx, "prior_file")
            ctx.activity_prior = ActivityPrior.load(
                Path(given) if given else DEFAULT_PRIOR_FILE, ctx.predictor.info.metadata
            )
    else:
        ctx.runner = PolicyRunner.load(
            Path(policy) if policy is not None else DEFAULT_POLICY_DIR, device
        )
        featurizer = ctx.runner.featurizer
    return ResolvedPicker(name, label, spec, ctx, featurizer)


def propose(
    assayed_path: Path | None,
    pool_path: Path,
    output: Path,
    k: int = 8,
    policy_dir: str | Path | None = None,
    budget: int | None = None,
    smiles_column: str | None = None,
    label_column: str | None = "label",
    device: str = "auto",
    model_dir: Path | None = None,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> ProposeReport:
    """Propose the next ``k`` compounds to assay from ``pool_path`` given ``assayed_path``.

    ``assayed_path`` may be ``None`` or a table with no rows (nothing assayed yet). Invalid
    SMILES (in either file) and duplicate pool entries go to ``<output stem>.quarantine.csv``;
    pool compounds already assayed are never proposed (listed there too, with that reason). The
    output CSV has ``rank, row, SMILES, canonical_smiles, score, logit`` for the ``k`` picks.

    ``policy_dir`` is a policy artifact or a baseline name (``MOLECULE_PICKERS``; predictor
    baselines use ``model_dir``, knobs ``options``). The ``k`` picks are one plate: chosen by
    ``next_picks``, exactly as the simulator picks a ``--batch k`` round (no label seen in
    between); ``seed`` seeds ties and sampling. ``score``/``logit`` are the picker's scores
    (sigmoid/raw) where it has them (NaN for Thompson sampling, whose picks are draws).
    """
    start = time.perf_counter()
    if k < 1:
        raise InputError(f"--k must be ≥ 1, got {k}")
    resolved = resolve_molecule_picker(policy_dir, model_dir, options, device)
    output = Path(output)
    q_path = output.with_name(output.stem + ".quarantine.csv")
    q_path.unlink(missing_ok=True)
    adf = read_table(Path(assayed_path), smiles_column) if assayed_path is not None else None
    pdf = read_table(Path(pool_path), smiles_column)
    with QuarantineWriter(q_path) as quarantine:
        out, counts = propose_frame(
            resolved,
            adf,
            pdf,
            quarantine,
            k=k,
            budget=budget,
            label_column=label_column,
            assayed_name=Path(assayed_path) if assayed_path is not None else None,
            pool_name=Path(pool_path),
            seed=seed,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, out.to_csv(index=False))
    report = ProposeReport(
        **counts,
        output=str(output),
        quarantine=str(q_path) if quarantine.count else None,
        seconds=round(time.perf_counter() - start, 3),
    )
    logger.info(
        "proposed %d of %d candidates (%d already assayed, %d quarantined) in %.1fs",
        report.n_proposed,
        report.n_scored,
        report.n_already_assayed,
        report.n_pool_quarantined,
        report.seconds,
    )
    return report


def propose_frame(
    resolved: ResolvedPicker,
    adf: pd.DataFrame | None,
    pdf: pd.DataFrame,
    quarantine: QuarantineSink,
    k: int = 8,
    budget: int | None = None,
    label_column: str | None = "label",
    assayed_name: Path | None = None,
    pool_name: Path = Path("pool"),
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The ``k`` picks from the pool table ``pdf`` given the assayed table ``adf`` (in memory).

    Both tables have a ``SMILES`` column (``read_table`` / ``smiles_frame``); ``adf`` also a
    label column. Rejected rows go to ``quarantine``. ``resolved`` is the picker
    (``resolve_molecule_picker``); the ``k`` picks are one plate chosen by ``next_picks``, as
    the simulator picks a ``--batch k`` round; ``seed`` seeds ties and sampling. Returns the
    picks (``rank, row, SMILES, canonical_smiles, score, logit``; NaN scores for Thompson
    sampling, whose picks are draws) and the ``ProposeReport`` counts.
    """
    if k < 1:
        raise InputError(f"--k must be ≥ 1, got {k}")
    assayed_smiles: list[str] = []
    assayed_labels: list[float] = []
    assayed_rows: dict[str, int] = {}
    n_q0 = quarantine.count
    if adf is not None:
        a_name = assayed_name or Path("assayed")
        labels: list[float] = (
            labels_from_table(adf, a_name, label_column).tolist() if len(adf) else []
        )
        for row, (smi, lab) in enumerate(zip(adf["SMILES"].tolist(), list(labels), strict=True)):
            canon = canonicalize(smi)
            if canon is None:
                quarantine.add(row, smi, f"{a_name.name}: {invalid_reason(smi)}")
                continue
            assayed_rows.setdefault(canon, row)
            assayed_smiles.append(canon)
            assayed_labels.append(float(lab))
    n_assayed_bad = quarantine.count - n_q0
    n_pool = len(pdf)
    keep_rows: list[int] = []
    keep_smiles: list[str] = []
    seen: dict[str, int] = {}
    n_already = n_pool_bad = 0
    for row, smi in enumerate(pdf["SMILES"].tolist()):
        canon = canonicalize(smi)
        if canon is None:
            n_pool_bad += 1
            quarantine.add(row, smi, f"{pool_name.name}: {invalid_reason(smi)}")
        elif canon in assayed_rows:
            n_already += 1
            quarantine.add(
                row, smi, f"{pool_name.name}: already assayed (assayed row {assayed_rows[canon]})"
            )
        elif canon in seen:
            n_pool_bad += 1
            quarantine.add(row, smi, f"{pool_name.name}: duplicate of pool row {seen[canon]}")
        else:
            seen[canon] = row
            keep_rows.append(row)
            keep_smiles.append(canon)
    if not keep_smiles:
        raise InputError(
            f"{pool_name}: no candidate left to propose (all invalid or already assayed)"
        )
    feats = resolved.featurizer.transform_smiles(assayed_smiles + keep_smiles)
    picker = resolved.build(feats)
    if budget is None:
        budget = resolved.ctx.runner.budget if resolved.name == "policy" else 32
    env = BatchEnv.from_history(assayed_labels, len(keep_smiles), budget, (seed,))
    n_h = len(assayed_smiles)
    if k > len(keep_smiles):
        logger.warning("only %d candidates left; proposing all of them", len(keep_smiles))
    picks = next_picks(env, picker, min(k, len(keep_smiles)))[0]
    order = picks[picks >= 0] - n_h  # candidate positions, in pick order
    # the scores behind the picks (for the policy and greedy, logits of one scoring call)
    z = np.asarray(picker.scores(env)[0, n_h:], np.float64) if resolved.name != "thompson" else None
    out = pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "row": [keep_rows[i] for i in order],
            "SMILES": [pdf["SMILES"].iloc[keep_rows[i]] for i in order],
            "canonical_smiles": [keep_smiles[i] for i in order],
            "score": 1.0 / (1.0 + np.exp(-z[order])) if z is not None else np.nan,
            "logit": z[order] if z is not None else np.nan,
        }
    )
    counts = {
        "n_assayed": len(assayed_smiles),
        "n_assayed_active": int(sum(v > 0.5 for v in assayed_labels)),
        "n_pool_rows": n_pool,
        "n_scored": len(keep_smiles),
        "n_already_assayed": n_already,
        "n_pool_quarantined": n_pool_bad,
        "n_assayed_quarantined": n_assayed_bad,
        "n_proposed": len(order),
    }
    assert n_pool == len(keep_smiles) + n_already + n_pool_bad
    return out, counts
