#!/usr/bin/env python3
"""How fast `mmreview check` is on real patches against the real 6.12 tree,
next to checkpatch.pl on the same patches.

    python bench/review_bench.py [--tree DIR] [-n 40] [--series 6] [--repeat 1]

Patches are real `git format-patch` output: one per mutation recipe of
corpus/mutations (single-file, single-patch), plus multi-file patches and
multi-patch series made by committing several recipes on top of each other
in a scratch object directory (see corpus/recipes.py; the tree is never
written).  Prints a markdown table; not a test, not run by pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.engine import review  # noqa: E402
from analyzer.images import Image  # noqa: E402
from analyzer.patches import read_series  # noqa: E402
from analyzer.registry import all_rules  # noqa: E402
from analyzer.tree import KernelTree  # noqa: E402
from corpus.evaluation import _read_files, commit_message  # noqa: E402
from corpus.recipes import MutationError, Recipe, Scratch, apply, load_recipes  # noqa: E402

GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
COLD = "mmreview check, cold process"
WARM = "mmreview check, in-process (warm)"
CHECKPATCH = "checkpatch.pl --no-tree -q --terse"


@dataclass
class Sample:
    path: Path
    patches: int
    files: int


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="kernel tree (default: corpus/fetch-kernel)")
    parser.add_argument("-n", type=int, default=40, help="single patches (default 40)")
    parser.add_argument("--series", type=int, default=6, help="multi-patch series (default 6)")
    parser.add_argument("--series-length", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="cold runs per patch")
    parser.add_argument("--keep", type=Path, help="write the patches here and keep them")
    args = parser.parse_args()
    tree = args.tree or Path(
        subprocess.run(
            [str(ROOT / "corpus" / "fetch-kernel")], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    workdir = Path(tempfile.mkdtemp(prefix="mmreview-bench-"))
    out = args.keep or workdir
    out.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        singles, multis, series = make_patches(tree, out, args.n, args.series, args.series_length)
        made = time.perf_counter() - started
        print(
            f"made {len(singles)} single patches, {len(multis)} multi-file patches and "
            f"{len(series)} series in {made:.1f} s\n",
            file=sys.stderr,
        )
        report(tree, singles, multis, series, args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


# -- patches --------------------------------------------------------------------


def make_patches(
    tree: Path, out: Path, count: int, series_count: int, length: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    kernel = KernelTree(str(tree))
    head = kernel.resolve("HEAD") or ""
    recipes = load_recipes(ROOT / "corpus" / "mutations", {r.id for r in all_rules()})
    rng = random.Random(612)
    rng.shuffle(recipes)
    originals = _read_files(kernel, head, sorted({r.file for r in recipes}))
    mutated: dict[str, tuple[Recipe, bytes]] = {}
    for recipe in recipes:
        try:
            mutated[recipe.id] = (recipe, apply(recipe, originals[recipe.file]))
        except (MutationError, KeyError):
            continue
    usable = list(mutated.values())
    singles, multis, series = [], [], []
    with Scratch(str(tree), f"{kernel.repo.common_dir}/objects") as scratch:
        for n, (recipe, text) in enumerate(usable[:count], 1):
            commit = scratch.commit(head, {recipe.file: text}, commit_message(recipe))
            singles.append(_write(out / f"single-{n:03}.patch", scratch.format_patch(commit), 1, 1))
        # Multi-file: recipes on different files in one commit.
        by_file: dict[str, tuple[Recipe, bytes]] = {}
        for recipe, text in usable:
            by_file.setdefault(recipe.file, (recipe, text))
        files = list(by_file.values())
        for n in range(max(1, series_count // 2)):
            chosen = files[n : n + 3] if len(files) >= n + 3 else files[:3]
            if len(chosen) < 2:
                break
            commit = scratch.commit(
                head,
                {r.file: t for r, t in chosen},
                f"mm: {len(chosen)} mutations in one patch\n\nBenchmark patch.\n\n"
                "Signed-off-by: mm-review mutation <mutation@mm-review.invalid>\n",
            )
            multis.append(
                _write(
                    out / f"multi-{n + 1:02}.patch", scratch.format_patch(commit), 1, len(chosen)
                )
            )
        # Series: recipes committed on top of each other, each applied to
        # the file as the previous patch left it.
        for n in range(series_count):
            parent, current, applied = head, dict(originals), 0
            for recipe in rng.sample(recipes, len(recipes)):
                if applied == length:
                    break
                try:
                    text = apply(recipe, current[recipe.file])
                except (MutationError, KeyError):
                    continue
                parent = scratch.commit(parent, {recipe.file: text}, commit_message(recipe))
                current[recipe.file] = Image.of(text)
                applied += 1
            if applied < 2:
                continue
            mbox = scratch.format_patch(
                parent, applied, "--cover-letter", f"--base={head}", "--thread"
            )
            series.append(_write(out / f"series-{n + 1:02}.mbox", mbox, applied, applied))
    return singles, multis, series


def _write(path: Path, data: bytes, patches: int, files: int) -> Sample:
    path.write_bytes(data)
    return Sample(path, patches, files)


# -- measurements ----------------------------------------------------------------


def mmreview_command() -> list[str]:
    found = shutil.which("mmreview")
    return [found] if found else [sys.executable, "-m", "analyzer.cli"]


@dataclass
class Runs:
    seconds: list[float]
    rss_kib: list[int]  # peak RSS of each run's process (with its children)


def cold(command: list[str], samples: list[Sample], repeat: int, cwd: Path) -> Runs:
    """Each sample through a fresh process; wall time and, from wait4(), the
    peak RSS of that process (its own children included)."""
    runs = Runs([], [])
    for sample in samples:
        for _ in range(repeat):
            with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as stderr:
                # A child forked from this (large) process starts with its
                # RSS as high-water mark; GNU time's child does not.
                timer = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name] if GNU_TIME else []
                began = time.perf_counter()
                done = subprocess.run(
                    [*timer, *command, str(sample.path)],
                    cwd=cwd,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    check=False,
                )
                runs.seconds.append(time.perf_counter() - began)
                if done.returncode not in (0, 1):
                    stderr.seek(0)
                    raise SystemExit(
                        f"{' '.join(command)} {sample.path}: exit {done.returncode}: "
                        + stderr.read().decode(errors="replace")[-300:]
                    )
                if GNU_TIME:
                    runs.rss_kib.append(int(Path(rss.name).read_text().split()[-1]))
    return runs


def warm(tree: Path, samples: list[Sample]) -> Runs:
    """Each sample reviewed in this process: one KernelTree, rules loaded,
    parse cache warm (the base files of a tree parse once)."""
    kernel = KernelTree(str(tree))
    rules = list(all_rules())
    runs = Runs([], [])
    for n, sample in enumerate([samples[0], *samples]):
        began = time.perf_counter()
        review(read_series([str(sample.path)]), rules, tree=kernel)
        if n:  # the first run only warms up
            runs.seconds.append(time.perf_counter() - began)
    return runs


def report(
    tree: Path, singles: list[Sample], multis: list[Sample], series: list[Sample], repeat: int
) -> None:
    mmreview = [*mmreview_command(), "check", "--tree", str(tree), "-q", "-f", "checkpatch"]
    checkpatch = ["perl", str(tree / "scripts" / "checkpatch.pl"), "--no-tree", "-q", "--terse"]
    rows = [
        _row(COLD, "single patch", cold(mmreview, singles, repeat, ROOT)),
        _row(WARM, "single patch", warm(tree, singles)),
        _row(CHECKPATCH, "single patch", cold(checkpatch, singles, repeat, tree)),
    ]
    if multis:
        rows.append(_row(COLD, "multi-file patch", cold(mmreview, multis, repeat, ROOT)))
        rows.append(_row(CHECKPATCH, "multi-file patch", cold(checkpatch, multis, repeat, tree)))
    if series:
        rows.append(_row(COLD, "series (mbox)", cold(mmreview, series, repeat, ROOT), series))
        rows.append(_row(WARM, "series (mbox)", warm(tree, series), series))
        rows.append(
            _row(CHECKPATCH, "series (mbox)", cold(checkpatch, series, repeat, tree), series)
        )
    lengths = ", ".join(str(s.patches) for s in series)
    print(
        f"Tree: `{tree}`; {len(singles)} single patches, {len(multis)} multi-file patches, "
        f"{len(series)} series ({lengths} patches + cover letter); {repeat} cold run(s) "
        f"each; {_cpu()}.\n"
    )
    print("| tool | input | runs | median | p90 | max | mean | patches/s | peak RSS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)


def _row(tool: str, kind: str, runs: Runs, samples: list[Sample] | None = None) -> str:
    times = runs.seconds
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    patches = sum(s.patches for s in samples) if samples else len(times)
    runs_per_sample = len(times) // len(samples) if samples else 1
    throughput = patches * runs_per_sample / sum(times)
    cells = [statistics.median(times), p90, max(times), statistics.mean(times)]
    shown = " | ".join(f"{c * 1000:.0f} ms" for c in cells)
    rss = f"{max(runs.rss_kib) / 1024:.0f} MiB" if runs.rss_kib else "—"
    return f"| {tool} | {kind} | {len(times)} | {shown} | {throughput:.1f} | {rss} |"


def _cpu() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = "unknown CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs ({model}), load average {load:.1f} at the end"


if __name__ == "__main__":
    sys.exit(main())
