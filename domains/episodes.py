"""Few-shot task and episode types shared by every domain (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from metascreen.domains.types import FloatArray, IntArray


@dataclass(frozen=True, slots=True)
class Task:
    """One few-shot task: an assay (molecules) or a user (recommendation).

    Attributes:
        task_id: Stable identifier, e.g. ``CHEMBL1000314``.
        item_idx: (n,) rows of the task's items in the owning ``TaskSet.items``.
        labels: (n,) float32 labels (1.0 active / 0.0 inactive, or a rating).
    """

    task_id: str
    item_idx: IntArray
    labels: FloatArray

    def __len__(self) -> int:
        """Number of labelled items in the task."""
        return int(self.labels.shape[0])

    @property
    def n_positive(self) -> int:
        """Number of items labelled 1."""
        return int((self.labels > 0.5).sum())


@dataclass(frozen=True, slots=True)
class Episode:
    """A support/query split of one task, drawn with ``seed``.

    Attributes:
        task: The task the indices refer to.
        support: (n_support,) positions in ``task`` used for adaptation.
        query: (n_query,) positions in ``task`` to predict.
        seed: The seed that produced the draw.
    """

    task: Task
    support: IntArray
    query: IntArray
    seed: int

    @property
    def support_items(self) -> IntArray:
        """(n_support,) item rows of the support set."""
        return self.task.item_idx[self.support]

    @property
    def query_items(self) -> IntArray:
        """(n_query,) item rows of the query set."""
        return self.task.item_idx[self.query]

    @property
    def support_labels(self) -> FloatArray:
        """(n_support,) support labels."""
        return self.task.labels[self.support]

    @property
    def query_labels(self) -> FloatArray:
        """(n_query,) query labels."""
        return self.task.labels[self.query]


@dataclass(slots=True)
class TaskSet:
    """Tasks over one shared item vocabulary (unique canonical SMILES, or item ids).

    Attributes:
        tasks: The tasks, in a stable order (sorted by ``task_id``).
        items: Unique item keys; ``Task.item_idx`` indexes into this list.
        source: Where the tasks were read from.
        n_invalid: Rows excluded because their item was invalid (e.g. unparsable SMILES).
        skipped: ``{file: reason}`` for inputs skipped whole (e.g. empty task files).
    """

    tasks: list[Task]
    items: list[str]
    source: str = ""
    n_invalid: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Total labelled rows over all tasks."""
        return sum(len(t) for t in self.tasks)

    def subset(self, task_ids: list[str]) -> TaskSet:
        """Return a TaskSet with only ``task_ids`` (same item vocabulary)."""
        wanted = set(task_ids)
        return TaskSet(
            tasks=[t for t in self.tasks if t.task_id in wanted],
            items=self.items,
            source=self.source,
            n_invalid=self.n_invalid,
            skipped=dict(self.skipped),
        )


class EpisodeSampler(Protocol):
    """Draws a support/query split of a task; the same seed gives the same episode."""

    def sample(self, task: Task, seed: int) -> Episode:
        """Draw one episode of ``task`` with ``seed`` or raise ``SamplingError``."""
        ...
