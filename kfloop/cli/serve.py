"""``kfloop serve``: a model's revisions as local processes behind the canary gateway on 127.0.0.1.

Serves the production version (or, when there is none, the latest staging one), or the routing
saved by the previous ``kfloop serve`` of the model, and optionally a canary. Unless
``--no-trigger``, it also runs the retraining trigger service (``kfloop.serving.trigger.service``, local
runs) and wires the loop's events: every drift transformer sends its drift events to the trigger,
labels are posted to the trigger's ``/v1/feedback``, and the trigger's own events (retraining
started/finished, quality degraded, rollout decisions) go to the gateway's event sink, which
records them in the event log and prints a line for each. At start it writes a new control token
(``kfloop.auth``, a 0600 file at ``KFLOOP_CONTROL_TOKEN_FILE``, by default ``<KFLOOP_HOME>/control-token``):
the gateway's admin API and the trigger's feedback and status routes want it, ``kfloop rollout`` and
the trigger read it there. Every server it starts listens on 127.0.0.1 only. Ctrl-C or SIGTERM stops the gateway,
every model server process, the trigger and the retraining run it has in flight; so does any
error, in a ``finally``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kfloop.config import Settings
from kfloop.errors import ConfigError, ModelNotFound
from kfloop.names import ADMIN_EVENTS_PATH, ADMIN_MODELS_PATH, DEFAULT_GATEWAY_PORT
from kfloop.rollout.actions import DEPLOYABLE_STAGES
from kfloop.store.objects import open_store
from kfloop.store.registry import ModelRef, Registry, VersionRecord

if TYPE_CHECKING:
    from kfloop.schema import FeatureSchema


def add_commands(groups) -> None:
    serve = groups.add_parser("serve", help="serve a model on 127.0.0.1 behind the canary gateway (Ctrl-C stops)")
    serve.add_argument("--model", help="model to serve (default: the only registered model, or the --canary's)")
    serve.add_argument(
        "--port",
        type=int,
        default=DEFAULT_GATEWAY_PORT,
        help=f"gateway port on 127.0.0.1 (default {DEFAULT_GATEWAY_PORT})",
    )
    serve.add_argument("--canary", metavar="NAME:VERSION", help="also serve this version as a canary")
    serve.add_argument("--canary-percent", type=int, default=10, help="the canary's share of traffic (default 10)")
    serve.add_argument(
        "--no-transformer",
        action="store_true",
        help="route straight to the predictors, without the drift transformer in front",
    )
    serve.add_argument(
        "--predictor-args",
        default="",
        metavar="ARGS",
        help="extra flags of every predictor, one string: --predictor-args='--nthread 2'",
    )
    serve.add_argument(
        "--transformer-args",
        default="",
        metavar="ARGS",
        help="extra flags of every transformer (drift, capture): --transformer-args='--drift_window 200'",
    )
    serve.add_argument(
        "--no-trigger",
        action="store_true",
        help="do not run the retraining trigger service (drift events then stay in the transformers' outboxes)",
    )
    serve.add_argument(
        "--trigger-port", type=int, default=0, help="port of the trigger service on 127.0.0.1 (default: a free one)"
    )
    serve.add_argument(
        "--trigger-args",
        default="",
        metavar="ARGS",
        help="extra flags of the trigger service, one string: --trigger-args='--cooldown_seconds 60'",
    )
    serve.add_argument("--seed", type=int, help="seed of the random traffic split (reproducible splits)")
    serve.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a revision's servers to be ready (default 120)",
    )
    serve.set_defaults(handler=serve_command)


def serve_command(args, settings: Settings) -> int:
    from kfloop.auth import write_token
    from kfloop.serving.local.controller import LocalController
    from kfloop.serving.local.gateway import bind

    registry = Registry(open_store(settings))
    model = args.model or (ModelRef.parse(args.canary).name if args.canary else None) or only_model(registry)
    sock = bind(args.port)
    token = write_token(settings.control_token_path)  # before the trigger and the transformers read it
    trigger = None if args.no_trigger else make_trigger(args, settings)
    controller = LocalController(
        settings,
        use_transformer=not args.no_transformer,
        ready_timeout=args.ready_timeout,
        registry=registry,
        predictor_args=shlex.split(args.predictor_args),
        transformer_args=shlex.split(args.transformer_args),
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C (SIGINT) stops kfloop serve even when it was started with SIGINT ignored (a background job of a
    # shell without job control inherits that), so that it always ends the same way, printing "stopped"
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _run(_serve(args, registry, controller, model, sock, token, settings.control_token_path, trigger))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        controller.kill_all()  # whatever the way out, no model server outlives kfloop serve
        if trigger:
            trigger.stop()  # nor the trigger, nor a retraining run it started
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        sock.close()
    return 0


def make_trigger(args, settings: Settings):
    """The trigger service process for ``kfloop serve``: local runs, its events to the gateway's sink."""
    from kfloop.names import ADMIN_EVENTS_PATH as PATH
    from kfloop.processes import free_port
    from kfloop.serving.local.trigger_process import TriggerProcess

    env = {**os.environ, **settings.storage_env(), "PYTHONUNBUFFERED": "1"}
    root = Path(settings.home).resolve()
    gateway = f"http://127.0.0.1:{args.port}"
    # --gateway_url for --auto_rollout, --sink_auth: the gateway's event sink wants the token; the user's flags win
    flags = ("--gateway_url", gateway, "--sink_auth", *shlex.split(args.trigger_args))
    return TriggerProcess(
        args.trigger_port or free_port(), gateway + PATH, root / "serving" / "trigger.log", env, root, flags
    )


