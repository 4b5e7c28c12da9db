"""Tiny generated rating data with structure in *which* items users rate (never real MovieLens).

Items fall into ``n_clusters`` taste groups with a popularity skew inside each; every user has a
favourite group, rates mostly its items (4–5) and a few others (1–3). Who-rates-what is then
predictable from a few ratings, so the top-N references should beat a random ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def clustered_ratings(
    n_users: int = 90, n_items: int = 60, n_clusters: int = 4, seed: int = 0
) -> pd.DataFrame:
    """``user_id``, ``item_id`` (strings), ``rating`` (float32); users rate 22–40 items."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n_items) % n_clusters
    pop = 1.0 / (1.0 + np.arange(n_items) // n_clusters) ** 0.7
    rows = []
    for u in range(n_users):
        fav = u % n_clusters
        w = pop * np.where(cluster == fav, 8.0, 1.0)
        n = int(rng.integers(22, 41))
        for i in rng.choice(n_items, size=n, replace=False, p=w / w.sum()):
            r = rng.integers(4, 6) if cluster[i] == fav else rng.integers(1, 4)
            rows.append((str(u + 1), str(i + 1), float(r)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    df["rating"] = df["rating"].astype(np.float32)
    return df


def write_clustered_ml1m(root: Path, **kwargs: int) -> pd.DataFrame:
    """The same ratings as a MovieLens-1M folder (``ratings_no_timestamp.dat``, ``movies.dat``,
    ``users.dat``); returns them."""
    df = clustered_ratings(**kwargs)
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{u}::{i}::{int(r)}" for u, i, r in df.itertuples(index=False)]
    (root / "ratings_no_timestamp.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    n_items = int(df["item_id"].astype(int).max())
    (root / "movies.dat").write_text(
        "".join(f"{i}::Film {i} (19{60 + i % 40})::Drama\n" for i in range(1, n_items + 1)),
        encoding="latin-1",
    )
    users = sorted(df["user_id"].unique(), key=int)
    (root / "users.dat").write_text(
        "".join(f"{u}::{'MF'[int(u) % 2]}::25::{int(u) % 20}::10000\n" for u in users),
        encoding="latin-1",
    )
    return df
