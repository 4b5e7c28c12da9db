"""Tiny generated MovieLens-1M-format data for tests (never real MovieLens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def write_ml1m(
    root: Path,
    n_users: int = 60,
    n_items: int = 80,
    seed: int = 0,
    bad_rows: bool = True,
    timestamps: bool = False,
) -> dict[str, int]:
    """Write ``users.dat``, ``movies.dat`` and ``ratings[_no_timestamp].dat`` (latin-1, ``::``).

    Ratings come from a rank-2 taste model plus item and user offsets, so there is something to
    learn; users rate 13–60 items. With ``bad_rows``, four invalid rows are appended: NaN, out of
    range, not a number, and a duplicate (user, item) pair. Returns row counts.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    u_vec = rng.normal(size=(n_users, 2))
    i_vec = rng.normal(size=(n_items, 2))
    i_bias = rng.normal(scale=0.5, size=n_items)
    u_bias = rng.normal(scale=0.4, size=n_users)
    lines = []
    for u in range(n_users):
        n = int(rng.integers(13, 61))
        for i in rng.choice(n_items, size=n, replace=False):
            r = 3.4 + u_bias[u] + i_bias[i] + 0.6 * u_vec[u] @ i_vec[i] + rng.normal(scale=0.5)
            r = int(np.clip(np.rint(r), 1, 5))
            lines.append(
                f"{u + 1}::{i + 1}::{r}" + (f"::{978300000 + len(lines)}" if timestamps else "")
            )
    n_good = len(lines)
    if bad_rows:
        first = lines[0].split("::")
        lines += ["1::2::nan", "2::3::7", "3::4::five", "::".join(first[:3])]
    name = "ratings.dat" if timestamps else "ratings_no_timestamp.dat"
    (root / name).write_text("\n".join(lines) + "\n", encoding="latin-1")
    (root / "users.dat").write_text(
        "".join(
            f"{u + 1}::{'MF'[u % 2]}::{[1, 18, 25, 35][u % 4]}::{u % 20}::{10000 + u}\n"
            for u in range(n_users)
        ),
        encoding="latin-1",
    )
    movies = []
    for i in range(n_items):
        g = "|".join(sorted({GENRES[i % 6], GENRES[(i * 7) % 6]}))
        title = f"Film {i + 1} (19{60 + i % 40})" if i != 5 else "Caf\xe9 Society (1990)"
        movies.append(f"{i + 1}::{title}::{g}\n")
    (root / "movies.dat").write_text("".join(movies), encoding="latin-1")
    return {"n_good": n_good, "n_bad": 4 if bad_rows else 0}
