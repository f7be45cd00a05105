"""Rollouts: a registered version deployed as a canary, analysed on its traffic, promoted or rolled back.

Owns the registry-aware actions (``actions``: deploy, promote, rollback, keeping stages in step), the
pure canary analysis (``analysis``: plans, thresholds, verdicts; ``divergence``: how far apart two
revisions' predictions are), reading a step's traffic (``stats``, ``sources``: the local gateway or
Prometheus), the controller that walks a plan (``controller``), automatic rollouts of newly
registered versions (``auto``), the targets that really move traffic (``targets``) and the one place
entry points build a target and a source from their flags (``factory``).

May import: ``kfloop.monitoring`` and everything below it. Not ``kfloop.retraining`` or ``kfloop.report``.
"""
