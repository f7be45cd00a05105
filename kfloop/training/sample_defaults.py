"""The built-in samples' target and sensitive-feature columns, in a module that imports nothing.

``kfloop pipeline run|submit --data sample:NAME`` fills ``target`` and ``sensitive_feature`` from here
while it only parses flags; ``kfloop.training.samples`` (pandas, numpy) builds the frames that have them.
"""

SAMPLE_DEFAULTS = {
    "churn": {"target": "churn", "sensitive_feature": "age"},
    "breast_cancer": {"target": "target", "sensitive_feature": ""},
}
