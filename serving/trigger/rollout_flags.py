"""The trigger service's automatic rollouts: flags, and the ``AutoRollout`` they describe.

With ``--auto_rollout STRATEGY`` (off by default) every version a retraining run registers is
deployed as a canary and analysed (``kfloop.rollout.auto``): on the ``kfloop serve`` gateway
(``--rollout_target local``, ``--gateway_url``) or on KServe (``--rollout_target kubernetes``, with
``--prometheus_url`` for the revisions' traffic). Decisions leave through the trigger's outbox.
"""

from __future__ import annotations

import argparse
import dataclasses

from kfloop.config import Settings
from kfloop.errors import ConfigError
from kfloop.names import DEFAULT_GATEWAY
from kfloop.rollout.analysis import ROLLOUT_STRATEGIES, Thresholds, plan_for
from kfloop.rollout.auto import AutoRollout
from kfloop.rollout.factory import QUERY_SETS, TARGET_KINDS, OptionNames, RolloutOptions, make_source, make_target

FLAG_NAMES = OptionNames(
    target="--rollout_target",
    gateway_url="--gateway_url",
    prometheus_url="--prometheus_url",
    prometheus_queries="--prometheus_queries",
)


def add_flags(p: argparse.ArgumentParser, settings: Settings) -> None:
    p.add_argument(
        "--auto_rollout",
        choices=ROLLOUT_STRATEGIES,
        default=None,
        help="analyse and roll out every registered version with this strategy (default: off)",
    )
    p.add_argument(
        "--rollout_target",
        choices=TARGET_KINDS,
        default="local",
        help="where the rollouts happen (default local: the kfloop serve gateway)",
    )
    p.add_argument(
        "--gateway_url",
        default=settings.gateway_url,
        help=f"the kfloop serve gateway (env KFLOOP_GATEWAY_URL, default {DEFAULT_GATEWAY})",
    )
    p.add_argument(
        "--prometheus_url",
        default=settings.prometheus_url,
        help="Prometheus to read the revisions' traffic from (env KFLOOP_PROMETHEUS_URL; "
        "needed with --rollout_target kubernetes)",
    )
    p.add_argument(
        "--prometheus_queries",
        choices=QUERY_SETS,
        default="knative",
        help="the metrics --prometheus_url is queried for: knative (Knative 1.19+ queue-proxy, "
        "kn_serving_invocation_duration_seconds; default), knative-legacy (revision_app_request_count, "
        "before 1.19) or kfloop (the predictor's request_predict_seconds)",
    )
    p.add_argument("--rollout_namespace", help="namespace of the InferenceServices (kubernetes; default: the pod's)")
    p.add_argument("--rollout_steps", help="canary percentages, e.g. 10,50,100 (canary); their count for linear")
    p.add_argument(
        "--rollout_hold_requests", type=int, help="a step ends after this many canary requests (default 200)"
    )
    p.add_argument("--rollout_hold_seconds", type=float, help="... or after this many seconds, whichever first")
    p.add_argument(
        "--rollout_warmup_seconds",
        type=float,
        default=0.0,
        help="the first step starts measuring this long after the canary got its share",
    )
    p.add_argument(
        "--rollout_step_timeout",
        type=float,
        default=600.0,
        help="longest a step waits for enough traffic before rolling back (default 600)",
    )
    p.add_argument(
        "--rollout_thresholds", help="analysis thresholds, e.g. error_rate=0.01,p99_ratio=1.5,divergence=0.25"
    )


def make_auto_rollout(args: argparse.Namespace, store, outbox, token_file=None) -> AutoRollout | None:
    """The ``AutoRollout`` the flags ask for, or None when ``--auto_rollout`` is not given; ``token_file``:
    the control token for the gateway's admin API."""
    if not args.auto_rollout:
        return None
    options = dataclasses.replace(rollout_options(args), gateway_token_file=token_file)
    options.check_source()  # at start-up, not at the first registered version
    steps = _steps(args.rollout_steps)
    n_steps = (steps[0] if len(steps) == 1 else len(steps)) if steps else None  # linear: "4" or "25,50,75,100"
    plan = plan_for(
        args.auto_rollout,
        steps=steps,
        n_steps=n_steps,
        hold_requests=args.rollout_hold_requests,
        hold_seconds=args.rollout_hold_seconds,
        timeout_seconds=args.rollout_step_timeout,
        warmup_seconds=args.rollout_warmup_seconds,
    )
    return AutoRollout(
        store,
        plan,
        Thresholds.parse(args.rollout_thresholds),
        lambda: make_target(options),
        lambda target, model: make_source(options, target, store, model),
        outbox,
        event_source=f"{args.event_source}/rollout",
    )


def rollout_options(args: argparse.Namespace) -> RolloutOptions:
    """The rollout target and traffic source the flags name."""
    return RolloutOptions(
        target=args.rollout_target,
        gateway_url=args.gateway_url,
        namespace=args.rollout_namespace,
        prometheus_url=args.prometheus_url,
        prometheus_queries=args.prometheus_queries,
        names=FLAG_NAMES,
    )


def _steps(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--rollout_steps {text!r}: expected whole percentages like 10,50,100") from None
