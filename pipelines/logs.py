"""The logger of code that runs inside Prefect flows and tasks, and also outside them."""

from __future__ import annotations

import logging

from prefect.logging import get_run_logger


def run_logger(fallback: logging.Logger) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow or task run, else ``fallback`` (e.g. ``.fn()`` in tests)."""
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run context (e.g. .fn() in tests)
        return fallback
