"""A search on a real two-node Ray cluster (a head and a second node started on this machine
with separate temp dirs and separate local scratch stores): one index writer, every run handed
back and indexed, trials on both nodes."""

from __future__ import annotations

import os
import shutil
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("optuna")

from test_search import write  # noqa: E402
from encoderlab.store.runs import RunStore  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(tmp_path_factory):
    if not Path(RAY).exists():
        pytest.skip("the ray CLI is not installed beside this python")
    # short paths: Ray's unix sockets live under the temp dir (107-character limit)
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"rt{os.getpid()}"
    heads, worker = base / "h", base / "w"
    scratch = {n: tmp_path_factory.mktemp(f"scratch-{n}") for n in ("head", "node2")}
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats", "--include-dashboard=false"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", f"--temp-dir={heads}", *common],
                       env={**env, "ENCODERLAB_SCRATCH": str(scratch["head"])}, check=True,
                       capture_output=True, timeout=60)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={worker}", "--num-cpus", "1",
                        "--disable-usage-stats"],
                       env={**env, "ENCODERLAB_SCRATCH": str(scratch["node2"])}, check=True,
                       capture_output=True, timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        _stop(env, base)
        pytest.skip(f"could not start a two-node Ray cluster: {getattr(e, 'stderr', b'')[-300:]!r}")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield f"127.0.0.1:{port}", scratch
    import ray
    if ray.is_initialized():
        ray.shutdown()
    _stop(env, base)


