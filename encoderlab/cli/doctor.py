"""The verb `doctor`: the machine as encoderlab sees it (paste it into bug reports)."""

from __future__ import annotations

import json

from encoderlab.cli.common import add_verb, console


def cmd_doctor(args):
    from encoderlab import machine
    rep = machine.report(args.store, refresh=args.refresh)
    if args.json:
        print(json.dumps(rep, indent=2))
        return
    cpu, mm, use, st = rep["cpu"], rep["matmul_gflops"], rep["runs_use"], rep["store"]
    over = " ".join(f"{k}={v}" for k, v in cpu["overrides"].items())
    lines = [
        ("cpu", f"{cpu['model']}; torch capability {cpu['capability']}"
                f"{' (' + over + ')' if over else ''}; flags {' '.join(cpu['isa_flags']) or '-'}"),
        ("cores", f"{cpu['cores_available']} available to this process ({cpu['cores_reason']}); "
                  f"{cpu['os_cpus']} in the machine"),
        ("matmul", f"fp32 {mm['fp32']:.1f} GFLOP/s, bf16 (autocast) {mm['bf16']:.1f} GFLOP/s on {mm['shape']} "
                   f"({'cached' if mm['cached'] else 'measured now'}"
                   f"{'; at ' + mm['busy'] + ', not cached: numbers may be low' if mm.get('busy') else ''}"
                   "; --refresh to measure again)"),
        ("runs use", f"precision {use['precision_reason']}"),
        ("", f"{use['threads']} thread(s): {use['threads_reason']}"),
        ("cuda", "not available" if not rep["cuda"]["available"] else
                 f"{rep['cuda']['device']}, bf16 {'yes' if rep['cuda']['bf16'] else 'no'}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if k != "platform")),
        ("platform", rep["versions"]["platform"]),
        ("store", f"{st['path']} ({'exists' if st['exists'] else 'not created yet'}); "
                  f"{st['free_gb']:.1f} GB free on its disk"),
    ]
    for key, text in lines:
        console.print(f"[bold]{key:<9}[/] {text}", markup=True, highlight=False, soft_wrap=True)


def add_verbs(sub) -> None:
    p = add_verb(sub, "doctor", cmd_doctor,
             "show the machine as encoderlab sees it: CPU kind, cores, measured fp32/bf16 matmul speed, the "
             "precision and threads runs will use, CUDA, library versions, the store and its free disk",
             "encoderlab doctor\n  encoderlab doctor --json > machine.json")
    p.add_argument("--refresh", action="store_true", help="measure the matmul speeds again instead of the cache")
    p.add_argument("--json", action="store_true", help="machine-readable output")
