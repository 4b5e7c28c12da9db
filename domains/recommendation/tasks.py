"""Users as few-shot tasks: MeLU's cold-user protocol and seeded user hold-out splits.

MeLU (Lee et al., KDD 2019) evaluates users with 13–100 ratings; per user, 10 ratings drawn at
random form the query and the rest the support. The draw for a user depends only on the seed and
the user's id (not on which other users are loaded), so the same user gets the same split in any
data folder.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metascreen.domains.episodes import Episode, Task, TaskSet
from metascreen.domains.errors import ConfigError, TaskTooSmallError
from metascreen.domains.recommendation.load import Interactions

MIN_RATINGS, MAX_RATINGS, N_QUERY = 13, 100, 10


def user_seed(seed: int, user_id: str) -> list[int]:
    """Seed sequence of one user's draw: (seed, crc32(user_id))."""
    return [int(seed), zlib.crc32(user_id.encode("utf-8"))]


def build_user_tasks(
    ratings: pd.DataFrame,
    items: list[str],
    min_ratings: int = MIN_RATINGS,
    max_ratings: int | None = MAX_RATINGS,
    source: str = "",
) -> TaskSet:
    """One task per user with ``min_ratings``..``max_ratings`` ratings of items in ``items``.

    ``Task.item_idx`` indexes ``items`` (ratings of items outside it are left out; callers
    check that there are none or count them); ``Task.labels`` are the ratings. Tasks are sorted by
    user id.
    """
    index = pd.Index(items)
    pos = index.get_indexer(ratings["item_id"])
    known = pos >= 0
    df = pd.DataFrame(
        {
            "u": ratings["user_id"].to_numpy()[known],
            "i": pos[known],
            "r": ratings["rating"].to_numpy()[known],
        }
    )
    tasks = []
    for uid, g in df.groupby("u", sort=True):
        n = len(g)
        if n < min_ratings or (max_ratings is not None and n > max_ratings):
            continue
        tasks.append(
            Task(
                task_id=str(uid),
                item_idx=g["i"].to_numpy(np.int64),
                labels=g["r"].to_numpy(np.float32),
            )
        )
    return TaskSet(tasks=tasks, items=list(items), source=source)


@dataclass(frozen=True, slots=True)
class MeluSampler:
    """MeLU's split: ``n_query`` ratings drawn at random (seeded per user) form the query, the
    rest the support."""

    n_query: int = N_QUERY

    def sample(self, task: Task, seed: int) -> Episode:
        """Same task and seed → same episode; refuses tasks with fewer than ``n_query + 1`` ratings."""
        n = len(task)
        if n < self.n_query + 1:
            raise TaskTooSmallError(task.task_id, n, f"needs more than {self.n_query} ratings")
        perm = np.random.default_rng(user_seed(seed, task.task_id)).permutation(n)
        return Episode(
            task=task,
            support=np.sort(perm[self.n_query :]).astype(np.int64),
            query=perm[: self.n_query].astype(np.int64),
            seed=seed,
        )


@dataclass(frozen=True, slots=True)
class RatingEpisodeSampler:
    """Training episodes in MeLU's shape: a user's ratings capped at ``max_ratings`` (a random
    subset for heavier users), ``n_query`` of them as query and the rest as support."""

    n_query: int = N_QUERY
    max_ratings: int = MAX_RATINGS

    def sample(self, task: Task, seed: int) -> Episode:
        """Draw a training episode or raise ``TaskTooSmallError``."""
        n = len(task)
        if n < self.n_query + 3:
            raise TaskTooSmallError(task.task_id, n, "too small for a training episode")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        if n > self.max_ratings:
            perm = perm[: int(rng.integers(MIN_RATINGS, self.max_ratings + 1))]
        return Episode(
            task=task,
            support=perm[self.n_query :].astype(np.int64),
            query=perm[: self.n_query].astype(np.int64),
            seed=seed,
        )


def holdout_users(user_ids: list[str], fraction: float, split_seed: int) -> set[str]:
    """A seeded random ``fraction`` of ``user_ids`` (sorted first, so the draw is reproducible)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout fraction must be in (0, 1), got {fraction}")
    ids = sorted(set(user_ids))
    n = int(np.ceil(fraction * len(ids)))
    perm = np.random.default_rng([int(split_seed), 7919]).permutation(len(ids))
    return {ids[i] for i in perm[:n]}


@dataclass(slots=True)
class RatingSplit:
    """Ratings split by user into training and hold-out users."""

    train: pd.DataFrame
    holdout: set[str]


def split_users(inter: Interactions, fraction: float, split_seed: int) -> RatingSplit:
    """Hold out a seeded ``fraction`` of all users (0 = none)."""
    if fraction <= 0:
        return RatingSplit(inter.ratings, set())
    hold = holdout_users(inter.ratings["user_id"].unique().tolist(), fraction, split_seed)
    return RatingSplit(inter.ratings[~inter.ratings["user_id"].isin(hold)], hold)


def catalogue(inter: Interactions) -> list[str]:
    """Every item id rated or listed in the item table, sorted."""
    ids = set(inter.ratings["item_id"].unique().tolist())
    if inter.items is not None:
        ids |= {str(i) for i in inter.items.index}
    return sorted(ids, key=lambda s: (len(s), s))


LIKED = 4.0


def user_ratings(
    ratings: pd.DataFrame, item_ids: list[str]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(user id, catalogue positions, ratings) of every user with 13–100 ratings, in user-id
    order; the user's ratings of items outside ``item_ids`` count towards the 13–100 but are
    left out."""
    pos = pd.Index(item_ids).get_indexer(ratings["item_id"])
    df = pd.DataFrame(
        {"u": ratings["user_id"].to_numpy(), "i": pos, "r": ratings["rating"].to_numpy()}
    )
    for uid, g in df.groupby("u", sort=True):
        if not MIN_RATINGS <= len(g) <= MAX_RATINGS:
            continue
        g = g[g["i"] >= 0]
        yield str(uid), g["i"].to_numpy(), g["r"].to_numpy()


def liked_task(user_id: str, positions: np.ndarray, rated: np.ndarray, n_items: int) -> Task:
    """The user's task: the whole catalogue of ``n_items``, label 1 = rated ≥ 4."""
    labels = np.zeros(n_items, np.float32)
    labels[positions] = (rated >= LIKED).astype(np.float32)
    return Task(user_id, np.arange(n_items, dtype=np.int64), labels)


def user_tasks(ratings: pd.DataFrame, item_ids: list[str]) -> list[Task]:
    """One task per user with 13–100 ratings: the whole catalogue, label 1 = rated ≥ 4."""
    n = len(item_ids)
    return [liked_task(u, pos, r, n) for u, pos, r in user_ratings(ratings, item_ids)]
