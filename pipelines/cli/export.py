"""``metascreen export``: re-export a model's weights to ONNX with a parity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from metascreen.pipelines.cli.common import run


def export(
    model_dir: Annotated[Path, typer.Argument(help="existing model artifact folder")],
    out: Annotated[Path, typer.Option(help="new artifact folder")],
    weights_dtype: Annotated[
        Literal["float16", "int8", "float32"] | None,
        typer.Option(
            help="molecule models: storage of the large weight tensors (default: the source's)"
        ),
    ] = None,
) -> None:
    """Re-export a model's weights to ONNX (dynamic sizes); fails unless onnxruntime matches torch within 1e-4."""

    def body() -> Path:
        if (model_dir / "items.npz").exists():  # a movielens rating predictor
            from metascreen.models.workflows.movielens import export_rating_model

            return export_rating_model(model_dir, out)
        from metascreen.models.workflows.molecules import export_model

        return export_model(model_dir, out, weights_dtype)

    path = run(body)
    meta = json.loads((path / "metadata.json").read_text())
    typer.echo(
        f"exported {path / 'model.onnx'} (parity max |diff| {meta['onnx']['parity_max_abs_diff']:.2e})"
    )
