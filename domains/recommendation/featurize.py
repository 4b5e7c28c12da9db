"""Item side features (numpy only): genres, release year, MeLU's rate/director/actors.

The featurizer is fitted on the training catalogue (its vocabularies), described by ``spec()``
and hashed like the molecule featurizer, so an artifact can refuse items featurized another way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metascreen.domains.errors import ArtifactMismatchError
from metascreen.domains.io import canonical_json_hash
from metascreen.domains.types import FloatArray

FEATURIZER_VERSION = 1


def _split(value: object, sep: str) -> list[str]:
    if not isinstance(value, str) or not value.strip() or value.strip().lower() == "nan":
        return []
    return [v.strip() for v in value.split(sep) if v.strip()]


@dataclass(slots=True)
class ItemFeaturizer:
    """Multi-hot genres, scaled year (+ missing flag), MeLU rate one-hot, hashed director/actors.

    Attributes:
        genres: Genre vocabulary (fitted on the training catalogue).
        rates: MPAA-rate vocabulary (MeLU metadata; empty without it).
        hash_buckets: Buckets for hashed directors and for hashed actors (0 = off).
        year_center: Year mapped to 0; ``year_scale`` years map to 1.
    """

    genres: list[str] = field(default_factory=list)
    rates: list[str] = field(default_factory=list)
    hash_buckets: int = 16
    year_center: float = 1990.0
    year_scale: float = 20.0

    @property
    def dim(self) -> int:
        """Feature length."""
        return len(self.genres) + 2 + len(self.rates) + 2 * self.hash_buckets

    def fit(self, items: pd.DataFrame | None) -> ItemFeaturizer:
        """Vocabularies from an item side table (``genres``; ``rate`` when present)."""
        if items is None:
            return self
        genres: set[str] = set()
        for g in items.get("genres", pd.Series(dtype=object)).tolist():
            genres.update(_split(g, "|"))
        rates = {r for r in items.get("rate", pd.Series(dtype=object)).tolist() if _split(r, "|")}
        self.genres, self.rates = sorted(genres), sorted(str(r).strip() for r in rates)
        return self

    def transform(self, item_ids: list[str], items: pd.DataFrame | None) -> FloatArray:
        """(n, dim) features of ``item_ids``; ids missing from ``items`` get zeros (+ year flag)."""
        x = np.zeros((len(item_ids), self.dim), np.float32)
        x[:, len(self.genres) + 1] = 1.0  # year missing until known
        if items is None or not len(item_ids):
            return x
        table = items.reindex(pd.Index(item_ids))
        g_pos = {g: i for i, g in enumerate(self.genres)}
        r_pos = {r: i for i, r in enumerate(self.rates)}
        off_year = len(self.genres)
        off_rate = off_year + 2
        off_dir = off_rate + len(self.rates)
        off_act = off_dir + self.hash_buckets
        cols = {
            c: table[c].tolist() if c in table else [None] * len(item_ids)
            for c in ("genres", "year", "rate", "director", "actors")
        }
        for n in range(len(item_ids)):
            for g in _split(cols["genres"][n], "|"):
                if g in g_pos:
                    x[n, g_pos[g]] = 1.0
            year = cols["year"][n]
            if year is not None and year == year:
                x[n, off_year] = np.clip((float(year) - self.year_center) / self.year_scale, -3, 3)
                x[n, off_year + 1] = 0.0
            rate = cols["rate"][n]
            if isinstance(rate, str) and rate.strip() in r_pos:
                x[n, off_rate + r_pos[rate.strip()]] = 1.0
            if self.hash_buckets:
                for k, name in enumerate(_split(cols["director"][n], ",")[:2]):
                    x[n, off_dir + zlib.crc32(name.encode()) % self.hash_buckets] += 1.0 / (k + 1)
                for k, name in enumerate(_split(cols["actors"][n], ",")[:4]):
                    x[n, off_act + zlib.crc32(name.encode()) % self.hash_buckets] += 1.0 / (k + 1)
        return x

    def spec(self) -> dict[str, Any]:
        """JSON-able description that determines the output (hashed into artifacts)."""
        return {
            "name": "movielens-item",
            "version": FEATURIZER_VERSION,
            "params": {
                "genres": list(self.genres),
                "rates": list(self.rates),
                "hash_buckets": self.hash_buckets,
                "year_center": self.year_center,
                "year_scale": self.year_scale,
            },
        }

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON spec."""
        return canonical_json_hash(self.spec())

    @classmethod
    def from_spec(cls, spec: dict[str, Any], expected_hash: str | None = None) -> ItemFeaturizer:
        """Rebuild from ``spec()``; raise ``ArtifactMismatchError`` if version or hash differ."""
        if spec.get("name") != "movielens-item" or spec.get("version") != FEATURIZER_VERSION:
            raise ArtifactMismatchError(
                f"item featurizer {spec.get('name')} v{spec.get('version')} in the artifact, this "
                f"code has movielens-item v{FEATURIZER_VERSION}; retrain or install the matching metascreen"
            )
        p = spec["params"]
        feat = cls(
            list(p["genres"]),
            list(p["rates"]),
            int(p["hash_buckets"]),
            float(p["year_center"]),
            float(p["year_scale"]),
        )
        if expected_hash is not None and feat.hash != expected_hash:
            raise ArtifactMismatchError(
                f"item featurizer hash {feat.hash[:12]} differs from the artifact's {expected_hash[:12]}"
            )
        return feat
