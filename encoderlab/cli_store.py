"""CLI verbs of store integrity: `store check [--fix]`, `store rebuild`."""

from __future__ import annotations


def cmd_rebuild(args):
    """`store rebuild` (and its older name `reindex`): the index recreated from the run folders."""
    from encoderlab.cli import _store, console
    n = _store(args).rebuild()
    console.print(f"rebuilt the index of {args.store} from {n} run folders")


def cmd_store(args):
    from encoderlab.cli import _store, console, print_rows
    from encoderlab.store import check as K
    if args.action == "rebuild":
        return cmd_rebuild(args)
    store = _store(args)
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


def add_verbs(sub, _cmd) -> None:
    p = _cmd(sub, "store", cmd_store,
             "check the run store (index vs run folders, partial runs, unreadable checkpoints, leftovers "
             "of interrupted writes) and repair what is safe; or rebuild the index from the folders",
             "encoderlab store check\n  encoderlab store check --fix\n  encoderlab store rebuild")
    p.add_argument("action", choices=("check", "rebuild"))
    p.add_argument("--fix", action="store_true",
                   help="check: delete temp leftovers of dead writers, drop torn metric lines, re-index; "
                        "never touches partial runs or corrupt checkpoints")
    _cmd(sub, "reindex", cmd_rebuild, "rebuild index.sqlite from the run folders (the same as `store rebuild`)",
         "encoderlab reindex")
