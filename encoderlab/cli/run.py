"""The verbs that train from an experiment file or pick up a run: `quickstart`, `run`, `sweep`, `resume`,
and the ones that help write the file: `lrfind`, `config`, `datasets`, `models`."""

from __future__ import annotations

import textwrap
from pathlib import Path

from encoderlab import config as C
from encoderlab.cli import pretrain, scale
from encoderlab.cli.common import (QUICKSTART, add_verb, after_run, console, experiment_flags, format_flag,
                                   interrupted, keep_best_models, open_store, print_data, print_rows,
                                   say_machine)


def cmd_run(args):
    if scale.data_parallel(args):       # `--nproc N`: torchrun ran the N processes, or this is one of them
        return
    fine_tune(args, C.load(args.file, args.overrides))


def fine_tune(args, cfg: C.ExperimentConfig) -> None:
    """One classification run of `cfg` in this process, with a line per evaluation."""
    from encoderlab.train.fit import fit
    store = open_store(args)

    def on_event(ev):
        if ev["split"] == "data" and not args.quiet:
            console.rule("data")
            print_data(ev["detail"])
        elif ev["split"] == "validation" and not args.quiet:
            m = ev["metrics"]
            from encoderlab.tasks import score_line
            console.print(f"  epoch {ev['epoch']:.2f} step {ev['step']}: val loss {m['loss']:.4f} {score_line(m)}")

    if not args.quiet:
        say_machine(cfg)
    try:
        run = fit(cfg, store, callback=on_event, progress=not args.quiet)
    except KeyboardInterrupt:
        interrupted(store)
    after_run(args, run)


def cmd_quickstart(args):
    cfg = C.load(QUICKSTART, args.overrides)
    if not args.quiet:
        console.print("[bold]encoderlab quickstart[/]: fine-tune MiniLM-L6 (pretrained) on builtin:"
                      f"{cfg.data.source.split(':')[-1]} (WordNet gloss -> lexicographer category); "
                      f"{cfg.train.epochs} epochs, {cfg.data.max_train or 'all'} training examples")
    args.file = None
    fine_tune(args, cfg)


# how `resume` reports progress and the result, per resumable kind: (event printer, after-run printer)
RESUME_OUTPUT = {"classification": (None, after_run), "multilabel": (None, after_run), "regression": (None, after_run),
                 "pretraining": (pretrain.pretrain_events, pretrain.after_pretrain)}


def cmd_resume(args):
    from encoderlab import kinds
    store = open_store(args)
    run = store.get(args.run)
    if run.status == "completed":
        console.print(f"run {run.id} is already completed")
        return
    kind = kinds.require(run, "resume")
    events, after = RESUME_OUTPUT[kind.name]
    try:
        run = kind.load_recipe()(run.config(), store, resume=run, callback=events(args) if events else None,
                                 progress=not args.quiet)
    except KeyboardInterrupt:
        interrupted(run_id=run.id)
    after(args, run)


def cmd_sweep(args):
    from encoderlab import search
    from encoderlab import sweep as S
    if search.declared(args.file):
        return search_cmd(args)
    if args.backend == "ray" and not args.dry_run:
        return sweep_on_ray(args)
    store = open_store(args)
    points = S.expand(args.file, args.overrides)
    steps = S.plan(store, points)
    if args.dry_run:
        return print_plan(args, points, steps)

    def on_point(i, n, point, action):
        verb = {"skip": "done, skipping", "busy": "running elsewhere, skipping",
                "resume": "resuming", "start": "starting"}[action]
        console.rule(f"[bold]sweep {i + 1}/{n}[/] {point.label}: {verb}")

    try:
        runs = S.run_sweep(points, store, progress=not args.quiet, on_point=on_point)
    except KeyboardInterrupt:
        interrupted(then=f"re-run `encoderlab sweep {args.file}` to continue "
                         "(finished runs are skipped, the interrupted one resumes)")
    console.print(f"sweep complete: {len(runs)} runs in group '{points[0].cfg.group}'. "
                  f"Compare them: encoderlab compare --group {points[0].cfg.group}")
    keep_best_models(args, store, points[0].cfg.group)


