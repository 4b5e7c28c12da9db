from __future__ import annotations

import stat
from pathlib import Path

import pytest

from metascreen.domains.io import atomic_write_bytes, temp_path

pytestmark = pytest.mark.unit


def test_outputs_written_through_a_temp_file_are_world_readable(tmp_path: Path) -> None:
    """mkstemp makes 0600 files; reports, plots and score files must not inherit that."""
    out = tmp_path / "plot.png"
    tmp = temp_path(out)
    tmp.write_bytes(b"png")  # what savefig / pyarrow do with the name
    tmp.replace(out)
    atomic_write_bytes(tmp_path / "r.json", b"{}")
    for p in (out, tmp_path / "r.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