async def _serve(args, registry: Registry, controller, model: str, sock, token: str, token_path, trigger=None) -> None:
    from kfloop.schema import FeatureSchema
    from kfloop.serving.local.events_sink import EventSink, describe
    from kfloop.serving.local.gateway import Gateway
    from kfloop.serving.local.routing import RouteState, state_path

    canary = _canary(registry, model, args.canary)
    state = controller.saved_state(model)
    if state is not None:
        print(f"restoring {model} from {state_path(controller.root, model)}: {state.describe()}", flush=True)
    else:
        record, note = initial_version(registry, model, exclude=canary.version if canary else None)
        print(note, flush=True)
        state = RouteState(model, stable=record.version)
    if canary:
        state = state.deployed(canary.version, args.canary_percent)
    if trigger:  # first: the transformers send their drift events to its URL
        await trigger.start_ready(controller.client, args.ready_timeout, any_port=not args.trigger_port)
        trigger.supervise(lambda line: print(line, flush=True))  # restarted with backoff, reported
        sink = ("--sink_url", trigger.url + "/")  # before the user's flags, which win
        controller.server_args["transformer_args"] = (*sink, *controller.server_args["transformer_args"])
    await controller.apply(state)
    sink = EventSink(registry.store, on_event=lambda event: print(describe(event), flush=True))
    gateway = Gateway(controller, token=token, seed=args.seed, events=sink)
    schema = FeatureSchema.from_dict(registry.get(model, state.stable).schema)
    url, trigger_url = f"http://127.0.0.1:{args.port}", trigger.url if trigger else None
    print(banner(url, model, schema, state.describe(), trigger_url, token_path), flush=True)
    await gateway.server(args.port).serve(sockets=[sock])


def _canary(registry: Registry, model: str, ref: str | None) -> VersionRecord | None:
    if not ref:
        return None
    canary = registry.resolve(ref)
    if canary.name != model or canary.stage not in DEPLOYABLE_STAGES:
        raise ConfigError(
            f"--canary {ref}: expected a version of {model} in one of the stages "
            f"{DEPLOYABLE_STAGES}; got {canary.ref} ({canary.stage})"
        )
    return canary


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _run(coroutine) -> None:
    try:
        import uvloop
    except ImportError:
        import asyncio

        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def only_model(registry: Registry) -> str:
    names = registry.models()
    if len(names) == 1:
        return names[0]
    if not names:
        raise ModelNotFound(
            f"no models registered in {registry.store.uri('models/')}; train one with `kfloop pipeline run`"
        )
    raise ConfigError(f"the registry has several models ({', '.join(names)}); pick one with --model")


