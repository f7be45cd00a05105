"""KServe model servers: the predictor (``predictor``) and the drift transformer in front of it
(``transformer``), each a ``kserve.ModelServer`` started with ``python -m``.

What they share: the entry point and start-up (``startup``), a fast path for the two inference routes
in front of KServe's FastAPI stack (``fast_path``), micro-batching (``batching``), the transformer's
predictor client (``predictor_client`` over ``http_pool``) and its metrics (``transformer_metrics``).

May import: ``kfloop.serving.body_limit`` and the core packages (monitoring, inference, store ...).
"""
