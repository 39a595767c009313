"""Scale-out flags on existing verbs: `sweep --backend ray`, `rank --backend ray` (a ranking
[sweep]), `run --nproc N`."""

from __future__ import annotations

import os
import subprocess
import sys


def add_verbs(sub, _cmd) -> None:
    for verb in ("sweep", "rank"):
        p = sub.choices[verb]
        p.description += (f"\n  encoderlab {verb} exp.toml --backend ray --cpus-per-run 1      (local Ray)\n"
                          f"  encoderlab {verb} exp.toml --backend ray --address auto        (running cluster)")
        p.add_argument("--backend", choices=["local", "ray"], default="local",
                       help="a [sweep]: local: one run after another in this process; ray: one Ray task per run")
        p.add_argument("--address", default="",
                       help="ray: cluster to join (auto, ray://host:port); empty = start a local Ray here")
        p.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs reserved by each run's task")
        p.add_argument("--num-cpus", type=int, default=None,
                       help="ray, local Ray only: CPUs it may use (default: all cores)")
    sub.choices["sweep"].set_defaults(func=cmd_sweep)

    p = sub.choices["run"]
    p.description = p.description.replace(
        "\n\nSettings", "\n  encoderlab run exp.toml --nproc 2      (data-parallel: 2 processes, torchrun + gloo)"
        "\n\nSettings", 1)
    p.add_argument("--nproc", type=int, default=1,
                   help="train this one run data-parallel in N processes on this machine (torch.distributed; "
                        "global batch stays train.batch_size)")
    p.set_defaults(func=cmd_run)


def cmd_sweep(args):
    from encoderlab import cli
    from encoderlab import search
    if search.declared(args.file):
        return search_cmd(args)
    if args.backend == "local" or args.dry_run:
        return cli.cmd_sweep(args)
    from encoderlab import sweep as S
    points = S.expand(args.file, args.overrides)
    if not points:
        return
    runs = ray_sweep(args, points, "classification", "sweep")
    failed = [r for r in runs if r.status != "completed"]
    group = points[0].cfg.group
    cli.console.print(f"sweep complete: {len(runs) - len(failed)} completed, {len(failed)} failed, in group "
                      f"'{group}'. Compare them: encoderlab compare --group {group}")


def search_cmd(args):
    """`sweep FILE` whose [sweep] is a search (`search = ...`): trials until `trials` finished."""
    from encoderlab import cli
    from encoderlab import search
    store = cli._store(args)

    def on_trial(result, params):
        style = {"complete": "green", "pruned": "yellow"}.get(result.state, "red")
        value = "" if result.value is None else f" {result.value:.4f}"
        cli.console.print(f"trial {result.number} [{style}]{result.state}[/]{value} {search.label(params)}"
                          + (f": {result.message}" if result.message and result.state != "complete" else ""),
                          soft_wrap=True)
    if args.dry_run:
        base, spec = search.load(args.file, args.overrides)
        cli.console.print(f"{spec.search} search: {spec.trials} trials x {len(spec.seeds)} seeds, pruner "
                          f"{spec.pruner}, group '{base.group}'; searched: {', '.join(spec.space)}")
        return
    try:
        if args.backend == "ray":
            from encoderlab.scale import raysearch
            coord = raysearch.run_search(args.file, store, args.overrides, address=args.address or None,
                                         cpus_per_run=args.cpus_per_run, num_cpus=args.num_cpus, on_trial=on_trial)
        else:
            coord = search.run_search(args.file, store, args.overrides, on_trial=on_trial)
    except KeyboardInterrupt:
        cli.err.print(f"[yellow]interrupted[/]; re-run `encoderlab sweep {args.file}` to continue (finished "
                      "trials stay; the interrupted trial is asked again and its completed seeds are reused)")
        sys.exit(130)
    rows = coord.summary()
    group = coord.base.group
    coord.close()
    states = [r["state"] for r in rows]
    cli.console.print(f"search: {states.count('complete')} complete, {states.count('pruned')} pruned, "
                      f"{states.count('fail')} failed trials in group '{group}'. Read it: encoderlab report "
                      f"--group {group} -o search.html")


def ray_sweep(args, points, kind: str, verb: str) -> list:
    """The points not yet done as Ray tasks running the recipe of run `kind`, with a line per
    point; returns the runs of all points (`encoderlab VERB FILE --backend ray`)."""
    from encoderlab import cli
    from encoderlab import sweep as S
    from encoderlab.scale import raysweep
    store = cli._store(args)

    def on_point(i, n, point, action):
        if action not in ("start", "resume"):
            cli.console.print(f"{point.label}: {'done, skipping' if action == 'skip' else 'running elsewhere'}")

    def on_done(point, out):
        style = "green" if out.status == "completed" else "red"
        cli.console.print(f"[{style}]{out.status}[/] {point.label} -> run {out.run_id}"
                          + (f": {out.message}" if out.message else ""), soft_wrap=True)

    cli.console.print(f"submitting {sum(a in ('start', 'resume') for _, a, _ in S.plan(store, points, kind))} of "
                      f"{len(points)} runs to Ray ({args.address or 'a local Ray started here'})")
    try:
        return raysweep.run_sweep(points, store, kind=kind, address=args.address or None,
                                  cpus_per_run=args.cpus_per_run, num_cpus=args.num_cpus, on_point=on_point,
                                  on_done=on_done)
    except KeyboardInterrupt:
        cli.err.print(f"[yellow]interrupted[/]; re-run `encoderlab {verb} {args.file} --backend ray` to continue")
        sys.exit(130)


def cmd_run(args):
    from encoderlab import cli
    if int(os.environ.get("RANK", "0")) > 0:        # a torch.distributed follower: train, write nothing
        from encoderlab import config as C
        from encoderlab.train.fit import fit
        fit(C.load(args.file, args.overrides), cli._store(args), progress=False)
        return
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from encoderlab.train.distributed import launch_command
        argv = ["--store", str(args.store), "run", args.file, *args.overrides,
                *(["--quiet"] if args.quiet else []), *(["--json"] if args.json else [])]
        code = subprocess.call(launch_command(args.nproc, argv))
        if code:
            cli.err.print(f"[bold red]error:[/] the {args.nproc} training processes exited with status {code}")
            sys.exit(code)
        return
    return cli.cmd_run(args)