def initial_version(registry: Registry, model: str, exclude: int | None = None) -> tuple[VersionRecord, str]:
    """The production version of ``model``, else its latest staging one (other than ``exclude``,
    the canary); and a line saying which."""
    record = registry.production(model)
    if record is not None:
        return record, f"serving {record.ref} (production)"
    staging = [r for r in registry.list_versions(model) if r.stage == "staging" and r.version != exclude]
    if not staging:
        raise ModelNotFound(
            f"{model} has no production or staging version to serve; register one with "
            f"`kfloop pipeline run` or approve one with `kfloop registry approve`"
        )
    return staging[-1], (
        f"{model} has no production version; serving the latest staging version "
        f"{staging[-1].ref} (make it production with `kfloop rollout deploy {staging[-1].ref}`)"
    )


def example_requests(schema: FeatureSchema) -> tuple[dict, dict]:
    """A one-row V1 and V2 request body for ``schema`` (0 for numbers, the first category)."""
    from kfloop.inference.tensors import v2_input_metadata

    values = [f.categories[0] if f.kind == "categorical" and f.categories else 0.0 for f in schema.features]
    v1 = {"instances": [dict(zip(schema.names, values))]}
    v2 = {"inputs": [{**meta, "shape": [1], "data": [value]} for meta, value in zip(v2_input_metadata(schema), values)]}
    return v1, v2


def example_label(schema: FeatureSchema) -> dict:
    """A feedback body for ``schema``'s model: one label (the first class, or 0.0) for a placeholder id."""
    label: object = 0.0
    if schema.classes:
        first = schema.classes[0]
        label = int(first) if first.lstrip("-").isdigit() else first
    return {"model": None, "labels": [{"request_id": "<x-request-id of a prediction>", "label": label}]}


def banner(
    url: str, model: str, schema: FeatureSchema, split: str, trigger_url: str | None = None, token_path=None
) -> str:
    v1, v2 = example_requests(schema)
    curl = "curl -s -H 'Content-Type: application/json'"
    auth = f'-H "Authorization: Bearer $(cat {shlex.quote(str(token_path))})"' if token_path else ""
    lines = [
        f"gateway on {url}: {model} ({split})",
        f"  V1 predict  POST {url}/v1/models/{model}:predict",
        f"  V2 infer    POST {url}/v2/models/{model}/infer",
        f"  metadata    GET  {url}/v2/models/{model}",
        f"  pinned      {url}/latest/... (newest revision), {url}/prev/... (stable)",
        f"  status      GET  {url}{ADMIN_MODELS_PATH}/{model}  (kfloop rollout status {model})",
    ]
    if token_path:
        lines.append(f"control plane (admin API, trigger feedback and status) wants the bearer token in {token_path}")
    if trigger_url:
        label = {**example_label(schema), "model": model}
        lines += [
            f"trigger on {trigger_url}: drift events from the transformers start retraining runs (local)",
            f"  feedback    POST {trigger_url}/v1/feedback  (ground truth for served predictions, named by "
            f"their x-request-id response header), e.g.",
            f"  label:      {curl} {auth} {trigger_url}/v1/feedback -d {shlex.quote(json.dumps(label))}",
            f"  status      GET  {trigger_url}/v1/status",
            f"  events      POST {url}{ADMIN_EVENTS_PATH}  (the trigger's events, recorded in the event log)",
        ]
    lines += [
        "try:",
        f"  {curl} {url}/v1/models/{model}:predict -d {shlex.quote(json.dumps(v1))}",
        f"  {curl} {url}/v2/models/{model}/infer -d {shlex.quote(json.dumps(v2))}",
    ]
    stops = "the gateway, the model servers and the trigger" if trigger_url else "the gateway and the model servers"
    lines.append(f"Ctrl-C stops {stops}.")
    return "\n".join(lines)
