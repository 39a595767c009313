"""Derive the builtin long-document dataset `manpages-section`: the text of a Linux manual page ->
its manual section (system call, library function, special file, file format, overview).

Run from the repository root (pages from Debian's ``manpages`` and ``manpages-dev`` packages,
rendered by ``man``/groff):

    python scripts/derive_manpages.py --out encoderlab/data/builtin

Each page is rendered to plain text (``man -l``, 80 columns, ``col -b``); the running header and
footer (which name the section) are dropped, and so are the page's references to itself with its
section ("open(2)" in open(2)'s own page). Pages that only redirect to another page (``.so`` or a
symbolic link) are skipped, and so is a page whose text another page already has, so no text is in
two splits. Whitespace is collapsed; a page keeps at most MAX_CHARS characters (most are shorter), so
the files stay small while most pages stay far longer than a 128-token window. Splits are
stratified by section with a fixed seed; the output is byte-for-byte reproducible (gzip mtime 0).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import re
import subprocess
from pathlib import Path

SEED = 20230205
SECTIONS = {"2": "syscall", "3": "libfunc", "4": "device", "5": "fileformat", "7": "overview"}
PACKAGES = ("manpages", "manpages-dev")
MAX_CHARS = 6000
SHARES = {"train": 0.7, "validation": 0.15, "test": 0.15}
NAME = "manpages-section"


def pages() -> list[tuple[str, Path]]:
    """(section, file) of every page of the packages in sections 2, 3, 4, 5, 7, sorted."""
    out = subprocess.run(["dpkg", "-L", *PACKAGES], check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        m = re.fullmatch(r".*/man/man([0-9])/[^/]+\.gz", line)
        if m and m[1] in SECTIONS and not Path(line).is_symlink():    # a link is another name of a page
            found.append((m[1], Path(line)))
    return sorted(set(found))


def render(path: Path) -> str | None:
    """The page as plain text without header/footer, or None for a redirect (``.so``)."""
    with gzip.open(path, "rt", errors="replace") as f:
        src = [ln for ln in f.read().splitlines() if ln.strip() and not ln.startswith(('.\\"', "'\\\""))]
    if src and src[0].startswith(".so "):
        return None
    txt = subprocess.run(f"man -l {path} 2>/dev/null | col -b", shell=True, capture_output=True, text=True,
                         env={"MANWIDTH": "80", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}).stdout
    lines = [ln for ln in txt.splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    body = lines[1:-1]      # running header "open(2)  System Calls Manual  open(2)" and footer
    return " ".join(" ".join(body).split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="encoderlab/data/builtin")
    args = ap.parse_args()
    out = Path(args.out)
    rows = collections.defaultdict(list)
    seen: set[str] = set()
    for sec, path in pages():
        text = render(path)
        if not text:
            continue
        name = path.name[:-len(".gz")].rsplit(".", 1)[0]
        text = re.sub(rf"\b{re.escape(name)}\({sec}[a-z]*\)", name, text)[:MAX_CHARS]
        if text in seen:
            continue
        seen.add(text)
        rows[sec].append({"id": f"{name}.{sec}", "text": text, "label": SECTIONS[sec]})
    rng = random.Random(SEED)
    splits = {s: [] for s in SHARES}
    for sec in sorted(rows):
        items = rows[sec]
        rng.shuffle(items)
        n_val = max(2, round(len(items) * SHARES["validation"]))
        n_test = max(2, round(len(items) * SHARES["test"]))
        splits["validation"] += items[:n_val]
        splits["test"] += items[n_val:n_val + n_test]
        splits["train"] += items[n_val + n_test:]
    folder = out / NAME
    folder.mkdir(parents=True, exist_ok=True)
    for s, items in splits.items():
        rng.shuffle(items)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items).encode()
        with open(folder / f"{s}.jsonl.gz", "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
            g.write(data)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[NAME] = {
        "task": "single", "text": "text", "label": "label",
        "description": "Linux manual page text (long: median ~790 MiniLM tokens) -> manual section "
                       "(2 syscall, 3 libfunc, 4 device, 5 fileformat, 7 overview)",
        "labels": sorted(SECTIONS.values()),
        "splits": {s: f"{NAME}/{s}.jsonl.gz" for s in SHARES},
        "sizes": {s: len(v) for s, v in splits.items()},
        "license": "LICENSE-man-pages.txt",
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (out / "LICENSE-man-pages.txt").write_text(Path("/usr/share/doc/manpages/copyright").read_text())
    counts = {s: dict(collections.Counter(r["label"] for r in v)) for s, v in splits.items()}
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
