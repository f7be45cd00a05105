"""A pass-through KServe transformer: KServe's own transformer path with no work of its own.

``kserve.Model``'s default ``preprocess``/``predict``/``postprocess`` forward the request to
``--predictor_host`` on ``--predictor_protocol`` and return the predictor's answer, as a custom
transformer written from KServe's docs does before it adds anything. ``benchmarks/serving.py`` puts it
in front of KServe's stock xgbserver: the cost of a transformer hop in KServe itself, to compare the
kfloop drift transformer (validation, capture, drift) with.

    python benchmarks/passthrough_transformer.py --model_name churn --predictor_host 127.0.0.1:8081 --http_port 8080
"""

import argparse

import kserve


class PassThrough(kserve.Model):
    """Ready at once; every request goes to the predictor unchanged (KServe's defaults)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True


if __name__ == "__main__":
    args, _ = argparse.ArgumentParser(parents=[kserve.model_server.parser]).parse_known_args()
    kserve.ModelServer().start([PassThrough(args.model_name)])
