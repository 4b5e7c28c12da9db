"""metascreen: few-shot, meta-learned screening and recommendation.

Subpackages: ``metascreen.domains`` (data loading, featurizing, task and episode sampling;
numpy only), ``metascreen.models`` (learners, training loop, ONNX export and onnxruntime
serving), ``metascreen.pipelines`` (Prefect flows, the typer CLI and the Python API in
``metascreen.pipelines.api``). Importing this package loads neither torch nor prefect.
"""

__version__ = "0.1.0"
