"""The monitoring pipeline: one ``monitor`` step (``components/monitor.py``) that runs every check over
a model's captures of a time range, writes the report as KFP Markdown/HTML artifacts and emits the
alerts as CloudEvents (``kfloop.steps.monitor``), as SageMaker Model Monitor's scheduled jobs do.

Only wiring lives here. Compile with ``kfloop monitor compile`` (writes ``pipelines/monitoring.yaml``,
committed), run it locally with ``kfloop monitor run``, on Kubeflow with ``kfloop monitor submit``, on
a calendar with ``kfloop monitor schedule``. The step reads storage settings and credentials as the
other steps do (the ConfigMap ``kfloop-config`` and the Secret ``kfloop-s3``) and is never cached: it
reads live state (captures, labels, the registry).

(No ``from __future__ import annotations`` here: KFP reads the pipeline function's real annotations.)
"""

from pathlib import Path

from kfp import compiler, dsl

from kfloop.components import build_components
from kfloop.config import DEFAULT_IMAGE
from kfloop.pipelines.training import configure_task

PIPELINE_NAME = "kfloop-monitoring"
YAML_PATH = Path(__file__).with_name("monitoring.yaml")
TASK_NAME = "monitor"  # the step's task (and its folder in a kfp.local run)


def build_pipeline(image: str = DEFAULT_IMAGE):
    """The pipeline function with its component on ``image``."""
    c = build_components(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Check a model's captured traffic of a time range window by window (feature drift, "
        "quality on labels, estimated quality, ...): a Markdown/HTML report and the alerts as CloudEvents.",
    )
    def monitoring(
        model: str = "churn",
        since: str = "1d",
        until: str = "",
        window_rows: int = 500,
        min_rows: int = 50,
        min_labels: int = 30,
        quality_metric: str = "",
        quality_threshold: float = -1.0,
        quality_margin: float = 0.1,
        estimated_threshold: float = -1.0,
        emit: bool = True,
        sink_url: str = "",
    ):
        configure_task(
            c.monitor(
                model=model,
                since=since,
                until=until,
                window_rows=window_rows,
                min_rows=min_rows,
                min_labels=min_labels,
                quality_metric=quality_metric,
                quality_threshold=quality_threshold,
                quality_margin=quality_margin,
                estimated_threshold=estimated_threshold,
                emit=emit,
                sink_url=sink_url,
            ),
            cpu="1",
            memory="2G",
        ).set_display_name(TASK_NAME)

    return monitoring


def compile_pipeline(path: str | Path = YAML_PATH, image: str = DEFAULT_IMAGE) -> Path:
    """Compile the pipeline to YAML; byte-identical for the same source, image and kfp version."""
    compiler.Compiler().compile(build_pipeline(image), str(path))
    return Path(path)
