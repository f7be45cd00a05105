"""KFP pipelines: the training pipeline's wiring (``training``, compiled to the committed
``training.yaml``), its parameters (``parameters``), running it locally with kfp.local (``run_local``),
submitting it to a KFP API (``submit``) and scheduling it there as a recurring run (``schedule``).

Installed as ``kfloop.pipelines``. May import ``kfloop.components`` and the core packages.
"""
