"""Monitoring of served traffic.

Owns data capture (``capture``: records written in batches; ``capture_format``: their keys and codecs;
``capture_batch``: a served request's records kept as its columns; ``capture_rows``: one served request
as capture records), feature drift detection (``drift``: the
detector; ``drift_window``: windows of live rows; ``drift_monitor``: the background thread that checks
them and emits drift events), ground truth (``feedback``) and model quality on labeled traffic
(``quality``).

May import: ``kfloop.training``, ``kfloop.inference``, ``kfloop.events``, ``kfloop.store`` and the leaves.
"""
