"""Retraining: from a signal (drift, degraded quality, feedback) to a new pipeline run.

Owns the policy that decides when to retrain and the state it keeps (``policy``), the quality signal
computed from labeled feedback (``quality_signal``), the training data of a run (``training_data``: the
original data, labeled served traffic or both), the drift reference of a run started by drift
(``reference_data``: the traffic served since the drift), a run's inputs and results (``inputs``), the run in
flight and its moves from launching to finished (``run_state``), where runs execute (``runners``:
kfp.local worker processes or a KFP API), the trigger's controller that ties them together
(``trigger``) and retraining on a calendar (``schedule``: cron expressions and intervals, checked).

May import: ``kfloop.monitoring`` and everything below it. Not ``kfloop.rollout`` or ``kfloop.report``.
"""
