"""Recommendation scoring with onnxruntime (no torch): top-k items for users from their few ratings.

``score_users`` reads each user's ratings (the support) and a candidate list, adapts the
artifact's ONNX graph to each user's ratings and writes the top ``k`` unrated candidates per user.
Rows that cannot be used are quarantined with a reason — ratings: NaN / non-numeric /
out-of-range ratings, duplicated (user, item) pairs, item ids the model does not know;
candidates: empty or unknown item ids, duplicates — and counts reconcile:
``ratings in = used + quarantined``, ``candidates in = kept + quarantined``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metascreen.domains.errors import ArtifactMismatchError, InputError
from metascreen.domains.io import canonical_json_hash, read_frame, temp_path
from metascreen.domains.quarantine import QuarantineSink, QuarantineWriter
from metascreen.domains.recommendation.featurize import ItemFeaturizer
from metascreen.domains.recommendation.load import (
    canonical_columns,
    clean_ratings,
    with_implicit_rating,
)
from metascreen.models.features.ratings import ItemTable
from metascreen.models.serving.artifact import MOVIELENS_PREDICTOR, verify_sha256
from metascreen.models.serving.molecules import OnnxPredictor
from metascreen.models.serving.topn import OBJECTIVES, TopNScorer, has_topn

logger = logging.getLogger(__name__)

ITEM_TABLE_FILE = "items.npz"


def load_item_table(model_dir: Path, metadata: dict[str, Any]) -> ItemTable:
    """The artifact's item table, after checking its sha256 and the featurizer hash."""
    path = Path(model_dir) / ITEM_TABLE_FILE
    want = metadata.get("files", {}).get(ITEM_TABLE_FILE)
    if not path.exists() or want is None:
        raise ArtifactMismatchError(f"{model_dir}: no {ITEM_TABLE_FILE}; not a movielens model")
    verify_sha256(path, want)
    fz = metadata["featurizer"]
    featurizer = ItemFeaturizer.from_spec(fz["spec"]["side"], expected_hash=fz["spec"]["side_hash"])
    if canonical_json_hash({"side": fz["spec"]["side"], "items_sha256": want}) != fz["hash"]:
        raise ArtifactMismatchError(
            f"{model_dir}: featurizer hash {fz['hash'][:12]} does not match its item table and spec"
        )
    return ItemTable.from_bytes(path.read_bytes(), featurizer)


class RatingPredictor:
    """An artifact's ONNX rating predictor plus its item table (verified on load)."""

    def __init__(self, model_dir: Path, device: str = "auto") -> None:
        """Open and verify ``model_dir``."""
        self.model_dir = Path(model_dir)
        self.device = device
        self.onnx = OnnxPredictor.load(Path(model_dir), device=device, kind=MOVIELENS_PREDICTOR)
        self.table = load_item_table(Path(model_dir), self.onnx.info.metadata)
        self._topn: TopNScorer | None = None
        self._x_all: np.ndarray | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """The artifact's metadata."""
        return self.onnx.info.metadata

    @property
    def x_all(self) -> np.ndarray:
        """The rating predictor's rows of the whole catalogue (built once)."""
        if self._x_all is None:
            self._x_all = self.table.rows(self.table.item_ids)
        return self._x_all

    @property
    def topn(self) -> TopNScorer:
        """The artifact's top-N graph (opened on first use; refused if it has none)."""
        if self._topn is None:
            self._topn = TopNScorer(self.model_dir, self.metadata, self.device)
        return self._topn

    def resolve_objective(self, objective: str) -> str:
        """``topn`` or ``rating`` for a requested ``topn | rating | auto``."""
        if objective not in (*OBJECTIVES, "auto"):
            raise InputError(f"--objective must be topn, rating or auto, got {objective!r}")
        if objective == "auto":
            if has_topn(self.metadata):
                return "topn"
            logger.warning(
                "%s has no top-N model (trained before it existed, or with --no-topn): ranking "
                "by predicted rating",
                self.model_dir,
            )
            return "rating"
        if objective == "topn":
            self.topn  # noqa: B018 - refuses an artifact without one, before any work
        return objective

    def predict(
        self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray
    ) -> np.ndarray:
        """(Q,) predicted ratings."""
        return self.onnx.logits(support_x, support_y, query_x)


@dataclass(slots=True)
class RecScoreReport:
    """Row accounting of one scoring run."""

    n_ratings_in: int
    n_ratings_used: int
    n_ratings_quarantined: int
    n_candidates_in: int
    n_candidates_kept: int
    n_candidates_quarantined: int
    n_users: int
    n_users_without_ratings: int
    n_rows_out: int
    k: int
    objective: str
    output: str
    quarantine: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """As a dict."""
        return asdict(self)


