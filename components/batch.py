"""batch_predict: a registered version predicts an input file chunk by chunk (``kfloop.batch.job``).

Prints one progress line per chunk (marked for ``kfloop batch run``), writes the job's summary as JSON
and its counts as KFP Metrics, and returns a one-line account of the job.
"""

from kfp.dsl import Artifact, Metrics, Output


def batch_predict(
    model_ref: str,
    input_uri: str,
    output_uri: str,
    rejects_uri: str,
    id_column: str,
    chunk_rows: int,
    capture: bool,
    drift: bool,
    summary: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    import json
    from pathlib import Path

    from kfloop.batch.job import BatchOptions, run_batch
    from kfloop.config import Settings
    from kfloop.names import PROGRESS_MARKER

    options = BatchOptions(
        model_ref, input_uri, output_uri, rejects_uri, id_column, chunk_rows=chunk_rows, capture=capture, drift=drift
    )
    result = run_batch(options, Settings.from_env(), progress=lambda line: print(PROGRESS_MARKER + line, flush=True))
    Path(summary.path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary.path).write_text(json.dumps(result, indent=1, sort_keys=True))
    for name in ("rows", "predicted", "rejected", "captured", "chunks"):
        metrics.log_metric(name, float(result[name]))
    metrics.log_metric("chunks_drifted", float(result["drift"]["chunks_drifted"]))
    return f"{result['model']}: {result['predicted']} predicted, {result['rejected']} rejected -> {result['output']}"
