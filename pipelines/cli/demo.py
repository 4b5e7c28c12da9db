"""``metascreen demo``: the whole pipeline on the bundled FS-Mol sample, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metascreen.pipelines.cli.common import run


def demo(
    out: Annotated[
        Path | None,
        typer.Option(
            help="report folder (default <results root>/demo-<timestamp>; the results root is "
            "$METASCREEN_RESULTS, else ./metascreen-results)"
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="meta-training steps on the sample", min=1)] = 300,
    repeats: Annotated[
        int, typer.Option(help="evaluation repeats per task", min=1, max=10_000)
    ] = 5,
    flow: Annotated[
        bool,
        typer.Option(
            "--flow/--no-flow",
            help="run as a Prefect flow (embedded backend unless PREFECT_API_URL is set)",
        ),
    ] = True,
) -> None:
    """Run the whole pipeline on the bundled FS-Mol sample and write a report (Markdown + JSON + PNG)."""
    from metascreen.models.serving.artifact import utc_now
    from metascreen.pipelines.results import results_root

    out = out or results_root() / f"demo-{utc_now().replace(':', '').replace('-', '')}"

    def body() -> Path:
        if flow:
            from metascreen.pipelines.flows import demo_flow

            return Path(demo_flow(str(out), steps=steps, repeats=repeats))
        from metascreen.pipelines.demo import run_demo

        return run_demo(out, steps=steps, repeats=repeats)

    path = run(body)
    typer.echo((path / "report.md").read_text())
    typer.echo(f"report: {path.resolve()}")
