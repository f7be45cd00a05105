"""The batch inference pipeline: one ``batch_predict`` step (``components/batch.py``) that predicts an
input file with a registered version, as SageMaker Batch Transform or Vertex batch prediction do.

Only wiring lives here. Compile with ``kfloop batch compile`` (writes ``pipelines/batch.yaml``,
committed), run it locally with ``kfloop batch run`` or on Kubeflow with ``kfloop batch submit``. The
step reads storage settings and credentials as the training pipeline's steps do (the ConfigMap
``kfloop-config`` and the Secret ``kfloop-s3``), and is never cached: it reads live state (the
registry, the input) and writes outputs and captures.

(No ``from __future__ import annotations`` here: KFP reads the pipeline function's real annotations.)
"""

from pathlib import Path

from kfp import compiler, dsl

from kfloop.components import build_components
from kfloop.config import DEFAULT_IMAGE
from kfloop.pipelines.training import configure_task

PIPELINE_NAME = "kfloop-batch"
YAML_PATH = Path(__file__).with_name("batch.yaml")
TASK_NAME = "batch-predict"  # the step's task (and its folder in a kfp.local run)


def build_pipeline(image: str = DEFAULT_IMAGE):
    """The pipeline function with its component on ``image``."""
    c = build_components(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Predict a CSV/Parquet file with a registered XGBoost model, chunk by chunk: "
        "predictions, rejected rows with their reasons, capture records and a drift check per chunk.",
    )
    def batch(
        model: str = "churn@production",
        input_uri: str = "",
        output_uri: str = "",
        rejects_uri: str = "",
        id_column: str = "",
        chunk_rows: int = 100_000,
        capture: bool = True,
        drift: bool = True,
    ):
        configure_task(
            c.batch_predict(
                model_ref=model,
                input_uri=input_uri,
                output_uri=output_uri,
                rejects_uri=rejects_uri,
                id_column=id_column,
                chunk_rows=chunk_rows,
                capture=capture,
                drift=drift,
            ),
            cpu="2",
            memory="2G",
        ).set_display_name(TASK_NAME)

    return batch


def compile_pipeline(path: str | Path = YAML_PATH, image: str = DEFAULT_IMAGE) -> Path:
    """Compile the pipeline to YAML; byte-identical for the same source, image and kfp version."""
    compiler.Compiler().compile(build_pipeline(image), str(path))
    return Path(path)
