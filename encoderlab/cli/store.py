"""CLI verbs of the store itself: `store check [--fix]`, `store rebuild`, `store du`, `store gc [--apply]`,
`store gc --models --group G [--keep-best K] [--apply]`."""

from __future__ import annotations

from encoderlab.cli.common import add_verb, console, open_store, print_rows


def cmd_rebuild(args):
    """`store rebuild` (and its older name `reindex`): the index recreated from the run folders."""
    n = open_store(args).rebuild()
    console.print(f"rebuilt the index of {args.store} from {n} run folders")


def cmd_store(args):
    from encoderlab.store import check as K
    store = open_store(args)
    if args.action == "gc":
        return drop_models(args, store) if args.models else collect_garbage(args, store)
    if args.action == "du":
        return disk_usage(args, store)
    if args.action == "rebuild":
        return cmd_rebuild(args)
    report = K.check(store)
    if args.fix:
        K.fix(store, report)
    rows = [{"kind": f.kind, "run": f.run, "detail": f.detail, "path": f.path,
             "state": "fixed" if f in report.fixed else ("DATA AT RISK" if f.kind in K.CORRUPT else "open")}
            for f in report.findings]
    if rows:
        print_rows(rows, [("kind", "kind"), ("run", "run"), ("detail", "detail"), ("state", "state")],
                   title=f"store check: {args.store}")
    open_ = report.problems
    console.print(f"{report.runs} run folders, {report.checkpoints} checkpoints checked: "
                  f"{len(report.findings)} findings, {len(report.fixed)} fixed, {len(open_)} open"
                  + (f" ({len(report.corrupt)} with data at risk)" if report.corrupt else ""))
    if open_ and not args.fix and any(f.kind not in K.CORRUPT for f in open_):
        console.print("repair the leftovers and the index with: encoderlab store check --fix")
    if open_:
        raise SystemExit(1)


def _mb(n: int) -> float:
    return round(n / 1e6, 1)


def collect_garbage(args, store) -> None:
    """`store gc`: what completed runs no longer need (checkpoints, optimizer state); deleted with --apply."""
    from encoderlab.store import space
    rows = space.gc(store, apply=args.apply)
    freed = sum(u.reclaimable for u in rows)
    if rows:
        print_rows([{"run": u.run, "group": u.group, "size_mb": _mb(u.total), "reclaim_mb": _mb(u.reclaimable),
                     "what": ", ".join(sorted({"checkpoints/" if p.name == "checkpoints" else "optimizer state"
                                               for p in u.paths}))} for u in rows],
                   [("run", "run"), ("group", "group"), ("size_mb", "size MB", 1), ("reclaim_mb", "reclaim MB", 1),
                    ("what", "what")], args.format,
                   title=f"store gc: {args.store}" + ("" if args.apply else " (dry run)"))
    if args.format == "table":
        verb = "freed" if args.apply else "would free"
        console.print(f"{'' if args.apply else 'dry run: '}{len(rows)} completed run(s): {verb} {_mb(freed):,.1f} MB"
                      + ("" if args.apply or not rows else "; delete with: encoderlab store gc --apply"))


def drop_models(args, store) -> None:
    """`store gc --models --group G`: the final weights of runs outside the best K configurations."""
    from encoderlab.analysis import keep
    from encoderlab.errors import ConfigError
    if not args.group:
        raise ConfigError("store gc --models ranks the configurations of one group: name it with --group G "
                          "(encoderlab runs lists the groups)")
    if args.keep_best < 1:
        raise ConfigError(f"--keep-best {args.keep_best}: keep at least 1 configuration")
    decisions, metric = keep.plan(store, args.group, args.keep_best, args.metric)
    freed = keep.apply(store, decisions) if args.apply else 0
    rows = [{"run": d.run, "config": d.config, "rank": d.rank, "value": d.value, "model_mb": _mb(d.model_bytes),
             "decision": "keep" if d.keep else ("removed" if args.apply else "remove"), "reason": d.reason}
            for d in decisions]
    print_rows(rows, [("run", "run"), ("config", "configuration"), ("rank", "rank"),
                      ("value", f"validation {metric}", 4), ("model_mb", "model MB", 1), ("decision", "weights")],
               args.format, title=f"store gc --models: group {args.group}" + ("" if args.apply else " (dry run)"))
    if args.format == "table":
        drop = [d for d in decisions if not d.keep]
        mb = _mb(sum(d.model_bytes for d in drop))
        n_cfg = len({d.config for d in decisions if d.keep and d.rank is not None})
        if not decisions:
            console.print(f"group '{args.group}': no completed run with model weights")
        elif args.apply:
            console.print(f"removed the weights of {len(drop)} run(s), freed {_mb(freed):,.1f} MB; kept the models "
                          f"of the best {n_cfg} configuration(s) by validation {metric}; metrics, curves and "
                          f"predictions of every run are kept")
        else:
            console.print(f"dry run: would remove the weights of {len(drop)} run(s) ({mb:,.1f} MB), keeping the "
                          f"models of the best {n_cfg} configuration(s) by validation {metric}; do it with: "
                          f"encoderlab store gc --models --group {args.group} --keep-best {args.keep_best} --apply")


