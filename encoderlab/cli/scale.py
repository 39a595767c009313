"""The command line's side of scaling out: `--backend ray` on `sweep` and `rank` (a [sweep]) and
`--nproc N` on `run`. The work itself is in encoderlab.scale (Ray) and encoderlab.train.distributed
(torchrun); the verbs declare these flags where they are built."""

from __future__ import annotations

import os
import subprocess
import sys

from encoderlab.cli.common import console, interrupted, open_store, print_error


def ray_examples(verb: str) -> str:
    """The lines a verb with --backend adds to the examples of its --help."""
    return (f"\n  encoderlab {verb} exp.toml --backend ray --cpus-per-run 1      (local Ray)"
            f"\n  encoderlab {verb} exp.toml --backend ray --address auto        (running cluster)")


def ray_flags(p) -> None:
    """--backend, --address, --cpus-per-run, --num-cpus of a verb that runs a [sweep]."""
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="a [sweep]: local: one run after another in this process; ray: one Ray task per run")
    p.add_argument("--address", default="",
                   help="ray: cluster to join (auto, ray://host:port); empty = start a local Ray here")
    p.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs reserved by each run's task")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="ray, local Ray only: CPUs it may use (default: all cores)")


NPROC_EXAMPLE = "\n  encoderlab run exp.toml --nproc 2      (data-parallel: 2 processes, torchrun + gloo)"


def nproc_flag(p) -> None:
    p.add_argument("--nproc", type=int, default=1,
                   help="train this one run data-parallel in N processes on this machine (torch.distributed; "
                        "global batch stays train.batch_size)")


def ray_sweep(args, points, kind: str, verb: str) -> list:
    """The points not yet done as Ray tasks running the recipe of run `kind`, with a line per
    point; returns the runs of all points (`encoderlab VERB FILE --backend ray`)."""
    from encoderlab import sweep as S
    from encoderlab.scale import raysweep
    store = open_store(args)

    def on_point(i, n, point, action):
        if action not in ("start", "resume"):
            console.print(f"{point.label}: {'done, skipping' if action == 'skip' else 'running elsewhere'}")

    def on_done(point, out):
        style = "green" if out.status == "completed" else "red"
        console.print(f"[{style}]{out.status}[/] {point.label} -> run {out.run_id}"
                      + (f": {out.message}" if out.message else ""), soft_wrap=True)

    console.print(f"submitting {sum(a in ('start', 'resume') for _, a, _ in S.plan(store, points, kind))} of "
                  f"{len(points)} runs to Ray ({args.address or 'a local Ray started here'})")
    try:
        return raysweep.run_sweep(points, store, kind=kind, address=args.address or None,
                                  cpus_per_run=args.cpus_per_run, num_cpus=args.num_cpus, on_point=on_point,
                                  on_done=on_done)
    except KeyboardInterrupt:
        interrupted(then=f"re-run `encoderlab {verb} {args.file} --backend ray` to continue")


def data_parallel(args) -> bool:
    """`run --nproc N`: True when this process's part is done here — it launched the N torchrun
    processes and they finished, or it is a follower (rank > 0) that trained and writes nothing.
    False: train in this process as usual (one process, or rank 0 of the torchrun world)."""
    from encoderlab import config as C
    if int(os.environ.get("RANK", "0")) > 0:
        from encoderlab.train.fit import fit
        fit(C.load(args.file, args.overrides), open_store(args), progress=False)
        return True
    if args.nproc <= 1 or "WORLD_SIZE" in os.environ:
        return False
    from encoderlab.train.distributed import launch_command
    argv = ["--store", str(args.store), "run", args.file, *args.overrides,
            *(["--quiet"] if args.quiet else []), *(["--json"] if args.json else [])]
    code = subprocess.call(launch_command(args.nproc, argv))
    if code:
        print_error(f"the {args.nproc} training processes exited with status {code}")
        sys.exit(code)
    return True
