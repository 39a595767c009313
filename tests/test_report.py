"""Reports: self-contained HTML (plots embedded, strings escaped) that a real browser renders."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import tiny_experiment, two_class_data_toml
from encoderlab import sweep as S
from encoderlab.analysis import report


@pytest.fixture(scope="module")
def sweep_runs(two_class_csv, tmp_path_factory):
    from encoderlab.store.runs import RunStore
    tmp = tmp_path_factory.mktemp("report")
    path = tiny_experiment(tmp / "exp.toml", "<script>alert(1)</script>",
                           two_class_data_toml(two_class_csv) + "\nmax_train = 160", train={"epochs": 2},
                           sweep='"train.lr" = [3e-3, 1e-9]\nseeds = [0, 1]')
    store = RunStore(tmp / "runs")
    runs = S.run_sweep(S.expand(path), store, progress=False)
    return runs, tmp


def test_html_report_is_self_contained_and_escaped(sweep_runs):
    runs, tmp = sweep_runs
    out = report.write_html(runs, tmp / "report.html", title="lr <b>study</b>")
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "lr &lt;b&gt;study&lt;/b&gt;" in text
    assert text.count("data:image/png;base64,") == 2          # curves + confusion matrix, embedded
    assert "src='http" not in text and 'src="http' not in text
    assert "±" in text                                         # mean ± std over seeds
    assert "train.lr" in text


def test_markdown_report_writes_pngs(sweep_runs):
    runs, tmp = sweep_runs
    out = report.write_markdown(runs, tmp / "report.md")
    text = out.read_text()
    assert "| " in text and "±" in text
    assert (tmp / "report_files" / "curves.png").stat().st_size > 5000
    assert (tmp / "report_files" / "confusion.png").exists()
    # the settings equal in all runs: only those not at their default (train.epochs = 2 here), not
    # every key of every section (ranking.*, series.* of a plain fine-tuning sweep)
    fixed = next(line for line in text.splitlines() if line.startswith("Fixed settings: "))
    assert "train.epochs = 2" in fixed and "train.batch_size = 16" in fixed and "data.max_train = 160" in fixed
    assert "ranking." not in fixed and "series." not in fixed and "(every other setting at its default)" in fixed


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(url: str, shot, tmp, size: str):
    """A headless chromium screenshot of `url` (window `size` "W,H") into `shot`."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp / 'chrome-profile'}", f"--window-size={size}",
                    f"--screenshot={shot}", url], check=True, timeout=120, capture_output=True)
    return shot


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(sweep_runs):
    import matplotlib.image as mpimg
    runs, tmp = sweep_runs
    page = report.write_html(runs, tmp / "report.html")
    img = mpimg.imread(screenshot(page.as_uri(), tmp / "shot.png", tmp, "1200,2400"))
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    assert img[..., :3].std() > 0.05          # not a blank page: text, tables and plots drew


@pytest.fixture(scope="module")
def search_runs(two_class_csv, tmp_path_factory):
    """A small TPE search with a median pruner (some trials pruned) in its own store."""
    pytest.importorskip("optuna")
    from test_search import write
    from encoderlab import search
    from encoderlab.analysis.select import select
    from encoderlab.store.runs import RunStore
    tmp = tmp_path_factory.mktemp("search-report")
    path = write(tmp, two_class_csv, 'search = "tpe"\ntrials = 5\nstartup_trials = 2\nseeds = [0, 1]\n'
                 '"train.lr" = { log_uniform = [1e-5, 1e-2], grid = 4 }\n"train.warmup_ratio" = [0.0, 0.1]')
    store = RunStore(tmp / "runs")
    search.run_search(path, store).close()
    return select(store, group="se", status="any"), tmp


