"""Monitoring of served traffic.

Owns data capture (``capture``: records written in batches; ``capture_format``: their keys and codecs;
``capture_batch``: a served request's records kept as its columns; ``capture_rows``: one served request
as capture records), feature drift detection (``drift``: the
detector; ``drift_window``: windows of live rows; ``drift_monitor``: the background thread that checks
them and emits drift events; ``window_log``: a summary of every checked window), ground truth
(``feedback``) and model quality on labeled traffic (``quality``), the result every check returns
(``signals``), baseline statistics and constraints (``constraints``) and the window checks against
them (``data_quality``, ``prediction_drift``; their windows beside the drift windows:
``quality_window``), the window signals of the scheduled job (``multivariate``: a domain classifier;
``attribution``: SHAP ranking by NDCG; ``estimation``: calibrated CBPE and DLE; ``bias_drift``:
Clarify metrics per group) and the job itself (``job``: windows over captures, the registry of
checks).

May import: ``kfloop.training``, ``kfloop.inference``, ``kfloop.events``, ``kfloop.store`` and the leaves.
"""