def _ours(base: Path) -> list[int]:
    """Pids of the Ray processes of this test's cluster: their command lines name its temp dirs
    (`ray stop` would stop every Ray cluster of the user on the machine)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if str(base) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _stop(env, base: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _ours(base):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while _ours(base) and time.time() < deadline:
            time.sleep(0.2)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow     # ~40 s on an idle 2-core machine (two `ray start`s), minutes when it is busy
def test_two_node_search_has_one_index_writer(two_nodes, two_class_csv, tmp_path):
    from encoderlab.scale import raysearch
    address, scratch = two_nodes
    path = write(tmp_path, two_class_csv, 'search = "random"\ntrials = 4\npruner = "none"\nseeds = [0, 1]\n'
                 '"train.lr" = { log_uniform = [1e-4, 1e-2] }')
    store = RunStore(tmp_path / "runs")
    results = []
    handle = raysearch.run_search(path, store, address=address, cpus_per_run=1,
                                  on_trial=lambda r, p: results.append(r))
    assert [r["state"] for r in handle.summary()] == ["complete"] * 4
    assert len({r.node for r in results}) == 2          # trials ran on both nodes
    ids = sorted(i for r in results for i in r.runs)
    assert len(ids) == 8 and sorted(row["id"] for row in store.list(group="se")) == ids
    # the workers wrote folders on their own scratch disks, never an index; all were handed back
    for folder in scratch.values():
        assert not list(folder.rglob("index.sqlite*")) and not list(folder.rglob("run.json"))
    assert not list((tmp_path / "runs").glob(".unpack-*"))
    rows = {r["id"]: r["steps_done"] for r in store.list(group="se")}
    assert store.rebuild() == 8 and {r["id"]: r["steps_done"] for r in store.list(group="se")} == rows
    store.close()


@pytest.mark.slow     # ~40 s on an idle 2-core machine (two `ray start`s), minutes when it is busy
def test_two_node_sweep_has_one_index_writer(two_nodes, two_class_csv, tmp_path):
    """A plain grid sweep on the two nodes: the driver alone writes the index; one point was
    finished before (skipped), one was interrupted after a checkpoint (its folder travels to a
    worker with the checkpoint and is resumed there, keeping its id), the rest start."""
    from encoderlab import sweep as S
    from encoderlab.scale import raysweep
    from encoderlab.store import check
    from encoderlab.store.runs import now
    from encoderlab.train.fit import fit
    address, scratch = two_nodes
    path = write(tmp_path, two_class_csv, '"train.lr" = [3e-3, 1e-3]\nseeds = [0, 1, 2]')
    points = S.expand(path)
    store = RunStore(tmp_path / "runs")
    S.run_sweep(points[:1], store, progress=False)

    def kill(ev):
        if ev["split"] == "validation" and ev["step"] == 4:     # after the step-2 checkpoint
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        fit(points[1].cfg, store, callback=kill, progress=False)
    interrupted = store.get("last")
    assert interrupted.status == "interrupted" and interrupted.checkpoints
    assert [a for _, a, _ in S.plan(store, points)] == ["skip", "resume"] + ["start"] * 4

    done, started = [], now()
    runs = raysweep.run_sweep(points, store, address=address, cpus_per_run=1, on_done=lambda p, o: done.append(o))
    assert len(done) == 5 and {o.status for o in done} == {"completed"}
    assert len({o.node for o in done}) == 2                     # points ran on both nodes
    assert [r.status for r in runs] == ["completed"] * 6
    assert runs[1].id == interrupted.id                         # resumed from its checkpoint, not restarted
    before = [ev for ev in runs[1].events() if ev["split"] == "validation" and ev["time"] < started]
    assert [ev["step"] for ev in before] == [2, 4]              # its curve from before the kill is kept
    # the index has every run, agrees with the folders, and no worker ever held an index
    assert sorted(r["id"] for r in store.list(group="se")) == sorted(r.id for r in runs)
    report = check.check(store)
    assert report.runs == 6 and report.findings == []
    for folder in scratch.values():
        assert not list(folder.rglob("index.sqlite*")) and not list(folder.rglob("run.json"))
    assert not list((tmp_path / "runs").glob(".unpack-*"))
    assert [a for _, a, _ in S.plan(store, points)] == ["skip"] * 6
    store.close()


@pytest.fixture
def ray_here():
    """A local Ray started in this process, shut down after the test (the two-node tests must
    not find it running)."""
    import ray
    yield ray
    if ray.is_initialized():
        ray.shutdown()


def _trials(rows: list[dict]) -> list[tuple]:
    return [(r["trial"], r["state"], r["params"], round(r["value"], 9)) for r in rows]


def _test_scores(store: RunStore) -> dict[str, float]:
    return {r["name"]: r["test_accuracy"] for r in store.list(group="se")}


SPECS = {"grid": 'search = "grid"\npruner = "none"\nseeds = [0, 1]\n'
                 '"train.lr" = { log_uniform = [1e-4, 1e-2], grid = 3 }',
         "tpe": 'search = "tpe"\ntrials = 3\nstartup_trials = 3\nsampler_seed = 7\npruner = "none"\nseeds = [0]\n'
                '"train.lr" = { log_uniform = [1e-4, 1e-2] }\n"train.warmup_ratio" = [0.0, 0.1]'}


@pytest.mark.parametrize("search", list(SPECS))
def test_search_on_ray_matches_the_local_search(ray_here, two_class_csv, tmp_path, search):
    """Same sampler seed, one thread per run: a search on Ray (2 trials at a time, finishing in
    any order) gives the same trials, parameters and metrics as the local one. Grid: the grid is
    enqueued in order. TPE: its first `startup_trials` trials are drawn by its seeded random
    sampler, one ask after another in the coordinator, whatever finished; after them TPE models
    the trials finished when it is asked, which on Ray depends on finishing order, so the
    comparison stops at `trials = startup_trials`. `pruner = "none"`: a median bar also depends on
    which trials finished first."""
    from encoderlab import search as SE
    from encoderlab.scale import raysearch
    path = write(tmp_path, two_class_csv, SPECS[search])
    local = RunStore(tmp_path / "local")
    coord = SE.run_search(path, local)
    here = coord.summary()
    coord.close()
    on_ray = RunStore(tmp_path / "ray")
    order = []
    handle = raysearch.run_search(path, on_ray, num_cpus=2, cpus_per_run=1,
                                  on_trial=lambda r, p: order.append(r.number))
    there = handle.summary()
    assert len(here) == 3 and {r["state"] for r in here} == {"complete"} and sorted(order) == [0, 1, 2]
    assert len({str(r["params"]) for r in here}) == 3              # three different configurations
    assert _trials(there) == _trials(here)
    assert _test_scores(on_ray) == _test_scores(local)
    assert len(_test_scores(local)) == 3 * len(SE.load(path)[1].seeds)
    if search == "grid":
        assert len({r["value"] for r in here}) == 3    # the metric tells the configurations apart
    local.close()
    on_ray.close()
