"""Log an evaluation to KFP's Metrics and ClassificationMetrics artifacts (drawn by the dashboard), and
the tune step's trials to its Metrics artifact."""

from __future__ import annotations

SCALARS = ("auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2")


def log_evaluation(doc: dict, metrics, classification_metrics) -> None:
    """Scalars of the candidate (and ``production_*``), the gate, the confusion matrix and ROC."""
    for name in SCALARS:
        if doc["metrics"].get(name) is not None:
            metrics.log_metric(name, float(doc["metrics"][name]))
        production = (doc.get("production") or {}).get("metrics", {})
        if production.get(name) is not None:
            metrics.log_metric(f"production_{name}", float(production[name]))
    metrics.log_metric("gate_passed", float(doc["gate"]["passed"]))
    matrix = doc["metrics"].get("confusion_matrix")
    if matrix:
        classification_metrics.log_confusion_matrix(list(doc["metrics"]["labels"]), matrix)
    roc = doc["metrics"].get("roc")
    if roc:
        classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])


def log_tuning(doc: dict, metrics) -> None:
    """Every trial's validation loss (``trial_007_valid_logloss``; pruned trials at the round they
    stopped), the given parameters' (``baseline_...``) and the chosen one's (``best_...``)."""
    tuning = doc.get("tuning")
    metrics.log_metric("tuning_trials", float(tuning["trials_run"] if tuning else 0))
    if not tuning:
        return
    name = f"valid_{tuning['metric']}"
    for trial in tuning["trials"]:
        metrics.log_metric(f"trial_{trial['number']:03d}_{name}", float(trial["value"]))
    metrics.log_metric(f"baseline_{name}", float(tuning["baseline"]["value"]))
    metrics.log_metric(f"best_{name}", float(tuning["best"]["value"]))
    metrics.log_metric("tuning_trials_pruned", float(tuning["trials_pruned"]))
    metrics.log_metric("tuning_improved", float(tuning["improved"]))
    metrics.log_metric("tuning_seconds", float(tuning["seconds"]))
