"""Log an evaluation to KFP's Metrics and ClassificationMetrics artifacts (drawn by the dashboard)."""

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
