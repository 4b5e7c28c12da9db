"""Read rating data: MovieLens 100K / 1M (with MeLU metadata) and generic interaction tables.

Every loader returns :class:`Interactions`: ratings as ``user_id``/``item_id`` strings and float
ratings, optional user and item side tables, and the rows it rejected with a reason. Rejected
rows (unparsable fields, NaN or out-of-range ratings, duplicated (user, item) pairs) are never
dropped silently: they are listed on ``Interactions.rejected`` and counted, input rows = kept +
rejected, and a load fails when more than ``max_bad_fraction`` of the rows are bad.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metascreen.domains.errors import InputError, SchemaError
from metascreen.domains.io import read_frame
from metascreen.domains.quarantine import QuarantineWriter

logger = logging.getLogger(__name__)

RATING_MIN, RATING_MAX = 1.0, 5.0
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(slots=True)
class Interactions:
    """Ratings with optional side information.

    Attributes:
        ratings: Columns ``user_id`` (str), ``item_id`` (str), ``rating`` (float32), one row per
            (user, item) pair, in input order.
        users: Side table indexed by ``user_id`` (``gender``, ``age``, ``occupation``, ``zip``) or None.
        items: Side table indexed by ``item_id`` (``title``, ``year``, ``genres`` as a
            ``|``-joined string, and MeLU's ``rate``, ``director``, ``actors`` when present) or None.
        source: The folder or file read.
        fmt: ``ml-100k``, ``ml-1m`` or ``table``.
        n_input: Rating rows read.
        rejected: ``(row, input, reason)`` of each rejected rating row (row is 0-based).
        implicit: The table had no rating column: every row was read as a positive.
    """

    ratings: pd.DataFrame
    users: pd.DataFrame | None
    items: pd.DataFrame | None
    source: str
    fmt: str
    n_input: int
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    implicit: bool = False

    @property
    def n_rejected(self) -> int:
        """Rating rows rejected."""
        return len(self.rejected)

    def write_quarantine(self, path: Path) -> int:
        """Write the rejected rows to ``path`` (CSV with ``row,input,reason``); returns the count."""
        with QuarantineWriter(Path(path)) as q:
            for row, value, reason in self.rejected:
                q.add(row, value, reason)
        return len(self.rejected)

    def user_counts(self) -> pd.Series:
        """Ratings per user."""
        return self.ratings.groupby("user_id", sort=False).size()


def _read_lines(path: Path, sep: str, n_fields: tuple[int, ...]) -> list[list[str]]:
    """Split each non-empty line of a latin-1 text file on ``sep``; check the field count."""
    out = []
    with open(path, encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(sep)
            if len(parts) not in n_fields:
                raise SchemaError(
                    f"{path} line {lineno}: {len(parts)} fields separated by {sep!r}, expected "
                    f"{' or '.join(map(str, n_fields))}: {line[:80]!r}"
                )
            out.append(parts)
    return out


def clean_ratings(
    raw: pd.DataFrame, where: str, max_bad_fraction: float = 0.05
) -> tuple[pd.DataFrame, list[tuple[int, str, str]]]:
    """Validate raw ``user_id``, ``item_id``, ``rating`` columns (any dtype) row by row.

    Rejects: an empty id, a rating that is not a number, NaN, or outside [1, 5], and every
    repeat of a (user, item) pair after its first valid row. Returns the kept rows (ids as str,
    rating float32) and the rejected ``(row, input, reason)``.

    Raises:
        InputError: more than ``max_bad_fraction`` of the rows are rejected (a wrong file or
            separator, not a few bad rows).
    """
    n = len(raw)
    if n == 0:
        raise InputError(f"{where}: no rating rows (the file is empty or has only a header)")
    users = raw["user_id"].astype("string").str.strip()
    items = raw["item_id"].astype("string").str.strip()
    rating = pd.to_numeric(raw["rating"], errors="coerce").astype("float64")
    reason = pd.Series([""] * n, index=raw.index, dtype=object)
    reason[users.isna() | (users == "")] = "empty user_id"
    reason[(reason == "") & (items.isna() | (items == ""))] = "empty item_id"
    not_num = (
        rating.isna()
        & raw["rating"].notna()
        & ~raw["rating"].astype("string").str.strip().str.lower().isin(["nan", "na", ""])
    )
    reason[(reason == "") & not_num] = "rating is not a number"
    reason[(reason == "") & rating.isna()] = "rating is NaN or missing"
    out_of_range = (rating < RATING_MIN) | (rating > RATING_MAX)
    reason[(reason == "") & out_of_range] = f"rating outside [{RATING_MIN:g}, {RATING_MAX:g}]"
    ok = reason == ""
    dup = pd.Series(False, index=raw.index)
    dup[ok] = pd.DataFrame({"u": users[ok], "i": items[ok]}).duplicated(keep="first")
    reason[dup] = "duplicate (user_id, item_id): an earlier row rates this pair"
    ok = reason == ""
    rejected = []
    if (~ok).any():
        bad_idx = np.flatnonzero(~ok.to_numpy())
        text = (
            raw.iloc[bad_idx][["user_id", "item_id", "rating"]]
            .astype(object)
            .map(str)
            .agg("::".join, axis=1)
        )
        rejected = [
            (int(i), t, str(r))
            for i, t, r in zip(bad_idx, text.tolist(), reason.iloc[bad_idx].tolist(), strict=True)
        ]
    if n and len(rejected) / n > max_bad_fraction:
        first = rejected[0]
        raise InputError(
            f"{where}: {len(rejected)} of {n} rating rows are invalid (more than "
            f"{max_bad_fraction:.0%}); first: row {first[0]} {first[1]!r}: {first[2]}. "
            "Check the file format and separator"
        )
    if rejected:
        logger.warning("%s: rejected %d of %d rating rows", where, len(rejected), n)
    kept = pd.DataFrame(
        {
            "user_id": users[ok].astype(str).to_numpy(),
            "item_id": items[ok].astype(str).to_numpy(),
            "rating": rating[ok].astype(np.float32).to_numpy(),
        }
    )
    return kept, rejected


def _year(title: str) -> float:
    m = _YEAR.search(title.strip())
    return float(m.group(1)) if m else float("nan")


def load_ml1m(path: Path, max_bad_fraction: float = 0.05) -> Interactions:
    """MovieLens 1M: ``users.dat``, ``movies.dat`` and ``ratings.dat`` or
    ``ratings_no_timestamp.dat`` (``UserID::MovieID::Rating[::Timestamp]``, latin-1); MeLU's
    ``melu/movies_extrainfos.dat`` is merged into the item table when present."""
    path = Path(path)
    rpath = next(
        (path / n for n in ("ratings.dat", "ratings_no_timestamp.dat") if (path / n).exists()),
        None,
    )
    if rpath is None:
        raise InputError(
            f"{path}: no ratings.dat or ratings_no_timestamp.dat (MovieLens 1M layout)"
        )
    rows = _read_lines(rpath, "::", (3, 4))
    raw = pd.DataFrame([r[:3] for r in rows], columns=["user_id", "item_id", "rating"])
    ratings, rejected = clean_ratings(raw, str(rpath), max_bad_fraction)
    users = items = None
    if (path / "users.dat").exists():
        u = _read_lines(path / "users.dat", "::", (5,))
        users = pd.DataFrame(u, columns=["user_id", "gender", "age", "occupation", "zip"])
        users = users.set_index("user_id")
    if (path / "movies.dat").exists():
        m = _read_lines(path / "movies.dat", "::", (3,))
        items = pd.DataFrame(m, columns=["item_id", "title", "genres"]).set_index("item_id")
        items["year"] = [_year(t) for t in items["title"]]
        melu = path / "melu" / "movies_extrainfos.dat"
        if melu.exists():
            items = items.join(_read_melu(melu), how="left")
    return Interactions(ratings, users, items, str(path), "ml-1m", len(raw), rejected)


def _read_melu(path: Path) -> pd.DataFrame:
    """MeLU's ``movies_extrainfos.dat``: id, title, year, rate, released, genre, director,
    writer, actors, plot, poster (``::``-separated, latin-1). Keeps rate, director, actors."""
    rows = []
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\r\n").split("::")
            if len(parts) < 9:
                continue  # malformed metadata lines only lose side features
            rows.append((parts[0], parts[3], parts[6], parts[8]))
    df = pd.DataFrame(rows, columns=["item_id", "rate", "director", "actors"])
    return df.drop_duplicates("item_id").set_index("item_id")


def load_ml100k(path: Path, max_bad_fraction: float = 0.05) -> Interactions:
    """MovieLens 100K: ``u.data`` (tab-separated user, item, rating, timestamp), ``u.user``,
    ``u.item`` (latin-1, ``|``-separated, 19 genre flags)."""
    path = Path(path)
    rows = _read_lines(path / "u.data", "\t", (3, 4))
    raw = pd.DataFrame([r[:3] for r in rows], columns=["user_id", "item_id", "rating"])
    ratings, rejected = clean_ratings(raw, str(path / "u.data"), max_bad_fraction)
    users = items = None
    if (path / "u.user").exists():
        u = _read_lines(path / "u.user", "|", (5,))
        users = pd.DataFrame(u, columns=["user_id", "age", "gender", "occupation", "zip"])
        users = users.set_index("user_id")[["gender", "age", "occupation", "zip"]]
    if (path / "u.item").exists():
        it = _read_lines(path / "u.item", "|", (24,))
        items = pd.DataFrame(
            {
                "item_id": [r[0] for r in it],
                "title": [r[1] for r in it],
                "genres": [
                    "|".join(g for g, f in zip(ML100K_GENRES, r[5:], strict=True) if f == "1")
                    for r in it
                ],
                "year": [
                    _year(r[1]) if _year(r[1]) == _year(r[1]) else _date_year(r[2]) for r in it
                ],
            }
        ).set_index("item_id")
    return Interactions(ratings, users, items, str(path), "ml-100k", len(raw), rejected)


def _date_year(date: str) -> float:
    m = re.search(r"(\d{4})$", date.strip())
    return float(m.group(1)) if m else float("nan")


_ALIASES = {
    "user_id": ("user_id", "user", "userid", "UserID"),
    "item_id": ("item_id", "item", "itemid", "movie_id", "MovieID"),
    "rating": ("rating", "Rating", "score"),
}


IMPLICIT_RATING = 5.0
"""The rating given to each row of an interactions table without ratings (clicks, purchases):
every interaction is a positive, above the "liked" threshold of 4."""


def with_implicit_rating(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """``df`` unchanged when it has a rating column (any known name); else a copy with
    ``rating = IMPLICIT_RATING`` on every row (logged), for implicit-feedback tables."""
    if any(c in df.columns for c in _ALIASES["rating"]):
        return df
    logger.warning(
        "%s: no rating column; every row is read as a positive (implicit feedback)", where
    )
    return df.assign(rating=IMPLICIT_RATING)


def canonical_columns(df: pd.DataFrame, where: str, required: tuple[str, ...]) -> pd.DataFrame:
    """``df`` with its user / item / rating columns renamed to ``user_id``/``item_id``/``rating``.

    Raises:
        SchemaError: a required column has none of its known names (naming ``where``).
    """
    cols = {}
    for key in required:
        hit = next((c for c in _ALIASES[key] if c in df.columns), None)
        if hit is None:
            raise SchemaError(
                f"{where}: no {key} column (looked for {', '.join(_ALIASES[key])}); "
                f"columns are {list(df.columns)}"
            )
        cols[hit] = key
    return df.rename(columns=cols)


def load_table(
    ratings_path: Path,
    users_path: Path | None = None,
    items_path: Path | None = None,
    max_bad_fraction: float = 0.05,
    implicit_ok: bool = True,
) -> Interactions:
    """A generic interactions table (CSV/TSV/Parquet: user, item, rating[, timestamp]) with
    optional user and item feature tables keyed by ``user_id`` / ``item_id``.

    Without a rating column the table is implicit feedback (``with_implicit_rating``: every row a
    positive) unless ``implicit_ok`` is false, when the missing column is an error."""
    ratings_path = Path(ratings_path)
    frame = read_frame(ratings_path)
    implicit = implicit_ok and not any(c in frame.columns for c in _ALIASES["rating"])
    if implicit:
        frame = with_implicit_rating(frame, str(ratings_path))
    df = canonical_columns(frame, str(ratings_path), ("user_id", "item_id", "rating"))
    ratings, rejected = clean_ratings(df, str(ratings_path), max_bad_fraction)
    users = items = None
    if users_path is not None:
        users = canonical_columns(read_frame(Path(users_path)), str(users_path), ("user_id",))
        users = users.astype({"user_id": str}).set_index("user_id")
    if items_path is not None:
        items = canonical_columns(read_frame(Path(items_path)), str(items_path), ("item_id",))
        items = items.astype({"item_id": str}).set_index("item_id")
        if "year" in items:
            items["year"] = pd.to_numeric(items["year"], errors="coerce")
    return Interactions(
        ratings, users, items, str(ratings_path), "table", len(df), rejected, implicit
    )


def load_interactions(path: Path, max_bad_fraction: float = 0.05) -> Interactions:
    """Detect the layout of ``path`` and load it.

    A folder with ``u.data`` is MovieLens 100K; one with ``ratings.dat`` or
    ``ratings_no_timestamp.dat`` is MovieLens 1M; one with ``interactions.{csv,tsv,parquet}`` (and
    optional ``users.*`` / ``items.*``) is a generic table; a file is read as an interactions table.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_file():
        return load_table(path, max_bad_fraction=max_bad_fraction)
    if (path / "u.data").exists():
        return load_ml100k(path, max_bad_fraction)
    if (path / "ratings.dat").exists() or (path / "ratings_no_timestamp.dat").exists():
        return load_ml1m(path, max_bad_fraction)
    for suffix in TABLE_SUFFIXES:
        if (path / f"interactions{suffix}").exists():

            def side(stem: str) -> Path | None:
                return next(
                    (path / f"{stem}{s}" for s in TABLE_SUFFIXES if (path / f"{stem}{s}").exists()),
                    None,
                )

            return load_table(
                path / f"interactions{suffix}", side("users"), side("items"), max_bad_fraction
            )
    raise InputError(
        f"{path}: not a MovieLens folder (u.data, or ratings.dat / ratings_no_timestamp.dat) "
        "and no interactions.csv/.tsv/.parquet"
    )