def disk_usage(args, store) -> None:
    """`store du`: the space per run, or per group with --by group."""
    from encoderlab.store import space
    rows = space.usage(store)
    if args.by == "group":
        groups: dict[str, dict] = {}
        for u in rows:
            g = groups.setdefault(u.group or "-", {"group": u.group or "-", "runs": 0, "size_mb": 0.0,
                                                   "checkpoints_mb": 0.0, "reclaim_mb": 0.0})
            g["runs"] += 1
            g["size_mb"] += _mb(u.total)
            g["checkpoints_mb"] += _mb(u.checkpoints)
            g["reclaim_mb"] += _mb(u.reclaimable)
        out = sorted(groups.values(), key=lambda g: -g["size_mb"])
        cols = [("group", "group"), ("runs", "runs"), ("size_mb", "size MB", 1),
                ("checkpoints_mb", "checkpoints MB", 1),
                ("reclaim_mb", "reclaimable MB", 1)]
    else:
        out = [{"run": u.run, "group": u.group, "status": u.status, "size_mb": _mb(u.total),
                "model_mb": _mb(u.model), "checkpoints_mb": _mb(u.checkpoints), "reclaim_mb": _mb(u.reclaimable)}
               for u in rows]
        cols = [("run", "run"), ("group", "group"), ("status", "status"), ("size_mb", "size MB", 1),
                ("model_mb", "model MB", 1), ("checkpoints_mb", "checkpoints MB", 1),
                ("reclaim_mb", "reclaimable MB", 1)]
    print_rows(out, cols, args.format, title=f"store du: {args.store}")
    if args.format == "table":
        total, reclaim = sum(u.total for u in rows), sum(u.reclaimable for u in rows)
        console.print(f"{len(rows)} runs, {_mb(total):,.1f} MB; completed runs no longer need "
                      f"{_mb(reclaim):,.1f} MB (encoderlab store gc)")


def add_verbs(sub) -> None:
    p = add_verb(sub, "store", cmd_store,
             "check the run store (index vs run folders, partial runs, unreadable checkpoints, leftovers "
             "of interrupted writes) and repair what is safe; rebuild the index from the folders; show the "
             "space per run or group (du); reclaim what completed runs no longer need (gc: dry run unless --apply)",
             "encoderlab store check\n  encoderlab store check --fix\n  encoderlab store rebuild\n"
             "  encoderlab store du --by group\n  encoderlab store gc            # dry run\n"
             "  encoderlab store gc --apply\n"
             "  encoderlab store gc --models --group lexname-grid --keep-best 3   # dry run")
    p.add_argument("action", choices=("check", "rebuild", "du", "gc"))
    p.add_argument("--by", choices=("run", "group"), default="run", help="du: one row per run or per group")
    p.add_argument("--apply", action="store_true",
                   help="gc: really delete (default: only list what would be freed); running, interrupted, "
                        "failed and pruned runs are never touched")
    p.add_argument("--models", action="store_true",
                   help="gc: instead, remove the final model weights of a group's completed runs outside the best "
                        "--keep-best configurations by mean validation score (metrics, curves, predictions stay)")
    p.add_argument("--group", help="gc --models: the group whose configurations are ranked")
    p.add_argument("--keep-best", type=int, default=1, metavar="K",
                   help="gc --models: configurations (all their seeds) that keep their weights (default 1)")
    p.add_argument("--metric", help="gc --models: validation metric to rank by (default: the runs' task metric)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="du / gc output")
    p.add_argument("--fix", action="store_true",
                   help="check: delete temp leftovers of dead writers, drop torn metric lines, re-index; "
                        "never touches partial runs or corrupt checkpoints")
    add_verb(sub, "reindex", cmd_rebuild, "rebuild index.sqlite from the run folders (the same as `store rebuild`)",
         "encoderlab reindex")