def search_cmd(args):
    """`sweep FILE` whose [sweep] is a search (`search = ...`): trials until `trials` finished."""
    from encoderlab import search
    store = open_store(args)

    def on_trial(result, params):
        style = {"complete": "green", "pruned": "yellow"}.get(result.state, "red")
        value = "" if result.value is None else f" {result.value:.4f}"
        console.print(f"trial {result.number} [{style}]{result.state}[/]{value} {search.label(params)}"
                          + (f": {result.message}" if result.message and result.state != "complete" else ""),
                          soft_wrap=True)
    if args.dry_run:
        base, spec = search.load(args.file, args.overrides)
        console.print(f"{spec.search} search: {spec.trials} trials x {len(spec.seeds)} seeds, pruner "
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
        interrupted(then=f"re-run `encoderlab sweep {args.file}` to continue (finished trials stay; the "
                         "interrupted trial is asked again and its completed seeds are reused)")
    rows = coord.summary()
    group = coord.base.group
    coord.close()
    states = [r["state"] for r in rows]
    console.print(f"search: {states.count('complete')} complete, {states.count('pruned')} pruned, "
                      f"{states.count('fail')} failed trials in group '{group}'. Read it: encoderlab report "
                      f"--group {group} -o search.html")
    keep_best_models(args, store, group)


def print_plan(args, points, steps) -> None:
    """`sweep --dry-run`: each point, what its varied keys are and what would happen to it."""
    rows = [{"n": i + 1, "name": p.cfg.name, "group": p.cfg.group, "action": a,
             "run": r.id if r else "-", **{k: v for k, v in p.varied.items()}}
            for i, (p, a, r) in enumerate(steps)]
    keys = list(points[0].varied) if points else []
    print_rows(rows, [("n", "#"), ("name", "name"), *[(k, k) for k in keys], ("action", "action"),
                      ("run", "run")], args.format)
    todo = sum(a in ("start", "resume") for _, a, _ in steps)
    console.print(f"{len(points)} runs in group '{points[0].cfg.group if points else '-'}': "
                  f"{todo} to run, {len(points) - todo} done or busy")


def sweep_on_ray(args) -> None:
    from encoderlab import sweep as S
    points = S.expand(args.file, args.overrides)
    if not points:
        return
    runs = scale.ray_sweep(args, points, "classification", "sweep")
    failed = [r for r in runs if r.status != "completed"]
    group = points[0].cfg.group
    console.print(f"sweep complete: {len(runs) - len(failed)} completed, {len(failed)} failed, in group "
                  f"'{group}'. Compare them: encoderlab compare --group {group}")
    keep_best_models(args, open_store(args), group)


def cmd_lrfind(args):
    from encoderlab.train.lrfind import lr_find
    cfg = C.load(args.file, args.overrides)
    result = lr_find(cfg, start=args.start, end=args.end, steps=args.steps, progress=True,
                     store_root=open_store(args).root)
    out = Path(args.out or f"lrfind-{cfg.name}")
    json_path, png_path = result.save(out)
    console.print(result.summary(), markup=False)
    console.print(f"plot: {png_path}   data: {json_path}")
    console.print(f"use it: encoderlab run {args.file} train.lr={result.suggested:.2g}")
    if result.search_line():
        console.print(f"or search the range: [sweep] search = \"tpe\" with {result.search_line()}", markup=False)


def cmd_config(args):
    if args.reference:
        rows = C.reference()
        print("| key | type | default | meaning |\n|---|---|---|---|")
        for key, tp, default, doc in rows:
            print(f"| `{key}` | {tp} | `{default}` | {doc} |")
        return
    cfg = C.load(args.file, args.overrides)
    print(C.to_toml(cfg), end="")


def cmd_datasets(args):
    from encoderlab.data import builtin
    rows = []
    for n in builtin.names():
        d = builtin.get(n)
        rows.append({"name": f"builtin:{n}", "task": d.task, "description": d.description})
    print_rows(rows, [("name", "name"), ("task", "task"), ("description", "description")], args.format)


def cmd_models(args):
    from encoderlab.models import registry
    rows = [{"name": k, "description": v} for k, v in registry.list_models().items()]
    print_rows(rows, [("name", "name"), ("description", "description")], args.format)


# -- parser --------------------------------------------------------------------------------------

def add_quickstart_run_sweep(sub) -> None:
    p = add_verb(sub, "quickstart", cmd_quickstart, "fine-tune the bundled MiniLM-L6 on bundled WordNet data",
                 "encoderlab quickstart train.epochs=1")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=1")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    ref = textwrap.indent("\n".join(f"{k} = {d}   # {doc}" for k, _, d, doc in C.reference()), "  ")
    p = add_verb(sub, "run", cmd_run, "run one experiment file as a stored run",
                 f"encoderlab run exp.toml train.lr=2e-5 model.init=random{scale.NPROC_EXAMPLE}"
                 f"\n\nSettings (key = default):\n{ref}")
    experiment_flags(p, "experiment TOML file")
    scale.nproc_flag(p)

    p = add_verb(sub, "sweep", cmd_sweep, "run every point of an experiment's [sweep] (grid x seeds x folds)",
                 "encoderlab sweep examples/pre-vs-npre.toml --dry-run" + scale.ray_examples("sweep"))
    p.add_argument("file", help="experiment TOML file with a [sweep] table")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every point")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what would happen to each")
    p.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    format_flag(p)
    scale.ray_flags(p)


def add_lrfind(sub) -> None:
    p = add_verb(sub, "lrfind", cmd_lrfind, "learning-rate range test: loss vs exponentially growing LR, "
                 "with a suggested train.lr", "encoderlab lrfind examples/own-file.toml --steps 100")
    p.add_argument("file", help="experiment TOML file")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (stops earlier on divergence)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps")
    p.add_argument("--out", help="folder for lrfind.json and lrfind.png (default ./lrfind-<name>)")


def add_resume(sub) -> None:
    p = add_verb(sub, "resume", cmd_resume, "continue an interrupted run from its newest checkpoint",
                 "encoderlab resume 20261123-101500-quickstart-1a2b")
    p.add_argument("run", help="run id (a unique prefix or suffix is enough; 'last' = newest)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")


def add_config_datasets_models(sub) -> None:
    p = add_verb(sub, "config", cmd_config, "print a resolved experiment config, or the config reference",
                 "encoderlab config exp.toml train.lr=1e-5   |   encoderlab config --reference")
    p.add_argument("file", nargs="?")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--reference", action="store_true", help="every key with type, default and meaning (Markdown)")

    p = add_verb(sub, "datasets", cmd_datasets, "list builtin datasets", "encoderlab datasets")
    format_flag(p)
    p = add_verb(sub, "models", cmd_models, "list builtin models", "encoderlab models")
    format_flag(p)
