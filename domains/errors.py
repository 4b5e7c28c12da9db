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


def _reduce_sampling(err: SamplingError) -> tuple[object, tuple[str, int, str]]:
    return (type(err), (err.task_id, err.n_items, err.reason))


SamplingError.__reduce__ = _reduce_sampling  # type: ignore[assignment,method-assign]
# (raised inside forked workers, it must survive the pickle trip to the parent)


class OptionError(ConfigError):
    """A command-line option is out of range or inconsistent with another; names the option."""


def translate_error(err: BaseException) -> InputError | None:
    """An unexpected library error that is really about the input, as an ``InputError``.

    The CLI's backstop: file-system errors (naming their file), undecodable text, corrupt
    compressed or columnar data, and value errors raised deep in a library become one readable
    line instead of a traceback. Anything else (a bug) returns None.
    """
    import zlib

    if isinstance(err, MetascreenError):
        return err if isinstance(err, InputError) else InputError(str(err))
    if isinstance(err, OSError) and getattr(err, "filename", None):
        return InputError(f"{err.filename}: {err.strerror or err}")
    if isinstance(err, UnicodeDecodeError):
        return InputError(f"cannot decode text as {err.encoding} ({err.reason}); expected UTF-8")
    if isinstance(err, EOFError | zlib.error | OSError):
        return InputError(f"truncated or corrupt compressed data ({err})")
    if type(err).__module__.startswith("pyarrow"):
        return InputError(f"corrupt or unreadable columnar data ({err})")
    if isinstance(err, ValueError):
        return InputError(str(err))
    return None
