"""Property-based tests (Hypothesis): generated malformed tables and option values never produce
a traceback or a silently dropped row. Example counts are small to keep the suite fast."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from metascreen.domains.errors import MetascreenError
from metascreen.domains.molecules.load import iter_table_chunks, load_table_tasks, read_table
from metascreen.domains.recommendation.load import clean_ratings, load_table
from metascreen.pipelines.cli.main import app

T = TypeVar("T")

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("cached_cli")]
FAST = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

cells = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "CCO",
            "c1ccccc1",
            "C1CC",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "",
            " ",
            "1",
            "0",
            "1.0",
            "0.0",
            "true",
            "\x00",
            "é",
            '"',
            ",",
            "\t",
        ]
    ),  # fmt: skip
)
values = st.one_of(
    st.none(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.booleans(),
)


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, str | None]:
    """``fn``'s result, or the message of the ``MetascreenError`` it raised (either is allowed)."""
    try:
        return fn(*args, **kwargs), None
    except MetascreenError as err:
        return None, str(err)


def _tmp(suffix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix="ms-prop-")) / f"t{suffix}"


@FAST
@given(
    header=st.lists(st.sampled_from(["SMILES", "smiles", "label", "x", "", "SMILES "]), max_size=4),
    rows=st.lists(st.lists(cells, max_size=5), max_size=8),
    sep=st.sampled_from([",", "\t"]),
    raw=st.binary(max_size=40),
)
def test_text_tables_load_fully_or_fail_with_an_input_error(
    header: list[str], rows: list[list[str]], sep: str, raw: bytes
) -> None:
    path = _tmp(".csv" if sep == "," else ".tsv")
    text = sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows)
    path.write_bytes(text.encode("utf-8", "surrogatepass") + raw)
    ts, err = attempt(load_table_tasks, path)
    if ts is None:
        assert err is not None and str(path) in err  # the error names the file
        return
    n_rows = len(read_table(path))
    # every data row is either a kept compound or counted as invalid: none dropped silently
    assert sum(len(t.labels) for t in ts.tasks) + ts.n_invalid == n_rows


@FAST
@given(
    smiles=st.lists(st.one_of(st.none(), cells, st.integers(), st.floats()), max_size=12),
    chunk=st.integers(1, 5),
)
def test_streamed_library_rows_are_numbered_without_gaps(smiles: list[object], chunk: int) -> None:
    path = _tmp(".parquet")
    pd.DataFrame({"SMILES": pd.Series(smiles, dtype=object).astype(str)}).to_parquet(path)
    rows = [r for df in iter_table_chunks(path, chunk) for r in df["row"].tolist()]
    assert rows == list(range(len(smiles)))


@FAST
@given(
    garbage=st.binary(min_size=0, max_size=200),
    suffix=st.sampled_from([".parquet", ".csv", ".tsv", ".smi", ".sdf"]),
)
def test_garbage_files_are_refused_naming_the_file(garbage: bytes, suffix: str) -> None:
    path = _tmp(suffix)
    path.write_bytes(garbage)
    _, err = attempt(lambda: list(iter_table_chunks(path, 4)))
    assert err is None or str(path) in err


@FAST
@given(
    st.lists(st.tuples(values, values, values), max_size=15),
    st.floats(0, 1),
)
def test_rating_rows_are_kept_or_rejected_with_a_reason(
    rows: list[tuple[object, object, object]], max_bad: float
) -> None:
    raw = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"], dtype=object)
    out, err = attempt(clean_ratings, raw, "gen.csv", max_bad_fraction=max_bad)
    if out is None:
        assert err is not None and "gen.csv" in err
        return
    kept, rejected = out
    assert len(kept) + len(rejected) == len(raw)
    assert all(reason for _, _, reason in rejected)
    assert len({row for row, _, _ in rejected}) == len(rejected)
    r = kept["rating"].to_numpy(np.float64)
    assert np.isfinite(r).all() and ((r >= 1) & (r <= 5)).all()
    assert not kept.duplicated(["user_id", "item_id"]).any()


@FAST
@given(st.lists(st.tuples(values, values, values), max_size=10))
def test_rating_parquet_files_load_or_fail_naming_the_file(
    rows: list[tuple[object, object, object]],
) -> None:
    path = _tmp(".parquet")
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"], dtype=object).astype(str)
    df.to_parquet(path)
    inter, err = attempt(load_table, path, max_bad_fraction=0.5)
    if inter is None:
        assert err is not None and str(path) in err
        return
    assert len(inter.ratings) + inter.n_rejected == inter.n_input == len(rows)


# -- option validation ---------------------------------------------------------------------------
runner = CliRunner()
numbers = st.one_of(
    st.integers(-5, 40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "x", "1e3", "0x10", "nan", "inf", "-0", "1,2"]),
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    budget=numbers,
    batch=numbers,
    init=numbers,
    fraction=numbers,
    repeats=numbers,
)
def test_simulate_options_fail_naming_the_option_or_reach_the_data(
    budget: str, batch: str, init: str, fraction: str, repeats: str
) -> None:
    res = runner.invoke(
        app,
        ["simulate", "molecules", "/nonexistent/tasks", "--policy", "random", "--budget", budget,
         "--batch", batch, "--init", init, "--active-fraction", fraction, "--repeats", repeats],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    msg = errors[0]
    if "/nonexistent/tasks" in msg:  # every option was valid: the (missing) data is the error
        b, n, f, r = int(budget), int(batch), float(fraction), int(repeats)
        assert 1 <= n <= b and int(init) >= 0 and 0 < f <= 1 and r >= 1
        assert not math.isnan(f)
    else:
        assert any(
            f"'{o}'" in msg
            for o in ("--budget", "--batch", "--init", "--active-fraction", "--repeats")
        ), msg


@settings(max_examples=30, deadline=None, derandomize=True)
@given(support=numbers, repeats=numbers, seed=numbers)
def test_evaluate_options_fail_naming_the_option_or_reach_the_data(
    support: str, repeats: str, seed: str
) -> None:
    res = runner.invoke(
        app,
        ["evaluate", "molecules", "/nonexistent/tasks", "--model", "knn", "--support-size",
         support, "--repeats", repeats, "--seed", seed],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    if "/nonexistent/tasks" not in errors[0]:
        assert any(f"'{o}'" in errors[0] for o in ("--support-size", "--repeats", "--seed"))
    else:
        assert int(support) >= 1 and int(repeats) >= 1 and 0 <= int(seed) < 2**32
