"""Reference top-N rankers for cold users, fitted on the training users (numpy, scipy, implicit).

Each reference is a ``--model`` name of ``evaluate movielens --protocol topn``:

- ``popular``: rating counts among the training users;
- ``ease``: EASE (Steck, WWW 2019) on the binary user × item matrix, folded in on the support
  (scores = support indicator row × B);
- ``itemknn``: item-item cosine k-NN on the binary matrix (shrunk cosine, top-K neighbours of each
  item), scores = Σ over the support of the similarities;
- ``mf``: the biased-MF ridge fold-in of ``evaluate movielens`` (``baseline_fn("mf")``), ranking
  the catalogue by predicted rating;
- ``ease-rated``: the same EASE with the support row weighted by the ratings given
  (``Σ_s r_s B[s]``): what a user liked more counts more;
- ``ials``: implicit ALS (Hu, Koren, Volinsky 2008; the ``implicit`` library) with the exact
  least-squares fold-in of the support (``recalculate_user``).

Hyper-parameters (EASE's λ, k-NN's neighbourhood size and shrinkage, iALS's factors and ridge)
are chosen on the training users only: a seeded slice of them (``TUNE_FRACTION``) is held out as
cold users with the same protocol, the reference is fitted on the rest for each grid point, the
best NDCG@10 at each support size wins, and the reference is refitted on all training users.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metascreen.domains.errors import ConfigError
from metascreen.domains.recommendation.tasks import holdout_users
from metascreen.models.evaluation.topn import RatedUser, TopNFn, evaluate_topn

logger = logging.getLogger(__name__)

REFERENCES = ("popular", "ease", "itemknn", "mf", "ials", "ease-rated")
TUNE_FRACTION, TUNE_SEED, TUNE_METRIC = 0.1, 20250, "ndcg@10"
EASE_GRID = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0, 64000.0, 128000.0)
KNN_GRID = tuple((k, s) for k in (200, 500, 1000, 2000, 0) for s in (30.0, 100.0, 300.0, 1000.0))
"""(neighbours, shrink); 0 neighbours = every item. On ML-1M split 0's tuning slice NDCG@10 rose
with both from (50, 0) to about (1000, 300)."""
IALS_GRID = tuple(
    (f, r, a) for f in (32, 64) for r, a in ((20.0, 2.0), (50.0, 2.0), (100.0, 2.0), (50.0, 5.0))
)
"""(factors, ridge, confidence α): placed by a wider look on ML-1M split 0's tuning slice
(training users only): 128 factors, α ≥ 10 or ridge ≥ 200 were worse there."""
IALS_ITERATIONS = 15


# -- data -----------------------------------------------------------------------------------------
def rated_users(ratings: pd.DataFrame, items: list[str]) -> list[RatedUser]:
    """Every user's ratings of catalogue items, sorted by user id."""
    pos = pd.Index(items).get_indexer(ratings["item_id"])
    keep = pos >= 0
    df = pd.DataFrame(
        {
            "u": ratings["user_id"].to_numpy()[keep],
            "i": pos[keep],
            "r": ratings["rating"].to_numpy()[keep],
        }
    )
    return [
        RatedUser(str(u), g["i"].to_numpy(np.int64), g["r"].to_numpy(np.float32))
        for u, g in df.groupby("u", sort=True)
    ]


def item_counts(ratings: pd.DataFrame, items: list[str]) -> np.ndarray:
    """Ratings per catalogue position."""
    pos = pd.Index(items).get_indexer(ratings["item_id"])
    return np.bincount(pos[pos >= 0], minlength=len(items)).astype(np.float64)


def binary_matrix(ratings: pd.DataFrame, items: list[str]) -> sp.csr_matrix:
    """Users (sorted ids) × catalogue positions, 1 where the user rated the item."""
    pos = pd.Index(items).get_indexer(ratings["item_id"])
    keep = pos >= 0
    codes, _ = pd.factorize(ratings["user_id"].to_numpy()[keep], sort=True)
    data = np.ones(int(keep.sum()), dtype=np.float32)
    return sp.csr_matrix((data, (codes, pos[keep])), shape=(int(codes.max()) + 1, len(items)))


def gram(x: sp.csr_matrix) -> np.ndarray:
    """Dense item × item co-occurrence counts ``XᵀX`` (float64)."""
    return np.asarray((x.T @ x).toarray(), dtype=np.float64)


