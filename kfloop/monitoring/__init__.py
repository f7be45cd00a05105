"""Monitoring of served traffic.

Owns data capture (``capture``: records written in batches; ``capture_format``: their keys and codecs;
``capture_rows``: one served request as capture records), feature drift detection (``drift``: the
detector; ``drift_window``: windows of live rows; ``drift_monitor``: the background thread that checks
them and emits drift events; ``window_log``: a summary of every checked window), ground truth
(``feedback``) and model quality on labeled traffic (``quality``), and the window signals (``signals``:
the result type; ``multivariate``: a domain classifier; ``attribution``: SHAP ranking by NDCG;
``estimation``: calibrated CBPE and DLE; ``bias_drift``: Clarify metrics per group), which the scheduled
job (``job``: windows over captures, the registry of checks) runs.

May import: ``kfloop.training``, ``kfloop.inference``, ``kfloop.events``, ``kfloop.store`` and the leaves.
"""
