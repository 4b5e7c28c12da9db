"""``metascreen demo`` reads the sample in several stages; each data warning is logged once."""

from __future__ import annotations

import logging

import pytest

from metascreen.pipelines.demo import warn_once


@pytest.mark.unit
def test_loader_warnings_are_logged_once_inside_the_demo(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("metascreen.domains.molecules.load")
    with caplog.at_level(logging.WARNING), warn_once():
        for _ in range(3):  # prepare, train and evaluate each load the same folder
            log.warning("skipping %s: no valid rows", "a.jsonl.gz")
            log.warning("%s: excluded %d rows with invalid SMILES", "train", 101)
        log.warning("skipping %s: no valid rows", "b.jsonl.gz")  # a different message
    assert [r.getMessage() for r in caplog.records] == [
        "skipping a.jsonl.gz: no valid rows",
        "train: excluded 101 rows with invalid SMILES",
        "skipping b.jsonl.gz: no valid rows",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # outside the demo nothing is filtered
        log.warning("skipping %s: no valid rows", "a.jsonl.gz")
    assert len(caplog.records) == 1
