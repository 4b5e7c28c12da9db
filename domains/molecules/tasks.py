"""FS-Mol's stratified support sampler and the training-episode sampler."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit

from metascreen.domains.episodes import Episode, Task
from metascreen.domains.errors import TaskTooSmallError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StratifiedSupportSampler:
    """FS-Mol's evaluation sampler: a support set of ``support_size`` stratified by label, the query
    is all the rest.

    Follows ``fs_mol.data.fsmol_task_sampler.StratifiedTaskSampler`` with ``test_size=None``: the
    task's samples are ordered negatives first, then positives (input order within each class),
    and split by scikit-learn's ``StratifiedShuffleSplit(n_splits=1, train_size=n,
    test_size=N-n, random_state=seed)``. A draw is refused with ``TaskTooSmallError`` when the
    query would have fewer than 2 items, or when the support or the query lacks either class;
    callers skip and count such draws. Same task and seed → same episode.
    """

    support_size: int

    def sample(self, task: Task, seed: int) -> Episode:
        """Draw the episode of ``task`` for ``seed`` or raise ``TaskTooSmallError``."""
        labels = task.labels > 0.5
        neg = np.flatnonzero(~labels)
        pos = np.flatnonzero(labels)
        order = np.concatenate([neg, pos])
        y = np.concatenate([np.zeros(len(neg)), np.ones(len(pos))])
        n = len(order)
        n_query = n - self.support_size
        if n_query < 2:
            raise TaskTooSmallError(
                task.task_id, n, f"support {self.support_size} leaves {n_query} for the query"
            )
        if len(neg) < 2 or len(pos) < 2:
            raise TaskTooSmallError(
                task.task_id, n, f"{len(pos)} actives / {len(neg)} inactives cannot fill both folds"
            )
        splitter = StratifiedShuffleSplit(
            n_splits=1, train_size=self.support_size, test_size=n_query, random_state=seed
        )
        sup, qry = next(iter(splitter.split(np.zeros(n), y)))
        for name, fold in (("support", sup), ("query", qry)):
            n_pos = int(y[fold].sum())
            if not 0 < n_pos < len(fold):
                raise TaskTooSmallError(task.task_id, n, f"the {name} would hold a single class")
        return Episode(
            task=task,
            support=order[sup].astype(np.int64),
            query=order[qry].astype(np.int64),
            seed=seed,
        )


@dataclass(frozen=True, slots=True)
class TrainingEpisodeSampler:
    """Training episodes: a stratified support of ``support_size`` and a query of up to
    ``query_size`` drawn from the rest (seeded with numpy's PCG64, no global state)."""

    support_size: int = 16
    query_size: int = 64

    def sample(self, task: Task, seed: int) -> Episode:
        """Draw a training episode or raise ``TaskTooSmallError``."""
        rng = np.random.default_rng(seed)
        labels = task.labels > 0.5
        pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
        n = len(task)
        if len(pos) < 2 or len(neg) < 2 or n < self.support_size + 2:
            raise TaskTooSmallError(task.task_id, n, "too small for a training episode")
        frac = len(pos) / n
        n_pos = int(
            np.clip(round(self.support_size * frac), 1, min(len(pos) - 1, self.support_size - 1))
        )
        n_neg = self.support_size - n_pos
        if n_neg > len(neg) - 1:
            raise TaskTooSmallError(task.task_id, n, "too few inactives for the support")
        pos, neg = rng.permutation(pos), rng.permutation(neg)
        support = np.concatenate([pos[:n_pos], neg[:n_neg]])
        rest = rng.permutation(np.concatenate([pos[n_pos:], neg[n_neg:]]))
        return Episode(task=task, support=support, query=rest[: self.query_size], seed=seed)
