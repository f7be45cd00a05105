"""``kfloop rollout deploy|promote|rollback|status|shadow|analyze``: canary rollouts that keep registry stages in step.

The target is the ``kfloop serve`` gateway (``--target local``, the default) or KServe on a
cluster (``--target kubernetes``); ``KFLOOP_ROLLOUT_TARGET`` changes the default.
"""

from __future__ import annotations

import argparse
import sys

from kfloop.cli.main import print_json
from kfloop.config import Settings, env_name
from kfloop.errors import ConfigError
from kfloop.events.outbox import Outbox
from kfloop.names import DEFAULT_GATEWAY, ROLLOUT_STRATEGIES
from kfloop.rollout import actions as rollout
from kfloop.rollout.factory import (
    QUERY_SETS,
    STANDARD_CANARY,
    TARGET_KINDS,
    OptionNames,
    RolloutOptions,
    make_target,
)
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry

TARGET_ENV = env_name("rollout_target")


def add_commands(groups) -> None:
    group = groups.add_parser("rollout", help="deploy a version (as a canary), promote, roll back, shadow traffic")
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(title="rollout commands", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target", choices=TARGET_KINDS, help=f"where revisions run (default: env {TARGET_ENV}, else local)"
    )
    common.add_argument(
        "--gateway",
        default=DEFAULT_GATEWAY,
        help=f"the kfloop serve gateway, for --target local (default {DEFAULT_GATEWAY})",
    )
    common.add_argument("--namespace", help="Kubernetes namespace, for --target kubernetes")
    common.add_argument(
        "--standard-canary",
        choices=STANDARD_CANARY,
        help="a canary of an InferenceService in KServe's Standard mode (--target kubernetes): auto writes "
        "spec.canary and keeps it only when the cluster routes it traffic (kserve#5912), on writes it "
        "unchecked, off refuses it (default: env KFLOOP_STANDARD_CANARY, else auto)",
    )
    common.add_argument("--json", action="store_true", help="print the status as JSON")

    deploy = sub.add_parser("deploy", parents=[common], help="serve a version: all traffic, or --canary PERCENT")
    deploy.add_argument("ref", metavar="NAME:VERSION", help="the version to deploy (NAME:latest works too)")
    deploy.add_argument("--canary", type=int, metavar="PERCENT", help="the new version's share, next to the stable one")
    deploy.set_defaults(handler=deploy_command)
    for name, handler, text in (
        ("promote", promote_command, "the canary takes all traffic and becomes production"),
        ("rollback", rollback_command, "all traffic back to stable; the canary is rejected"),
    ):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("model", metavar="NAME", help="the model whose canary to act on")
        cmd.add_argument("--reason", default=f"{name} by kfloop rollout", help="kept in the stage history")
        cmd.set_defaults(handler=handler)
    status = sub.add_parser("status", parents=[common], help="the traffic split and the revisions' health")
    status.add_argument("model", metavar="NAME", help="the model to show")
    status.set_defaults(handler=status_command)
    shadow = sub.add_parser(
        "shadow",
        parents=[common],
        help="mirror a share of the predictions to a version and record its answers (on kubernetes: the "
        "transformer mirrors to the version's own InferenceService NAME-shadow)",
    )
    shadow.add_argument("ref", metavar="NAME:VERSION", help="the version that receives the mirrored requests")
    shadow.add_argument("--percent", type=int, required=True, help="share of requests mirrored; 0 stops mirroring")
    shadow.set_defaults(handler=shadow_command)
    add_analyze_command(sub, common)


def add_analyze_command(sub, common) -> None:

    analyze = sub.add_parser(
        "analyze",
        parents=[common],
        help="deploy a version as a canary, compare it with stable step by step, then promote "
        "or roll back (exit 3 when rolled back)",
    )
    analyze.add_argument("ref", metavar="NAME:VERSION", help="the candidate version (NAME:latest works too)")
    analyze.add_argument(
        "--strategy",
        choices=ROLLOUT_STRATEGIES,
        default="canary",
        help="canary (--steps), linear (--n-steps equal steps), all-at-once, or blue-green "
        "(bake at 0%% with shadow traffic, then switch); default canary",
    )
    analyze.add_argument(
        "--steps",
        type=_percent_list,
        metavar="P,P,...",
        help="canary percentages, e.g. 10,50,100 (the default); 100 means promote",
    )
    analyze.add_argument(
        "--n-steps", type=int, metavar="N", help="number of equal steps of --strategy linear (default 4)"
    )
    analyze.add_argument(
        "--hold-requests",
        type=int,
        metavar="N",
        help="a step ends after N canary requests (default 200 unless --hold-seconds is given)",
    )
    analyze.add_argument("--hold-seconds", type=float, metavar="T", help="... or after T seconds, whichever first")
    analyze.add_argument(
        "--warmup-seconds",
        type=float,
        default=0.0,
        metavar="T",
        help="the first step starts measuring T seconds after the canary got its share",
    )
    analyze.add_argument(
        "--step-timeout",
        type=float,
        default=600.0,
        metavar="T",
        help="longest a step waits for enough traffic; then it rolls back (default 600)",
    )
    analyze.add_argument(
        "--thresholds",
        metavar="K=V,...",
        help="e.g. error_rate=0.01,p99_ratio=1.5,p99_slack=10,divergence=0.25,quality_drop=0.05,"
        "min_requests=50,min_predictions=200,min_labels=30 (these are the defaults)",
    )
    analyze.add_argument(
        "--prometheus",
        metavar="URL",
        help="read traffic from Prometheus (needed with --target kubernetes) instead of the gateway",
    )
    analyze.add_argument(
        "--prometheus-queries",
        choices=QUERY_SETS,
        default="knative",
        help="the metrics --prometheus is queried for: knative (Knative 1.19+ queue-proxy, "
        "kn_serving_invocation_duration_seconds; default), knative-legacy (revision_app_request_count, "
        "before 1.19) or kfloop (the predictor's request_predict_seconds)",
    )
    analyze.add_argument("--sink", metavar="URL", help="also send the decisions as CloudEvents to URL (via an outbox)")
    analyze.set_defaults(handler=analyze_command)


