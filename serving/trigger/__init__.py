"""The retraining trigger service (``service``): CloudEvents in (Knative Triggers POST them to ``/``),
feedback posts, retraining runs out; its Prometheus metrics (``metrics``) and automatic-rollout flags
(``rollout_flags``).

May import: ``kfloop.pipelines``, ``kfloop.serving.body_limit`` and the core packages.
"""
