"""Top-N recommendation over the whole catalogue for cold users (numpy only).

Protocol (issue 34): a cold user gives ``support_n`` ratings drawn at random, seeded per user
(``user_seed(seed, user_id)``: a permutation of the user's ratings, the first ``support_n`` are the
support). The relevant items are the rest of the user's ratings with rating ≥ 4 (users with none
are skipped and counted). A model scores every catalogue item; the support items are masked here
(never ranked) and the top ``max(ks)`` of the rest are read.

Metrics follow RecBole's full-ranking conventions (``recbole.evaluator.metrics``), per user:

- ``recall@k`` = hits in the top k / number of relevant items (RecBole divides by all relevant
  items, not by ``min(|rel|, k)``);
- ``ndcg@k``: binary gain ``1 / log2(rank + 1)``, ideal = ``min(|rel|, k)`` hits at the top;
- ``hit@k``: 1 if any relevant item is in the top k;
- ``mrr@k``: 1 / rank of the first relevant item in the top k, else 0;
- ``poprank@k``: mean popularity rank of the k items shown (rank 1 = most-rated among the
  training users; tied counts share their average rank);

and over users ``coverage@k`` = distinct items shown in anyone's top k / catalogue size.
Per-user values are kept (keyed by user id) for paired intervals between models.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metascreen.domains.errors import ConfigError
from metascreen.domains.recommendation.tasks import LIKED, user_seed

logger = logging.getLogger(__name__)

TopNFn = Callable[[str, np.ndarray, np.ndarray], np.ndarray]
"""``(user_id, support positions into the catalogue [S] int64, support ratings [S] float32) ->
scores [n_items]`` over the whole catalogue; higher is shown first. The evaluator masks the
support items itself."""

MIN_REST = 10
"""Evaluated users have at least ``support_n + MIN_REST`` ratings."""
DEFAULT_KS = (10, 20)
USER_METRICS = ("recall", "ndcg", "hit", "mrr", "poprank")


@dataclass(frozen=True, slots=True)
class RatedUser:
    """One user's ratings: catalogue positions (int64) and ratings (float32), same order."""

    user_id: str
    positions: np.ndarray
    ratings: np.ndarray


@dataclass(slots=True)
class TopNResult:
    """Per-user metrics of one model at one support size.

    ``per_user[f"{metric}@{k}"]`` is aligned with ``user_ids``; ``coverage[k]`` is the share of
    the catalogue shown to anyone in the top k.
    """

    support_n: int
    ks: tuple[int, ...]
    user_ids: list[str]
    per_user: dict[str, np.ndarray]
    coverage: dict[int, float]
    n_items: int
    n_too_few_ratings: int
    n_no_relevant: int
    shown: dict[int, np.ndarray] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """Mean of each per-user metric over users, and ``coverage@k``."""
        out = {name: float(v.mean()) if len(v) else math.nan for name, v in self.per_user.items()}
        out.update({f"coverage@{k}": c for k, c in self.coverage.items()})
        return out

    def to_json(self, per_user: bool = True) -> dict[str, Any]:
        """Means, counts and (``per_user``) the per-user values rounded to 6 decimals."""
        out: dict[str, Any] = {
            "support_n": self.support_n,
            "n_users": len(self.user_ids),
            "n_too_few_ratings": self.n_too_few_ratings,
            "n_no_relevant": self.n_no_relevant,
            "n_items": self.n_items,
            "metrics": self.means(),
        }
        if per_user:
            out["per_user"] = {
                "user_id": list(self.user_ids),
                **{k: np.round(v, 6).tolist() for k, v in self.per_user.items()},
            }
        return out


def popularity_rank(counts: np.ndarray) -> np.ndarray:
    """Rank of each item by count, 1 = most counted; tied counts share their average rank."""
    c = np.asarray(counts, dtype=np.float64)
    order = np.argsort(-c, kind="stable")
    ordinal = np.empty(len(c), dtype=np.float64)
    ordinal[order] = np.arange(1, len(c) + 1)
    _, inverse = np.unique(-c, return_inverse=True)
    sums = np.bincount(inverse, weights=ordinal)
    sizes = np.bincount(inverse)
    return sums[inverse] / sizes[inverse]