def _percent_list(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole percentages like 10,50,100") from None


FLAG_NAMES = OptionNames(
    target="--target",
    target_env=TARGET_ENV,
    gateway_url="--gateway",
    prometheus_url="--prometheus URL",
    prometheus_queries="--prometheus-queries",
    standard_canary="--standard-canary",
)


def rollout_options(args, settings: Settings | None = None) -> RolloutOptions:
    """The target (the flags, or ``KFLOOP_ROLLOUT_TARGET``) and traffic source the flags name."""
    settings = settings or Settings.from_env()
    return RolloutOptions(
        target=args.target or settings.rollout_target,
        gateway_url=args.gateway,
        namespace=args.namespace,
        prometheus_url=getattr(args, "prometheus", None),
        prometheus_queries=getattr(args, "prometheus_queries", None) or "knative",
        gateway_token_file=settings.control_token_path,
        standard_canary=getattr(args, "standard_canary", None),  # None: KFLOOP_STANDARD_CANARY
        names=FLAG_NAMES,
    )


def _registry(settings: Settings) -> Registry:
    return Registry(open_store(settings))


def deploy_command(args, settings: Settings) -> int:
    show(args, rollout.deploy(_registry(settings), make_target(rollout_options(args, settings)), args.ref, args.canary))
    return 0


def promote_command(args, settings: Settings) -> int:
    show(
        args,
        rollout.promote(
            _registry(settings), make_target(rollout_options(args, settings)), args.model, reason=args.reason
        ),
    )
    return 0


def rollback_command(args, settings: Settings) -> int:
    show(
        args,
        rollout.rollback(
            _registry(settings), make_target(rollout_options(args, settings)), args.model, reason=args.reason
        ),
    )
    return 0


def status_command(args, settings: Settings) -> int:
    show(args, make_target(rollout_options(args, settings)).status(args.model))
    return 0


def shadow_command(args, settings: Settings) -> int:
    record = _registry(settings).resolve(args.ref)
    target = make_target(rollout_options(args, settings))
    if not hasattr(target, "shadow"):
        raise ConfigError(f"the {target.name} target cannot mirror traffic; shadow a version with --target local")
    rollout.check_percent(args.percent)
    show(args, target.shadow(record.name, record.version, args.percent, record=record))
    return 0


def analyze_command(args, settings: Settings) -> int:
    from kfloop.rollout.analysis import Thresholds, plan_for
    from kfloop.rollout.controller import run_analysis
    from kfloop.rollout.factory import make_source

    options = rollout_options(args, settings)
    store = open_store(settings)
    registry, target = Registry(store), make_target(options)
    record = registry.resolve(args.ref)
    plan = plan_for(
        args.strategy,
        steps=args.steps,
        n_steps=args.n_steps,
        hold_requests=args.hold_requests,
        hold_seconds=args.hold_seconds,
        timeout_seconds=args.step_timeout,
        warmup_seconds=args.warmup_seconds,
    )
    sink = Outbox.for_settings(settings, "rollout", args.sink) if args.sink else None
    if sink is not None:
        sink.start()
    say = (
        (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else (lambda line: print(line, flush=True))
    )
    try:
        result = run_analysis(
            registry,
            target,
            make_source(options, target, store, record.name),
            record.name,
            record.ref,
            plan,
            Thresholds.parse(args.thresholds),
            store,
            sink,
            progress=say,
        )
    finally:
        if sink is not None:
            sink.drain(10.0)
            sink.stop()
    if args.json:
        print_json(result)
    else:
        print(f"{result['outcome']}: {record.ref} ({result['reason']})")
    return 0 if result["outcome"] == "promoted" else 3


def show(args, doc: dict) -> None:
    if args.json:
        print_json(doc)
    else:
        print(format_status(doc))


def format_status(doc: dict) -> str:
    """A few lines: the model, whether it is ready, and one line per revision."""
    where = doc.get("target", "?")
    if doc.get("served") is False or not (doc.get("stable") or doc.get("canary")):
        return f"{doc['model']} is not served on {where}"
    lines = [f"{doc['model']} on {where}: {'ready' if doc.get('ready') else 'NOT ready'}"]
    for role in ("stable", "canary", "shadow"):
        rev = doc.get(role)
        if rev:
            lines.append(f"  {role:<7} v{rev['version']:<4} {rev.get('percent', '?'):>3}%  {_health(role, rev)}")
    return "\n".join(lines)


def _health(role: str, rev: dict) -> str:
    if "healthy" not in rev:
        return ""
    text = "healthy" if rev["healthy"] else f"unhealthy: {rev.get('reason') or 'unknown'}"
    if role == "shadow" and "recorded" in rev:
        text += f"; mirrored, {rev['recorded']} answers recorded in {rev['records']}"
    return text
