"""A compiled pipeline's parameters: their types, read from the YAML, and ``key=value`` strings typed by them.

``kfloop pipeline run|submit --param`` and the retraining trigger's ``--pipeline_params`` both go through
``parse_params``, so a value is refused the same way before anything runs, wherever it comes from:
its type, and for the training and tuning parameters its value (``check_values``).
"""

from __future__ import annotations

import json
from pathlib import Path

from kfloop.errors import ConfigError


def parameter_types(yaml_path: str | Path) -> dict[str, str]:
    """The compiled pipeline's parameters and their types (STRING, NUMBER_INTEGER...)."""
    import yaml

    with open(yaml_path) as f:
        spec = next(yaml.safe_load_all(f))  # the pipeline spec; the platform spec follows
    return {k: v["parameterType"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}


def parse_params(pairs: list[str] | None, types: dict[str, str]) -> dict:
    """``key=value`` strings typed by the pipeline's parameter types."""
    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"--param {pair!r}: expected key=value")
        if key not in types:
            raise ConfigError(f"--param {key!r} is not a pipeline parameter; known: {', '.join(sorted(types))}")
        out[key] = _typed(key, raw, types[key])
    check_values(out)
    return out


BIAS_PARAMETERS = {
    "bias_min_di": "min_disparate_impact",
    "bias_max_di": "max_disparate_impact",
    "bias_max_dppl": "max_dppl",
}
TUNING_PARAMETERS = {"tuning_trials": "trials", "tuning_budget_seconds": "budget_seconds", "tuning_ranges": "ranges"}


def check_values(arguments: dict) -> None:
    """ConfigError naming the value when a training parameter (``TrainParams``) or the tuning
    options (``TuningOptions``: trials, budget, ranges) among ``arguments`` make no sense."""
    from kfloop.training.booster import TrainParams, check_param  # only when running: keeps --help light

    trainable = {f for f in TrainParams.__dataclass_fields__}
    for key, value in arguments.items():
        if key in trainable:
            check_param(key, value)
    if "bias_action" in arguments:
        from kfloop.training.evaluate import check_bias_action

        check_bias_action(arguments["bias_action"])
    if limits := {BIAS_PARAMETERS[k]: v for k, v in arguments.items() if k in BIAS_PARAMETERS}:
        from kfloop.training.bias import BiasLimits

        BiasLimits(**limits)
    if options := {TUNING_PARAMETERS[k]: v for k, v in arguments.items() if k in TUNING_PARAMETERS}:
        from kfloop.training.tuning import TuningOptions

        TuningOptions(**options)


def _typed(key: str, raw: str, kind: str) -> object:
    try:
        if kind == "NUMBER_INTEGER":
            return int(raw)
        if kind == "NUMBER_DOUBLE":
            return float(raw)
        if kind == "BOOLEAN":
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if kind in ("STRUCT", "LIST"):
            return json.loads(raw)
    except ValueError:
        raise ConfigError(f"--param {key}={raw!r}: expected a value of type {kind.lower()}") from None
    return raw
