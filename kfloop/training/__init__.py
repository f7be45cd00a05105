"""Training: raw data in, a trained and evaluated XGBoost model out.

Owns loading raw data and the built-in samples (``data``, ``samples``), data-quality rules
(``validation``), the seeded split (``split``), fitting, saving and predicting with the booster
(``booster``), the seeded hyperparameter search (``tuning``: Optuna TPE on the validation split),
metrics and the quality gate (``evaluate``), Clarify-style bias metrics (``bias``), SHAP importance
(``explain``) and the model report (``model_report``).

May import: ``kfloop.store`` (reading data sources on S3) and the leaves. Never the servers, KFP or KServe.
"""
