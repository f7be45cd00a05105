"""The bias gate's pipeline parameters are refused before anything runs when they make no sense."""

import pytest

from kfloop.errors import ConfigError
from kfloop.pipelines.parameters import parameter_types, parse_params
from kfloop.pipelines.training import YAML_PATH

TYPES = parameter_types(YAML_PATH)


def test_the_bias_parameters_and_their_defaults_are_in_the_compiled_pipeline():
    assert {k: TYPES[k] for k in ("bias_action", "bias_min_di", "bias_max_di", "bias_max_dppl")} == {
        "bias_action": "STRING",
        "bias_min_di": "NUMBER_DOUBLE",
        "bias_max_di": "NUMBER_DOUBLE",
        "bias_max_dppl": "NUMBER_DOUBLE",
    }
    assert parse_params(["bias_action=approval", "bias_min_di=0.75"], TYPES) == {
        "bias_action": "approval",
        "bias_min_di": 0.75,
    }


@pytest.mark.parametrize(
    "pairs, message",
    [
        (["bias_action=block"], "bias_action 'block': expected '' \\(report only\\), 'reject' or 'approval'"),
        (["bias_min_di=1.5"], "min_disparate_impact 1.5 is above max_disparate_impact 1.25"),
        (["bias_max_dppl=-1"], "max_dppl=-1.0 must be a finite number >= 0"),
    ],
)
def test_nonsense_is_refused(pairs, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(pairs, TYPES)
