"""kfloop: closed-loop MLOps for tabular XGBoost models on Kubeflow Pipelines and KServe.

The modules in this package are the pure core of the project. KFP components
(``components/``), KServe models (``serving/``) and the CLI are thin glue over them.
"""

__version__ = "0.1.0"
