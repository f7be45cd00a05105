"""``kfloop registry list|show|approve|reject``."""

from __future__ import annotations

from kfloop.cli.main import print_json
from kfloop.config import Settings
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry


def add_commands(groups) -> None:
    registry = groups.add_parser("registry", help="list, show, approve or reject model versions")
    registry.set_defaults(group_parser=registry)
    sub = registry.add_subparsers(title="registry commands", metavar="COMMAND")
    list_ = sub.add_parser("list", help="list versions (all models, or one)")
    list_.add_argument("--model", help="only this model")
    list_.add_argument("--json", action="store_true", help="print JSON")
    list_.set_defaults(handler=list_command)
    show = sub.add_parser("show", help="show one version: NAME, NAME:VERSION or NAME@STAGE")
    show.add_argument("ref", help="NAME:VERSION, NAME:latest, NAME@STAGE (e.g. churn@production) or NAME")
    show.add_argument("--json", action="store_true", help="print JSON (includes the feature schema)")
    show.set_defaults(handler=show_command)
    for name, handler in (("approve", approve_command), ("reject", reject_command)):
        cmd = sub.add_parser(name, help=f"{name} a version waiting in pending-approval")
        cmd.add_argument("ref", help="NAME:VERSION")
        cmd.add_argument("--reason", default="", help="why (kept in the stage history)")
        cmd.set_defaults(handler=handler)


def _registry(settings: Settings) -> Registry:
    return Registry(open_store(settings))


def _primary(record) -> str:
    metrics = record.metrics.get("metrics", {})
    metric = record.metrics.get("gate", {}).get("metric")
    return f"{metric}={metrics[metric]:.4f}" if metric and metrics.get(metric) is not None else "-"


def list_command(args, settings: Settings) -> int:
    records = _registry(settings).list_versions(args.model)
    if args.json:
        print_json([r.to_dict() for r in records])
        return 0
    if not records:
        print("no registered versions")
        return 0
    print(f"{'MODEL':<20} {'VERSION':>7}  {'STAGE':<17} {'METRIC':<16} CREATED")
    for r in records:
        print(f"{r.name:<20} {r.version:>7}  {r.stage:<17} {_primary(r):<16} {r.created_at}")
    return 0


def show_command(args, settings: Settings) -> int:
    record = _registry(settings).resolve(args.ref)
    if args.json:
        print_json(record.to_dict())
        return 0
    print(f"{record.ref}  stage={record.stage}  created={record.created_at}")
    print(f"bundle: {record.bundle_uri}")
    print(f"task: {record.schema['task']}  target: {record.schema['target']}")
    for f in record.schema["features"]:
        print(f"  {f['name']:<24} {f['kind']}" + (f"  {f['categories']}" if f.get("categories") else ""))
    print(f"metrics: {_primary(record)}  gate: {record.metrics.get('gate', {}).get('reason', '-')}")
    print(f"lineage: {record.lineage}")
    return 0


def approve_command(args, settings: Settings) -> int:
    record = _registry(settings).approve(args.ref)
    print(f"{record.ref} approved: now {record.stage}")
    return 0


def reject_command(args, settings: Settings) -> int:
    record = _registry(settings).reject(args.ref, args.reason or "rejected by reviewer")
    print(f"{record.ref} rejected")
    return 0