# -- the rankers ----------------------------------------------------------------------------------
def ease_weights(g: np.ndarray, lam: float) -> np.ndarray:
    """EASE's closed form: ``P = (G + λI)⁻¹``, ``B = I - P / diag(P)`` (zero diagonal), float32."""
    p = np.linalg.inv(g + lam * np.eye(len(g)))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def knn_weights(g: np.ndarray, k: int, shrink: float) -> np.ndarray:
    """Shrunk cosine ``G_ij / (√(G_ii G_jj) + shrink)``, zero diagonal, each column (target item)
    keeping its ``k`` largest similarities (``k = 0``: all), float32."""
    d = np.sqrt(np.diag(g))
    s = g / (np.outer(d, d) + shrink + 1e-12)
    np.fill_diagonal(s, 0.0)
    if 0 < k < len(s):
        cut = np.partition(s, len(s) - k, axis=0)[len(s) - k]
        s = np.where(s >= cut[None, :], s, 0.0)
    return s.astype(np.float32)


def row_sum_fn(w: np.ndarray) -> TopNFn:
    """Scores = the support's indicator row × ``w`` (EASE, item k-NN)."""
    return lambda uid, s, sy: w[s].sum(axis=0)


def rated_row_sum_fn(w: np.ndarray) -> TopNFn:
    """Scores = the support's ratings as a row × ``w`` (``ease-rated``)."""
    return lambda uid, s, sy: (np.asarray(sy, np.float32)[:, None] * w[s]).sum(axis=0)


