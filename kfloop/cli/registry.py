"""``kfloop registry list|show|approve|reject|alias set|alias delete``."""

from __future__ import annotations

import sys

from kfloop.cli.main import print_json
from kfloop.config import Settings
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry


def add_commands(groups) -> None:
    registry = groups.add_parser("registry", help="list, show, approve, reject or alias model versions")
    registry.set_defaults(group_parser=registry)
    sub = registry.add_subparsers(title="registry commands", metavar="COMMAND")
    list_ = sub.add_parser(
        "list",
        help="list versions (all models, or one); a corrupt version is named on stderr "
        "(the others are listed) and the exit status is 1",
    )
    list_.add_argument("--model", help="only this model")
    list_.add_argument("--json", action="store_true", help="print JSON")
    list_.set_defaults(handler=list_command)
    show = sub.add_parser("show", help="show one version: NAME, NAME:VERSION, NAME@STAGE or NAME@ALIAS")
    show.add_argument(
        "ref", help="NAME:VERSION, NAME:latest, NAME@STAGE (e.g. churn@production), NAME@ALIAS (churn@champion) or NAME"
    )
    show.add_argument("--json", action="store_true", help="print JSON (includes the feature schema)")
    show.add_argument(
        "--verify",
        action="store_true",
        help="also download every file of the version's bundle and check its SHA-256 against the record "
        "(exit status 1, naming each bad file, when one is missing or differs)",
    )
    show.set_defaults(handler=show_command)
    for name, handler in (("approve", approve_command), ("reject", reject_command)):
        cmd = sub.add_parser(name, help=f"{name} a version waiting in pending-approval")
        cmd.add_argument("ref", help="NAME:VERSION")
        cmd.add_argument("--reason", default="", help="why (kept in the stage history)")
        cmd.set_defaults(handler=handler)

    alias = sub.add_parser("alias", help="set or delete an alias: a named, movable pointer to a version")
    alias.set_defaults(group_parser=alias)
    alias_sub = alias.add_subparsers(title="alias commands", metavar="COMMAND")
    set_ = alias_sub.add_parser(
        "set", help="point ALIAS at the version REF names (moving it if it points at another version)"
    )
    set_.add_argument(
        "ref", help="the version: NAME:VERSION, NAME@STAGE or NAME@ALIAS (e.g. churn:3, churn@production)"
    )
    set_.add_argument("alias", help="alias name: lowercase letters, digits and '-', not a stage name or 'latest'")
    set_.add_argument("--reason", default="", help="why (kept in the stage history)")
    set_.set_defaults(handler=alias_set_command)
    delete = alias_sub.add_parser("delete", help="remove ALIAS from model NAME")
    delete.add_argument("name", help="model name (e.g. churn)")
    delete.add_argument("alias", help="the alias to remove")
    delete.add_argument("--reason", default="", help="why (kept in the stage history)")
    delete.set_defaults(handler=alias_delete_command)


def _registry(settings: Settings) -> Registry:
    return Registry(open_store(settings))


def _primary(record) -> str:
    metrics = record.metrics.get("metrics", {})
    metric = record.metrics.get("gate", {}).get("metric")
    return f"{metric}={metrics[metric]:.4f}" if metric and metrics.get(metric) is not None else "-"


def list_command(args, settings: Settings) -> int:
    unreadable: list[tuple[str, str]] = []
    records = _registry(settings).list_versions(args.model, unreadable=unreadable)
    if args.json:
        print_json([r.to_dict() for r in records])
    elif not records and not unreadable:
        print("no registered versions")
    elif records:
        print(f"{'MODEL':<20} {'VERSION':>7}  {'STAGE':<17} {'METRIC':<16} {'CREATED':<25} ALIASES")
        for r in records:
            aliases = ",".join(r.aliases) or "-"
            print(f"{r.name:<20} {r.version:>7}  {r.stage:<17} {_primary(r):<16} {r.created_at:<25} {aliases}")
    for _, reason in unreadable:
        print(f"error: {reason}", file=sys.stderr)
    return 1 if unreadable else 0


def show_command(args, settings: Settings) -> int:
    registry = _registry(settings)
    record = registry.resolve(args.ref)
    if args.json:
        print_json(record.to_dict())
        return _verify(registry, record, quiet=True) if args.verify else 0
    print(f"{record.ref}  stage={record.stage}  aliases={','.join(record.aliases) or '-'}  created={record.created_at}")
    print(f"bundle: {record.bundle_uri}")
    print(f"task: {record.schema['task']}  target: {record.schema['target']}")
    for f in record.schema["features"]:
        print(f"  {f['name']:<24} {f['kind']}" + (f"  {f['categories']}" if f.get("categories") else ""))
    print(f"metrics: {_primary(record)}  gate: {record.metrics.get('gate', {}).get('reason', '-')}")
    print(f"lineage: {record.lineage}")
    return _verify(registry, record) if args.verify else 0


def _verify(registry: Registry, record, quiet: bool = False) -> int:
    """Check the bundle's files: each problem on stderr (exit status 1), else one line (none with --json)."""
    problems = registry.verify(record)
    for problem in problems:
        print(f"error: {record.ref}: {problem}", file=sys.stderr)
    if not problems and not quiet:
        print(f"verified: {len(record.files)} files match their SHA-256 in the version record")
    return 1 if problems else 0


def approve_command(args, settings: Settings) -> int:
    record = _registry(settings).approve(args.ref)
    print(f"{record.ref} approved: now {record.stage}")
    return 0


def reject_command(args, settings: Settings) -> int:
    record = _registry(settings).reject(args.ref, args.reason or "rejected by reviewer")
    print(f"{record.ref} rejected")
    return 0


def alias_set_command(args, settings: Settings) -> int:
    record = _registry(settings).set_alias(args.ref, args.alias, args.reason)
    print(f"{record.name}@{args.alias} -> {record.ref}")
    return 0


def alias_delete_command(args, settings: Settings) -> int:
    version = _registry(settings).delete_alias(args.name, args.alias, args.reason)
    print(f"{args.name}@{args.alias} deleted (it pointed at {args.name}:{version})")
    return 0
