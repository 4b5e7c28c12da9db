"""Exception hierarchy. Input errors subclass ValueError; each message names where and what."""

from __future__ import annotations


class MetascreenError(Exception):
    """Base class for every error metascreen raises on purpose."""


class InputError(MetascreenError, ValueError):
    """Bad user input: a missing file, a wrong column, an unreadable value."""


class SchemaError(InputError):
    """A file lacks a required field or has one of the wrong type."""


class ConfigError(MetascreenError, ValueError):
    """A configuration value is out of range or inconsistent."""


class ArtifactMismatchError(MetascreenError):
    """A model artifact does not match the featurizer, schema or hashes expected of it."""


class SamplingError(MetascreenError):
    """An episode cannot be drawn from a task as requested."""

    def __init__(self, task_id: str, n_items: int, reason: str) -> None:
        """Record the task, its size and why the draw failed."""
        super().__init__(f"task {task_id} ({n_items} items): {reason}")
        self.task_id = task_id
        self.n_items = n_items
        self.reason = reason


class TaskTooSmallError(SamplingError):
    """A task has fewer items (or fewer of one class) than the draw needs."""