def ials_fit(x: sp.csr_matrix, factors: int, reg: float, alpha: float, seed: int) -> Any:
    """implicit's CPU ALS on the binary matrix (confidence ``alpha`` on what a user rated, 1
    elsewhere), BLAS single-threaded as ``implicit`` asks."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=reg,
            alpha=alpha,
            iterations=IALS_ITERATIONS,
            random_state=seed,
            num_threads=2,
        )
        model.fit(x, show_progress=False)
    model.num_threads = 1  # one user at a time: threads cost ~10 ms a fold-in, the solve ~30 µs
    return model


def ials_fn(model: Any, n_items: int) -> TopNFn:
    """Least-squares fold-in of the support (``recalculate_user``), scores = ``x_u · y_i``."""
    y = np.asarray(model.item_factors)

    def fn(uid: str, s: np.ndarray, sy: np.ndarray) -> np.ndarray:
        row = sp.csr_matrix(
            (np.ones(len(s), np.float32), (np.zeros(len(s), np.int64), s)), shape=(1, n_items)
        )
        return y @ np.asarray(model.recalculate_user(0, row))

    return fn


# -- choosing hyper-parameters on the training users ----------------------------------------------
def training_slice(
    train: pd.DataFrame,
    items: list[str],
    fraction: float = TUNE_FRACTION,
    seed: int = TUNE_SEED,
) -> tuple[pd.DataFrame, list[RatedUser]]:
    """The references' tuning split of the training users: (ratings of the users to fit on,
    the slice users evaluated as cold users). Evaluate a model being developed on the same slice
    (``evaluate_topn(slice_users, ...)``, popularity from the fit ratings) to choose it the way
    the references were chosen, never on the hold-out."""
    tune_ids = holdout_users(train["user_id"].unique().tolist(), fraction, seed)
    in_tune = train["user_id"].isin(tune_ids)
    return train[~in_tune], rated_users(train[in_tune], items)


Params = Any
Prepare = Callable[[pd.DataFrame, list[str]], Any]
Make = Callable[[Any, Params], TopNFn]


def tune_and_fit(
    prepare: Prepare,
    make: Make,
    grid: Sequence[Params],
    train: pd.DataFrame,
    items: list[str],
    support_ns: Sequence[int],
    seed: int = 0,
    extend: Callable[[list[Params], int], Params | None] | None = None,
) -> tuple[dict[int, TopNFn], dict[str, Any]]:
    """Choose a grid point per support size on a seeded slice of the training users, then refit.

    ``prepare(ratings, items)`` builds what every grid point shares (a Gram matrix); ``make(state,
    params)`` the ranker. ``extend(grid so far, index of the best at a support size)`` may return
    one more grid point (EASE's λ keeps rising on ML-1M), asked after the last point for every
    support size's best, one point at a time; at most 8 are added. Every grid point sees the
    same slice users and the same support draws.
    """
    t0 = time.perf_counter()
    fit_df, tune_users = training_slice(train, items)
    pop = item_counts(fit_df, items)
    state = prepare(fit_df, items)
    points, table = list(grid), []
    i = 0
    while i < len(points):
        fn = make(state, points[i])
        res = {
            n: evaluate_topn(tune_users, len(items), fn, pop, n, (10,), seed) for n in support_ns
        }
        table.append({n: float(r.per_user[TUNE_METRIC].mean()) for n, r in res.items()})
        logger.info("tuning %s: %s", points[i], {n: round(v, 4) for n, v in table[-1].items()})
        i += 1
        if i == len(points) and extend is not None and len(points) < len(grid) + 8:
            bests = {int(np.argmax([t[n] for t in table])) for n in support_ns}
            more = [p for b in sorted(bests) if (p := extend(points, b)) is not None]
            points += [p for p in dict.fromkeys(more) if p not in points][:1]
    chosen = {n: points[int(np.argmax([t[n] for t in table]))] for n in support_ns}
    del state
    full = prepare(train, items)
    made: dict[str, TopNFn] = {}
    fns = {}
    for n, p in chosen.items():
        if repr(p) not in made:
            made[repr(p)] = make(full, p)
        fns[n] = made[repr(p)]
    info = {
        "tuned_on": {
            "fraction_of_training_users": TUNE_FRACTION,
            "seed": TUNE_SEED,
            "n_users": {str(n): len(r.user_ids) for n, r in res.items()},
            "metric": TUNE_METRIC,
        },
        "grid": [
            {"params": _jsonable(p), TUNE_METRIC: {str(n): v for n, v in t.items()}}
            for p, t in zip(points, table, strict=True)
        ],
        "chosen": {str(n): _jsonable(p) for n, p in chosen.items()},
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }
    return fns, info


def _jsonable(p: Params) -> Any:
    return list(p) if isinstance(p, tuple) else p


def _extend_ease(points: list[Params], best: int) -> Params | None:
    """One more λ while the best is at an end of the grid: twice the largest, or half the
    smallest (down to 1)."""
    lam = points[best]
    if lam == max(points):
        return lam * 2.0
    return lam / 2.0 if lam == min(points) and lam >= 2.0 else None


# -- the references by name -----------------------------------------------------------------------
def reference_fns(
    name: str, train: pd.DataFrame, items: list[str], support_ns: Sequence[int], seed: int = 0
) -> tuple[dict[int, TopNFn], dict[str, Any]]:
    """The reference ``name`` fitted on ``train`` (ratings of the training users): one ranker per
    support size (hyper-parameters may differ by size) and what was chosen and measured."""
    if name not in REFERENCES:
        raise ConfigError(f"unknown reference {name!r}; choose one of {', '.join(REFERENCES)}")
    t0 = time.perf_counter()
    n_items = len(items)
    if name == "popular":
        counts = item_counts(train, items)
        return {n: (lambda uid, s, sy: counts) for n in support_ns}, {}
    if name == "mf":
        from metascreen.models.evaluation.ratings import BASELINE_MF, baseline_fn
        from metascreen.models.features.ratings import RatingModelConfig

        predict = baseline_fn("mf", train, items, RatingModelConfig.model_validate(BASELINE_MF))
        every = np.arange(n_items, dtype=np.int64)
        fn: TopNFn = lambda uid, s, sy: predict(s, sy, every)  # noqa: E731
        return {n: fn for n in support_ns}, {"params": BASELINE_MF, "ranked_by": "rating"}
    if name in ("ease", "ease-rated"):
        rated = name == "ease-rated"
        fns, info = tune_and_fit(
            lambda df, it: gram(binary_matrix(df, it)),
            lambda g, lam: (rated_row_sum_fn if rated else row_sum_fn)(ease_weights(g, lam)),
            EASE_GRID,
            train,
            items,
            support_ns,
            seed,
            extend=_extend_ease,
        )
        info["params"] = "lambda"
        info["support_row"] = "ratings" if rated else "indicator"
    elif name == "itemknn":
        fns, info = tune_and_fit(
            lambda df, it: gram(binary_matrix(df, it)),
            lambda g, p: row_sum_fn(knn_weights(g, int(p[0]), float(p[1]))),
            KNN_GRID,
            train,
            items,
            support_ns,
            seed,
        )
        info["params"] = ["neighbours", "shrink"]
    else:
        fns, info = tune_and_fit(
            binary_matrix,
            lambda x, p: ials_fn(ials_fit(x, int(p[0]), float(p[1]), float(p[2]), seed), n_items),
            IALS_GRID,
            train,
            items,
            support_ns,
            seed,
        )
        info["params"] = ["factors", "regularization", "alpha"]
        info["iterations"] = IALS_ITERATIONS
    logger.info("%s: chosen %s in %.0fs", name, info["chosen"], time.perf_counter() - t0)
    return fns, info