def draw_support(user: RatedUser, support_n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the user's ratings: (support = the first ``support_n`` of a seeded
    permutation, rest)."""
    perm = np.random.default_rng(user_seed(seed, user.user_id)).permutation(len(user.positions))
    return perm[:support_n], perm[support_n:]


def top_items(scores: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best catalogue positions by ``scores`` outside ``exclude``; ties go to the lower
    position, NaN scores rank last."""
    key = -np.asarray(scores, dtype=np.float64)
    key[np.isnan(key)] = np.inf
    key[exclude] = np.nan  # NaN sorts after +inf: excluded items come last of all
    order = np.argsort(key, kind="stable")
    n_ok = len(key) - len(np.unique(exclude))
    return order[: min(k, n_ok)]


def user_metrics(
    top: np.ndarray, relevant: np.ndarray, ks: Sequence[int], pop_rank: np.ndarray
) -> dict[str, float]:
    """RecBole's recall/ndcg/hit/mrr at each k and the mean popularity rank of the top k, for
    one user's ranked list ``top`` (catalogue positions, best first) and ``relevant`` items."""
    hits = np.isin(top, relevant).astype(np.float64)
    n_rel = len(np.unique(relevant))
    disc = 1.0 / np.log2(np.arange(2, len(top) + 2))
    out: dict[str, float] = {}
    for k in ks:
        h = hits[:k]
        first = np.flatnonzero(h)
        out[f"recall@{k}"] = float(h.sum() / n_rel)
        out[f"ndcg@{k}"] = float((h * disc[:k]).sum() / disc[: min(n_rel, k)].sum())
        out[f"hit@{k}"] = float(h.any())
        out[f"mrr@{k}"] = float(1.0 / (first[0] + 1)) if len(first) else 0.0
        out[f"poprank@{k}"] = float(pop_rank[top[:k]].mean())
    return out


def evaluate_topn(
    users: Iterable[RatedUser],
    n_items: int,
    score: TopNFn,
    popularity: np.ndarray,
    support_n: int = 10,
    ks: Sequence[int] = DEFAULT_KS,
    seed: int = 0,
) -> TopNResult:
    """Run the protocol for one model on ``users`` (see the module docstring).

    ``popularity``: rating counts per catalogue position among the training users (for
    ``poprank@k``). Users with fewer than ``support_n + MIN_REST`` ratings, or with no relevant
    item left, are skipped and counted.
    """
    ks = tuple(sorted(set(int(k) for k in ks)))
    if support_n < 1 or not ks or ks[0] < 1:
        raise ConfigError(f"support_n and every k must be at least 1 (got {support_n}, {ks})")
    pop_rank = popularity_rank(popularity)
    if len(pop_rank) != n_items:
        raise ConfigError(f"popularity has {len(pop_rank)} items, the catalogue {n_items}")
    ids: list[str] = []
    rows: list[dict[str, float]] = []
    shown = {k: np.zeros(n_items, dtype=bool) for k in ks}
    too_few = no_rel = 0
    for user in users:
        if len(user.positions) < support_n + MIN_REST:
            too_few += 1
            continue
        sup, rest = draw_support(user, support_n, seed)
        relevant = user.positions[rest][user.ratings[rest] >= LIKED]
        if len(relevant) == 0:
            no_rel += 1
            continue
        s_pos = user.positions[sup].astype(np.int64)
        scores = np.asarray(score(user.user_id, s_pos, user.ratings[sup].astype(np.float32)))
        if scores.shape != (n_items,):
            raise ValueError(f"scores of shape {scores.shape}; expected ({n_items},)")
        top = top_items(scores, s_pos, ks[-1])
        ids.append(user.user_id)
        rows.append(user_metrics(top, relevant, ks, pop_rank))
        for k in ks:
            shown[k][top[:k]] = True
    names = [f"{m}@{k}" for k in ks for m in USER_METRICS]
    per_user = {n: np.array([r[n] for r in rows], dtype=np.float64) for n in names}
    return TopNResult(
        support_n=support_n,
        ks=ks,
        user_ids=ids,
        per_user=per_user,
        coverage={k: float(shown[k].sum() / n_items) for k in ks},
        n_items=n_items,
        n_too_few_ratings=too_few,
        n_no_relevant=no_rel,
        shown=shown,
    )