def test_report_has_the_search_sections(search_runs):
    runs, tmp = search_runs
    text = report.write_html(runs, tmp / "search.html").read_text()
    for part in ("<h2 id='search'>Search: se</h2>", "best configurations by mean best-validation accuracy",
                 "compute spent vs the full grid", "8 x 2 x", "alt='slice plot'", "parameter importance"):
        assert part in text, part
    md = report.write_markdown(runs, tmp / "search.md").read_text()
    assert "## Search: se" in md and (tmp / "search_files" / "slice.png").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_search_report_renders_in_headless_chromium(search_runs):
    import matplotlib.image as mpimg
    runs, tmp = search_runs
    page = report.write_html(runs, tmp / "search.html")
    img = mpimg.imread(screenshot(page.as_uri() + "#search", tmp / "search-shot.png", tmp, "1200,3000"))
    assert img.shape[0] >= 2000 and img[..., :3].std() > 0.05


DATASETS = {"lexname": 'source = "builtin:wordnet-lexname"', "usage": 'source = "builtin:wordnet-usage"'}


@pytest.fixture(scope="module")
def dataset_runs(two_class_csv, tmp_path_factory):
    """Three learning rates on three real datasets (two builtins and the glosses csv in a folder
    whose name is markup, which the report must escape), one seed, one epoch: a Friedman test."""
    from encoderlab.analysis.select import select
    from encoderlab.store.runs import RunStore
    tmp = tmp_path_factory.mktemp("datasets")
    odd = tmp / "<em>glosses"
    shutil.copytree(two_class_csv, odd)
    store = RunStore(tmp / "runs")
    for name, data in {**DATASETS, "glosses": two_class_data_toml(odd)}.items():
        path = tiny_experiment(tmp / f"{name}.toml", name, data + "\nmax_train = 160\nmax_eval = 80",
                               top='group = "xd"', encode={"max_length": 32},
                               sweep='"train.lr" = [1e-2, 3e-3, 1e-9]')
        S.run_sweep(S.expand(path), store, progress=False)
    runs = select(store, group="xd")
    store.close()
    return runs, tmp


def test_compare_across_datasets_prints_the_friedman_test(dataset_runs, capsys):
    from encoderlab.cli import main
    runs, tmp = dataset_runs
    assert len(runs) == 9 and {r.status for r in runs} == {"completed"}
    for extra in ([], ["--by-dataset"]):
        assert main(["--store", str(tmp / "runs"), "compare", "--group", "xd", *extra]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "Friedman test over N = 3 datasets x k = 3 configurations (test accuracy" in out, extra
        assert "(scipy.stats.friedmanchisquare)" in out and "Nemenyi critical difference" in out
        assert "mean rank across 3 datasets" in out
    from encoderlab.analysis import multi
    res = multi.across_datasets(runs)
    assert res["dataset_names"] == ["<em>glosses", "wordnet-lexname", "wordnet-usage"]
    assert sorted(res["names"]) == ["lr=0.003", "lr=0.01", "lr=1e-09"]
    assert sorted(res["mean_ranks"]) != [2.0, 2.0, 2.0]    # the learning rates do not all tie
    assert f"p = {res['p_value']:.3g}" in out


def test_report_has_the_critical_difference_section(dataset_runs):
    runs, tmp = dataset_runs
    text = report.write_html(runs, tmp / "datasets.html").read_text()
    assert "<h2 id='datasets'>Across datasets: Friedman test and critical difference</h2>" in text
    assert "alt='critical difference diagram'" in text and "scipy.stats.friedmanchisquare" in text
    assert "<em>glosses" not in text and "&lt;em&gt;glosses" in text      # a dataset named with markup
    md = report.write_markdown(runs, tmp / "datasets.md").read_text()
    assert "## Across datasets" in md and (tmp / "datasets_files" / "cd.png").stat().st_size > 3000


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_datasets_report_renders_in_headless_chromium(dataset_runs):
    import matplotlib.image as mpimg
    runs, tmp = dataset_runs
    page = report.write_html(runs, tmp / "datasets.html")
    img = mpimg.imread(screenshot(page.as_uri() + "#datasets", tmp / "datasets-shot.png", tmp, "1200,1600"))
    assert img.shape[0] >= 1500 and img[..., :3].std() > 0.05
