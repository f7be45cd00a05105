import pytest

from kfloop.errors import InvalidRequest
from kfloop.monitoring.signals import SignalResult, crossed
from kfloop.names import DATA_QUALITY_VIOLATED, SIGNALS


def test_result_round_trips_and_names_its_event_type():
    result = SignalResult(
        "data_quality",
        "alert",
        value=3,
        threshold=0,
        direction="above",
        rows=500,
        evidence={"violations": [{"feature": "age", "constraint": "max"}]},
    )
    assert SignalResult.from_dict(result.to_dict()) == result
    assert result.alerting and result.event_type == DATA_QUALITY_VIOLATED


@pytest.mark.parametrize(
    "fields",
    [
        {"signal": "vibes", "status": "ok"},
        {"signal": "feature_drift", "status": "maybe"},
        {"signal": "feature_drift", "status": "insufficient"},  # no reason
        {"signal": "feature_drift", "status": "ok", "value": float("nan")},
        {"signal": "feature_drift", "status": "ok", "direction": "sideways"},
    ],
)
def test_malformed_results_are_refused(fields):
    with pytest.raises(InvalidRequest):
        SignalResult(**fields)


def test_unknown_fields_are_refused_on_load():
    with pytest.raises(InvalidRequest, match="unknown fields"):
        SignalResult.from_dict({"signal": "quality", "status": "ok", "score": 1})


def test_crossed_is_strict_on_both_sides():
    assert crossed(0.9, 0.8, "above") and not crossed(0.8, 0.8, "above")
    assert crossed(0.01, 0.05, "below") and not crossed(0.05, 0.05, "below")


def test_every_signal_has_its_own_event_type():
    from kfloop.names import SIGNAL_EVENT_TYPES

    assert len(set(SIGNAL_EVENT_TYPES.values())) == len(SIGNALS)


def test_to_dict_is_asdict_and_copies_the_evidence():
    import dataclasses

    import numpy as np

    evidence = {"outputs": {"p": {"q": [0.1, 0.5], "pair": (1, "a")}}, "n": np.float64(0.5), "none": None}
    result = SignalResult("prediction_drift", "alert", value=0.001, threshold=0.01, rows=500, evidence=evidence)
    out = result.to_dict()
    assert out == dataclasses.asdict(result) and type(out["evidence"]["outputs"]["p"]["pair"]) is tuple
    out["evidence"]["outputs"]["p"]["q"].append(1.0)
    assert evidence["outputs"]["p"]["q"] == [0.1, 0.5]  # the result's own evidence is untouched
