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
from typing import Any

import numpy as np
import pandas as pd

from metascreen.domains.errors import InputError
from metascreen.domains.io import atomic_write_text
from metascreen.domains.molecules.featurize import MoleculeFeaturizer, canonicalize, invalid_reason
from metascreen.domains.molecules.load import labels_from_table, read_table
from metascreen.domains.quarantine import QuarantineSink, QuarantineWriter
from metascreen.domains.types import FloatArray
from metascreen.models.screening.simulator import BatchEnv
from metascreen.models.serving.artifact import (
    MOLECULES_POLICY,
    ArtifactInfo,
    read_artifact,
)
from metascreen.models.serving.session import open_session

logger = logging.getLogger(__name__)

DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "data" / "artifacts" / "policy-default"


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


def propose(
    assayed_path: Path | None,
    pool_path: Path,
    output: Path,
    k: int = 8,
    policy_dir: Path | None = None,
    budget: int | None = None,
    smiles_column: str | None = None,
    label_column: str | None = "label",
    device: str = "auto",
) -> ProposeReport:
    """Propose the next ``k`` compounds to assay from ``pool_path`` given ``assayed_path``.

    ``assayed_path`` may be ``None`` or a table with no rows (nothing assayed yet). Invalid
    SMILES (in either file) and duplicate pool entries go to ``<output stem>.quarantine.csv``;
    pool compounds already assayed are never proposed (listed there too, with that reason). The
    output CSV has ``rank, row, SMILES, canonical_smiles, score, logit`` for the ``k`` picks.
    """
    start = time.perf_counter()
    if k < 1:
        raise InputError(f"--k must be ≥ 1, got {k}")
    runner = PolicyRunner.load(policy_dir or DEFAULT_POLICY_DIR, device)
    output = Path(output)
    q_path = output.with_name(output.stem + ".quarantine.csv")
    q_path.unlink(missing_ok=True)
    adf = read_table(Path(assayed_path), smiles_column) if assayed_path is not None else None
    pdf = read_table(Path(pool_path), smiles_column)
    with QuarantineWriter(q_path) as quarantine:
        out, counts = propose_frame(
            runner,
            adf,
            pdf,
            quarantine,
            k=k,
            budget=budget,
            label_column=label_column,
            assayed_name=Path(assayed_path) if assayed_path is not None else None,
            pool_name=Path(pool_path),
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
    runner: PolicyRunner,
    adf: pd.DataFrame | None,
    pdf: pd.DataFrame,
    quarantine: QuarantineSink,
    k: int = 8,
    budget: int | None = None,
    label_column: str | None = "label",
    assayed_name: Path | None = None,
    pool_name: Path = Path("pool"),
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The ``k`` picks from the pool table ``pdf`` given the assayed table ``adf`` (in memory).

    Both tables have a ``SMILES`` column (``read_table`` / ``smiles_frame``); ``adf`` also a
    label column. Rejected rows go to ``quarantine``. Returns the picks
    (``rank, row, SMILES, canonical_smiles, score, logit``) and the ``ProposeReport`` counts.
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
    feats = runner.featurizer.transform_smiles(assayed_smiles + keep_smiles)
    emb = runner.embed(feats)
    h_emb, c_emb = emb[: len(assayed_smiles)], emb[len(assayed_smiles) :]
    h = max(1, len(assayed_smiles))
    hist = np.zeros((1, h, emb.shape[1]), np.float32)
    hist[0, : len(assayed_smiles)] = h_emb
    hist_labels = np.zeros((1, h), np.float32)
    hist_labels[0, : len(assayed_smiles)] = assayed_labels
    hist_mask = np.zeros((1, h), np.float32)
    hist_mask[0, : len(assayed_smiles)] = 1.0
    t = min(1.0, len(assayed_smiles) / float(budget or runner.budget))
    logits, _ = runner.run(
        {
            "candidates": c_emb[None].astype(np.float32),
            "candidate_mask": np.ones((1, len(keep_smiles)), np.float32),
            "history": hist,
            "history_labels": hist_labels,
            "history_mask": hist_mask,
            "t_frac": np.array([t], np.float32),
        }
    )
    z = logits[0].astype(np.float64)
    if k > len(z):
        logger.warning("only %d candidates left; proposing all of them", len(z))
    order = np.argsort(-z, kind="stable")[:k]
    out = pd.DataFrame(
        {
            "rank": np.arange(1, len(order) + 1),
            "row": [keep_rows[i] for i in order],
            "SMILES": [pdf["SMILES"].iloc[keep_rows[i]] for i in order],
            "canonical_smiles": [keep_smiles[i] for i in order],
            "score": 1.0 / (1.0 + np.exp(-z[order])),
            "logit": z[order],
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