def score_users(
    model_dir: Path,
    ratings_path: Path,
    candidates_path: Path,
    output: Path,
    k: int = 10,
    device: str = "auto",
    objective: str = "auto",
) -> RecScoreReport:
    """Top-``k`` unrated candidates per user (Parquet: ``user_id, rank, item_id, score``).

    ``ratings_path``: CSV/TSV/Parquet with user, item, rating columns (one or more users).
    ``candidates_path``: CSV/TSV/Parquet with an item column (shared by all users), or with user
    and item columns (per-user candidates). Quarantined rows go to
    ``<output stem>.quarantine.csv`` (``row`` = ``ratings:<n>`` or ``candidates:<n>``).
    ``objective``: as in ``recommend_frame``. A ratings table without a rating column is
    implicit feedback: every row is a positive (``with_implicit_rating``).
    """
    start = time.perf_counter()
    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    # the inputs first (cheap, and their errors name the file), then the model
    raw = canonical_columns(
        with_implicit_rating(read_frame(Path(ratings_path)), str(ratings_path)),
        str(ratings_path),
        RATING_COLS,
    )
    cand = read_frame(Path(candidates_path))
    per_user = "user_id" in cand.columns or "user" in cand.columns
    cand = canonical_columns(
        cand, str(candidates_path), ("user_id", "item_id") if per_user else ("item_id",)
    )
    if not len(raw):
        raise InputError(f"{ratings_path}: no rating rows (empty or header only)")
    if not len(cand):
        raise InputError(f"{candidates_path}: no candidate rows (empty or header only)")
    model = RatingPredictor(Path(model_dir), device=device)
    rank_by = model.resolve_objective(objective)
    q_path = Path(output).with_name(Path(output).stem + ".quarantine.csv")
    q_path.unlink(missing_ok=True)
    with QuarantineWriter(q_path) as q:
        out, counts = recommend_frame(
            model, raw, cand, q, k, str(ratings_path), str(candidates_path), rank_by
        )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(output)  # unique: a concurrent run on the same output has its own
    try:
        out.to_parquet(tmp, index=False)
        tmp.replace(output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    report = RecScoreReport(
        **counts,
        k=k,
        objective=rank_by,
        output=str(output),
        quarantine=str(q_path) if q_path.exists() else None,
        seconds=round(time.perf_counter() - start, 3),
    )
    assert report.n_ratings_in == report.n_ratings_used + report.n_ratings_quarantined
    assert report.n_candidates_in == report.n_candidates_kept + report.n_candidates_quarantined
    logger.info(
        "scored %d users; %d rating and %d candidate rows quarantined",
        report.n_users,
        report.n_ratings_quarantined,
        report.n_candidates_quarantined,
    )
    return report


def recommend_frame(
    model: RatingPredictor,
    ratings: pd.DataFrame,
    candidates: pd.DataFrame,
    q: QuarantineSink,
    k: int = 10,
    ratings_name: str = "ratings",
    candidates_name: str = "candidates",
    objective: str = "auto",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Top-``k`` unrated candidates per user from in-memory tables (see ``score_users``).

    ``objective``: ``topn`` ranks by the artifact's top-N model ("will watch and like"; ``score``
    is its score), ``rating`` by predicted rating (``score`` is the rating), ``auto`` by top-N
    when the artifact has one, else by rating. Returns the ``user_id, rank, item_id, score``
    frame and the ``RecScoreReport`` counts; rejected rows go to ``q``.
    """
    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    rank_by = model.resolve_objective(objective)
    raw = canonical_columns(with_implicit_rating(ratings, ratings_name), ratings_name, RATING_COLS)
    n_q0 = q.count
    support = _usable_ratings(model.table, raw, ratings_name, q)
    n_rating_q = q.count - n_q0
    cand = candidates
    per_user = "user_id" in cand.columns or "user" in cand.columns
    cand = canonical_columns(
        cand, candidates_name, ("user_id", "item_id") if per_user else ("item_id",)
    )
    c_pos, c_users, c_keep = _kept_candidates(model.table, cand, per_user, q)
    n_cand_q = q.count - n_q0 - n_rating_q
    users = pd.unique(support["user_id"])
    by_user = dict(tuple(support.groupby("user_id", sort=False)))  # one pass, input order kept
    user_cands = _candidates_by_user(c_pos, c_users, c_keep) if c_users is not None else None
    no_cands = np.zeros(0, np.int64)
    frames = []
    for lo in range(0, len(users), USERS_PER_BATCH):
        part = users[lo : lo + USERS_PER_BATCH]
        s_pos = [by_user[u]["pos"].to_numpy(np.int64) for u in part]
        s_r = [by_user[u]["rating"].to_numpy(np.float32) for u in part]
        scores = model.topn.scores(s_pos, s_r) if rank_by == "topn" else None
        for n, user in enumerate(part):
            cands = c_pos[c_keep] if user_cands is None else user_cands.get(user, no_cands)
            cands = cands[~np.isin(cands, s_pos[n])]
            if not len(cands):
                continue
            pred = (
                scores[n, cands]
                if scores is not None
                else model.predict(model.x_all[s_pos[n]], s_r[n], model.x_all[cands])
            )
            frames.append(_top_rows(str(user), cands, pred, k, model.table.item_ids))
    out = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({"user_id": [], "rank": [], "item_id": [], "score": []})
    )
    users_in_ratings = pd.unique(raw["user_id"].astype("string").str.strip().dropna())
    counts = {
        "n_ratings_in": len(raw),
        "n_ratings_used": len(support),
        "n_ratings_quarantined": n_rating_q,
        "n_candidates_in": len(cand),
        "n_candidates_kept": int(c_keep.sum()),
        "n_candidates_quarantined": n_cand_q,
        "n_users": len(users),
        "n_users_without_ratings": len(set(users_in_ratings) - {str(u) for u in users}),
        "n_rows_out": len(out),
    }
    return out, counts


USERS_PER_BATCH = 256
RATING_COLS = ("user_id", "item_id", "rating")


def _usable_ratings(
    table: ItemTable, raw: pd.DataFrame, ratings_name: str, q: QuarantineSink
) -> pd.DataFrame:
    """The clean ratings of items the model knows, with their catalogue ``pos``; the others are
    quarantined with a reason (``ratings:<input row>``)."""
    good, bad = clean_ratings(raw, ratings_name, max_bad_fraction=1.0)
    pos = table.positions(good["item_id"].tolist())
    unknown = pos < 0
    kept_rows = np.flatnonzero(~raw.index.isin([b[0] for b in bad]))  # input rows of ``good``
    for row, value, reason in bad:
        q.add(f"ratings:{row}", value, reason)
    for j in np.flatnonzero(unknown):
        g = good.iloc[j]
        q.add(
            f"ratings:{kept_rows[j]}",
            f"{g.user_id}::{g.item_id}::{g.rating:g}",
            "item_id unknown to the model (not in its training catalogue)",
        )
    return good[~unknown].assign(pos=pos[~unknown])


def _kept_candidates(
    table: ItemTable, cand: pd.DataFrame, per_user: bool, q: QuarantineSink
) -> tuple[np.ndarray, pd.Series | None, np.ndarray]:
    """Catalogue positions of the candidates, their users (per-user lists) and which are kept;
    empty, unknown and repeated candidates are quarantined (``candidates:<row>``)."""
    c_items = cand["item_id"].astype("string").str.strip()
    c_users = cand["user_id"].astype("string").str.strip() if per_user else None
    c_pos = table.positions(c_items.fillna("").tolist())
    seen: set[tuple[str, str]] = set()
    c_keep = np.zeros(len(cand), bool)
    for i in range(len(cand)):
        item = c_items.iloc[i]
        user = c_users.iloc[i] if c_users is not None else ""
        if pd.isna(item) or not str(item):
            q.add(f"candidates:{i}", "", "empty item_id")
        elif c_pos[i] < 0:
            q.add(f"candidates:{i}", str(item), "item_id unknown to the model")
        elif (str(user), str(item)) in seen:
            q.add(f"candidates:{i}", str(item), "duplicate candidate")
        else:
            seen.add((str(user), str(item)))
            c_keep[i] = True
    return c_pos, c_users, c_keep


def _candidates_by_user(
    c_pos: np.ndarray, c_users: pd.Series, c_keep: np.ndarray
) -> dict[str, np.ndarray]:
    """Each user's kept candidate positions, in input order (per-user candidate lists)."""
    kept = np.flatnonzero(c_keep)
    groups = pd.Series(kept).groupby(c_users.iloc[kept].to_numpy(), sort=False)
    return {str(u): c_pos[idx.to_numpy()] for u, idx in groups}


def _top_rows(
    user: str, cands: np.ndarray, pred: np.ndarray, k: int, item_ids: list[str]
) -> pd.DataFrame:
    """The user's ``k`` best candidates as output rows (stable order among equal scores)."""
    top = np.argsort(-pred, kind="stable")[:k]
    return pd.DataFrame(
        {
            "user_id": user,
            "rank": np.arange(1, len(top) + 1, dtype=np.int32),
            "item_id": [item_ids[j] for j in cands[top]],
            "score": pred[top].astype(np.float32),
        }
    )
