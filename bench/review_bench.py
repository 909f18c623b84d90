#!/usr/bin/env python3
"""`mmreview` next to checkpatch.pl on the same patches: CPU-time ratios.

    python bench/review_bench.py [--tree DIR] [--pairs 15] [--figures single,b4,...]

Every figure is a pair of workloads run alternately (mmreview first in even
pairs, checkpatch.pl first in odd ones) on the same input: the ratio of
each pair's CPU time (user + sys of the process and its children, git
included) is taken, and the median of those ratios is printed beside the
medians of the absolute CPU times.  The machine this runs on is usually
shared, so wall times and single runs mean little; a ratio of a pair run
back to back does.  Peak RSS is GNU time's `%M` (see `peak_rss`).

Figures (`--figures`, default all):

- single: one small patch (a 2-line change in mm/khugepaged.c), one cold
  process `mmreview check PATCH --tree T -q -f checkpatch`;
- large: one large patch (every recipe that applies, on 20 files, in one
  commit);
- b4: the 16 patches of a series the way b4 checks them, one process per
  patch with the message on stdin and the tree top as cwd, with the command
  line `mmreview b4 setup` writes;
- mbox: the same 16-patch series as one mbox, one process;
- memory: a 64-patch mbox, one process (peak RSS is the figure);
- scan: `mmreview scan` of mm/ next to `checkpatch.pl -f` on its files;
- floor: what any review of the small patch pays (a Python interpreter,
  tree-sitter, one `git cat-file`, two parses of the file), next to
  checkpatch.pl on that patch.

The patches are real `git format-patch` output against the real 6.12 tree
(`corpus/fetch-kernel`), made from the mutation recipes in a scratch object
directory (`corpus.recipes.Scratch`); the tree is never written.  Not a test:
nothing asserts a time.
"""

from __future__ import annotations

import argparse
import mailbox
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.images import Image  # noqa: E402
from analyzer.registry import all_rules  # noqa: E402
from analyzer.tree import KernelTree  # noqa: E402
from corpus.evaluation import _read_files, commit_message  # noqa: E402
from corpus.recipes import MutationError, Recipe, Scratch, apply, load_recipes  # noqa: E402

FIGURES = ("floor", "single", "large", "b4", "mbox", "memory", "scan")
SMALL_RECIPE = "open-ptlock/khugepaged-retract"
GNU_TIME = "/usr/bin/time"


@dataclass
class Run:
    """One process to start: argv, where, and what it reads on stdin."""

    argv: list[str]
    cwd: Path
    stdin: Path | None = None


@dataclass
class Figure:
    name: str
    what: str
    mmreview: list[Run]
    checkpatch: list[Run]
    pairs: int
    # Warm checkpatch.pl up, and take its peak RSS (not worth a quarter of
    # an hour each for scan).
    warm_checkpatch: bool = True


@dataclass
class Measured:
    figure: Figure
    mm_cpu: list[float] = field(default_factory=list)
    cp_cpu: list[float] = field(default_factory=list)
    mm_wall: list[float] = field(default_factory=list)
    mm_rss: int = 0  # KiB, the largest process of the workload
    cp_rss: int = 0
    mm_instructions: int | None = None
    cp_instructions: int | None = None
    git_processes: int | None = None  # per mmreview process

    @property
    def ratios(self) -> list[float]:
        return [m / c for m, c in zip(self.mm_cpu, self.cp_cpu, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="kernel tree (default: corpus/fetch-kernel)")
    parser.add_argument("--pairs", type=int, default=15, help="pairs per figure (default 15)")
    parser.add_argument("--scan-pairs", type=int, default=3, help="pairs for scan (default 3)")
    parser.add_argument(
        "--figures", default=",".join(FIGURES), help=f"comma-separated, of {', '.join(FIGURES)}"
    )
    parser.add_argument(
        "--mmreview",
        help="the mmreview to measure (default: the one beside this Python, else -m analyzer.cli)",
    )
    parser.add_argument(
        "--bytecode",
        choices=("compiled", "not-written", "none"),
        default="compiled",
        help="compiled: byte code written once (a PYTHONPYCACHEPREFIX of the benchmark's own),"
        " as users run it; not-written: PYTHONDONTWRITEBYTECODE=1 and no prefix, so modules"
        " with no byte code beside them (an editable install's) compile on every run; none:"
        " no byte code at all, every module (the standard library's too) compiles every run",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions once per figure under callgrind (slow; noise-free)",
    )
    parser.add_argument(
        "--count-git", action="store_true", help="count the git processes of one mmreview run"
    )
    parser.add_argument("--keep", type=Path, help="write the patches here and keep them")
    args = parser.parse_args()
    wanted = [f.strip() for f in args.figures.split(",") if f.strip()]
    if unknown := [f for f in wanted if f not in FIGURES]:
        parser.error(f"unknown figure {unknown[0]} (choose from {', '.join(FIGURES)})")
    tree = (
        args.tree
        or Path(
            subprocess.run(
                [str(ROOT / "corpus" / "fetch-kernel")], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
    ).resolve()
    mmreview = args.mmreview.split() if args.mmreview else mmreview_command()
    env = child_env(args.bytecode)
    workdir = Path(tempfile.mkdtemp(prefix="mmreview-bench-"))
    out = args.keep or workdir
    out.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        patches = make_patches(tree, out)
        say(f"made the patches in {time.perf_counter() - started:.1f} s ({out})")
        figures = build_figures(wanted, tree, patches, mmreview, env, args)
        results = [measure(f, env, args) for f in figures]
        report(results, tree, mmreview, args)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mmreview_command() -> list[str]:
    beside = Path(sys.executable).parent / "mmreview"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("mmreview")
    return [found] if found else [sys.executable, "-m", "analyzer.cli"]


def child_env(bytecode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE",)}
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode == "compiled":
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        env["PYTHONPYCACHEPREFIX"] = str(cache / "mm-review" / "bench-pyc")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if bytecode == "none":  # byte code is looked for in an empty place only
            env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="mmreview-no-pyc-")
    return env


# -- patches --------------------------------------------------------------------


@dataclass
class Patches:
    small: Path
    large: Path
    series16: Path
    messages16: list[Path]  # series16's patches, one message each, as b4 pipes them
    series64: Path


def make_patches(tree: Path, out: Path) -> Patches:
    kernel = KernelTree(str(tree))
    head = kernel.resolve("HEAD") or ""
    recipes = load_recipes(ROOT / "corpus" / "mutations", {r.id for r in all_rules()})
    recipes.sort(key=lambda r: r.id)
    originals = _read_files(kernel, head, sorted({r.file for r in recipes}))
    by_id = {r.id: r for r in recipes}
    with Scratch(str(tree), f"{_common_dir(kernel)}/objects") as scratch:
        small = by_id[SMALL_RECIPE]
        commit = scratch.commit(
            head, {small.file: apply(small, originals[small.file])}, commit_message(small)
        )
        small_path = _write(out / "small.patch", scratch.format_patch(commit))
        # Large: every recipe that still applies, each to the file as the
        # ones before it left it, in one commit.
        current = dict(originals)
        changed: dict[str, bytes] = {}
        for recipe in recipes:
            try:
                text = apply(recipe, current[recipe.file])
            except (MutationError, KeyError):
                continue
            current[recipe.file] = Image.of(text)
            changed[recipe.file] = text
        commit = scratch.commit(
            head,
            changed,
            f"mm: {len(changed)} files mutated in one patch\n\nBenchmark patch.\n\n"
            "Signed-off-by: mm-review mutation <mutation@mm-review.invalid>\n",
        )
        large_path = _write(out / "large.patch", scratch.format_patch(commit))
        series16 = _series(scratch, head, originals, recipes, 16, out / "series-16.mbox")
        series64 = _series(scratch, head, originals, recipes, 64, out / "series-64.mbox")
    messages = []
    box = mailbox.mbox(str(series16), create=False)
    for n, message in enumerate(box):
        if n == 0:
            continue  # the cover letter: b4 checks patches
        # b4: headers, a blank line, the decoded body; no mbox From line.
        messages.append(_write(out / f"b4-{n:02}.eml", message.as_bytes(unixfrom=False)))
    box.close()
    return Patches(small_path, large_path, series16, messages, series64)


def _common_dir(kernel: KernelTree) -> str:
    common = getattr(kernel, "common_dir", None)
    return common if common is not None else kernel.repo.common_dir


def _series(
    scratch: Scratch,
    head: str,
    originals: dict[str, Image],
    recipes: list[Recipe],
    length: int,
    path: Path,
) -> Path:
    """Recipes committed on top of each other, each applied to its file as
    the previous patches left it; `--cover-letter --base --thread` as b4
    sends them."""
    parent, current, applied = head, dict(originals), 0
    for recipe in recipes:
        if applied == length:
            break
        try:
            text = apply(recipe, current[recipe.file])
        except (MutationError, KeyError):
            continue
        parent = scratch.commit(parent, {recipe.file: text}, commit_message(recipe))
        current[recipe.file] = Image.of(text)
        applied += 1
    if applied < length:
        raise SystemExit(f"only {applied} recipes apply on top of each other, not {length}")
    mbox = scratch.format_patch(parent, applied, "--cover-letter", f"--base={head}", "--thread")
    return _write(path, mbox)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- figures ----------------------------------------------------------------------


def build_figures(
    wanted: list[str],
    tree: Path,
    patches: Patches,
    mmreview: list[str],
    env: dict[str, str],
    args: argparse.Namespace,
) -> list[Figure]:
    checkpatch = ["perl", str(tree / "scripts" / "checkpatch.pl"), "--no-tree", "-q", "--terse"]
    check = [*mmreview, "check", "--tree", str(tree), "-q", "-f", "checkpatch"]

    def lines(path: Path) -> int:
        return path.read_bytes().count(b"\n")

    def one(path: Path) -> tuple[list[Run], list[Run]]:
        return [Run([*check, str(path)], tree)], [Run([*checkpatch, str(path)], tree)]

    made: dict[str, Callable[[], Figure]] = {
        "floor": lambda: Figure(
            "floor",
            "interpreter + tree-sitter + one git cat-file + two parses of mm/khugepaged.c",
            [Run([sys.executable, "-c", FLOOR], tree)],
            [Run([*checkpatch, str(patches.small)], tree)],
            args.pairs,
        ),
        "single": lambda: Figure(
            "single small patch",
            f"{SMALL_RECIPE}, {lines(patches.small)} lines, --tree",
            *one(patches.small),
            args.pairs,
        ),
        "large": lambda: Figure(
            "single large patch",
            f"{lines(patches.large)} lines, "
            f"{patches.large.read_bytes().count(b'diff --git ')} files, --tree",
            *one(patches.large),
            args.pairs,
        ),
        "b4": lambda: b4_figure(tree, patches, mmreview, checkpatch, env, args.pairs),
        "mbox": lambda: Figure(
            "16-patch mbox, one process",
            f"{lines(patches.series16)} lines, --tree",
            *one(patches.series16),
            args.pairs,
        ),
        "memory": lambda: Figure(
            "64-patch mbox, one process",
            f"{lines(patches.series64)} lines, --tree",
            *one(patches.series64),
            max(3, args.pairs // 3),
        ),
        "scan": lambda: scan_figure(tree, mmreview, checkpatch, args.scan_pairs),
    }
    return [made[name]() for name in wanted]


def b4_figure(
    tree: Path,
    patches: Patches,
    mmreview: list[str],
    checkpatch: list[str],
    env: dict[str, str],
    pairs: int,
) -> Figure:
    token = subprocess.run(
        [*mmreview, "rules", "--version-token"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # What `mmreview b4 setup` writes (analyzer.b4.check_commands).
    command = [*mmreview, "check", "-q", "--tree=.", f"--rules-version={token}"]
    command.append("--format=checkpatch")
    return Figure(
        "16 patches the b4 way",
        "16 processes, one message each on stdin, cwd = tree top",
        [Run([*command, "-"], tree, m) for m in patches.messages16],
        [Run([*checkpatch, "-"], tree, m) for m in patches.messages16],
        pairs,
    )


def scan_figure(tree: Path, mmreview: list[str], checkpatch: list[str], pairs: int) -> Figure:
    files = sorted(str(p.relative_to(tree)) for p in (tree / "mm").rglob("*.[ch]"))
    return Figure(
        "scan of mm/",
        f"{len(files)} files; checkpatch.pl -f on the same files",
        [Run([*mmreview, "scan", "--tree", str(tree), "-f", "json", "mm"], tree)],
        [Run([*checkpatch, "-f", *files], tree)],
        pairs,
        warm_checkpatch=False,
    )


# The floor: what no review of the small patch can avoid.
FLOOR = """
import subprocess, tree_sitter, tree_sitter_c
parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))
text = subprocess.run(["git", "cat-file", "-p", "HEAD:mm/khugepaged.c"],
                      capture_output=True, check=True).stdout
parser.parse(text)
parser.parse(text.replace(b"pte_lockptr(mm, pmd)", b"ptlock_ptr(pmd)", 1))
"""


# -- measurements -------------------------------------------------------------------


def run_cpu(runs: list[Run], env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds (user + sys, the processes and their children) and wall
    seconds of running `runs` one after the other."""
    cpu = 0.0
    began = time.perf_counter()
    for run in runs:
        stdin = open(run.stdin, "rb") if run.stdin else subprocess.DEVNULL  # noqa: SIM115
        with tempfile.TemporaryFile() as stderr:
            try:
                child = subprocess.Popen(
                    run.argv,
                    cwd=run.cwd,
                    env=env,
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
                _, status, usage = os.wait4(child.pid, 0)
                child.returncode = os.waitstatus_to_exitcode(status)
            finally:
                if run.stdin:
                    stdin.close()
            _check_exit(run, child.returncode, stderr)
        cpu += usage.ru_utime + usage.ru_stime
    return cpu, time.perf_counter() - began


def peak_rss(runs: list[Run], env: dict[str, str]) -> int:
    """The largest peak RSS (KiB) of the runs, each through GNU time: a
    child forked from this (large) process starts with its RSS as
    high-water mark; GNU time's child does not."""
    if not Path(GNU_TIME).exists():
        return 0
    largest = 0
    for run in runs:
        with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as stderr:
            stdin = open(run.stdin, "rb") if run.stdin else subprocess.DEVNULL  # noqa: SIM115
            try:
                done = subprocess.run(
                    [GNU_TIME, "-q", "-f", "%M", "-o", rss.name, *run.argv],
                    cwd=run.cwd,
                    env=env,
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    check=False,
                )
            finally:
                if run.stdin:
                    stdin.close()
            _check_exit(run, done.returncode, stderr)
            largest = max(largest, int(Path(rss.name).read_text().split()[-1]))
    return largest


def instructions(runs: list[Run], env: dict[str, str]) -> int | None:
    """Instructions executed by the runs and all their children (callgrind).

    Under callgrind a review runs some 50 times slower: a check with the
    default time budget (10 s a patch) stops a long function's review
    where the budget runs out, so mmreview runs here without one.  The
    same hash seed and no address randomisation give the same count run
    after run."""
    if shutil.which("valgrind") is None:
        return None
    total = 0
    env = {**env, "PYTHONHASHSEED": "0"}
    no_aslr = ["setarch", "-R"] if shutil.which("setarch") else []
    for run in runs:
        argv = run.argv
        if "check" in argv:
            at = argv.index("check") + 1
            argv = [*argv[:at], "--time-budget=0", *argv[at:]]
        with tempfile.TemporaryDirectory() as logs:
            stdin = open(run.stdin, "rb") if run.stdin else subprocess.DEVNULL  # noqa: SIM115
            try:
                subprocess.run(
                    [
                        *no_aslr,
                        "valgrind",
                        "--tool=callgrind",
                        "--trace-children=yes",
                        f"--callgrind-out-file={logs}/out.%p",
                        f"--log-file={logs}/log.%p",
                        *argv,
                    ],
                    cwd=run.cwd,
                    env=env,
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            finally:
                if run.stdin:
                    stdin.close()
            for log in Path(logs).glob("log.*"):
                for line in log.read_text(errors="replace").splitlines():
                    if "Collected :" in line:
                        total += int(line.split()[-1])
    return total


def git_processes(runs: list[Run], env: dict[str, str]) -> int:
    """git processes started by one run of each, through a logging `git`
    first on PATH."""
    real = shutil.which("git", path=env.get("PATH"))
    with tempfile.TemporaryDirectory() as shim:
        log = Path(shim, "log")
        log.touch()
        wrapper = Path(shim, "git")
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
        shimmed = {**env, "PATH": f"{shim}:{env.get('PATH', '')}"}
        for run in runs:
            run_cpu([run], shimmed)
        return len(log.read_text().splitlines())


def _check_exit(run: Run, code: int, stderr) -> None:
    if code in (0, 1):
        return
    stderr.seek(0)
    raise SystemExit(
        f"{' '.join(run.argv[:6])}...: exit {code}: "
        + stderr.read().decode(errors="replace")[-400:]
    )


def measure(figure: Figure, env: dict[str, str], args: argparse.Namespace) -> Measured:
    say(f"{figure.name}: warming up")
    result = Measured(figure)
    run_cpu(figure.mmreview, env)  # byte code, derived-facts cache, page cache
    if figure.warm_checkpatch:
        run_cpu(figure.checkpatch, env)
    for n in range(figure.pairs):
        order = [("mm", figure.mmreview), ("cp", figure.checkpatch)]
        for who, runs in order if n % 2 == 0 else reversed(order):
            cpu, wall = run_cpu(runs, env)
            if who == "mm":
                result.mm_cpu.append(cpu)
                result.mm_wall.append(wall)
            else:
                result.cp_cpu.append(cpu)
        say(f"{figure.name}: pair {n + 1}/{figure.pairs}: {result.ratios[-1]:.2f}")
    result.mm_rss = peak_rss(figure.mmreview, env)
    if figure.warm_checkpatch:  # else a run too long to make twice more
        result.cp_rss = peak_rss(figure.checkpatch, env)
    if args.count_git and figure.name != "floor":
        result.git_processes = git_processes(figure.mmreview, env) // len(figure.mmreview)
    if args.instructions and figure.name != "scan":
        say(f"{figure.name}: counting instructions")
        result.mm_instructions = instructions(figure.mmreview, env)
        result.cp_instructions = instructions(figure.checkpatch, env)
    return result


# -- report -----------------------------------------------------------------------


def report(results: list[Measured], tree: Path, mmreview: list[str], args) -> None:
    print(
        f"Tree `{tree}`; `{' '.join(mmreview)}`; byte code {args.bytecode}; {_machine()}.\n"
        "CPU = user + sys of the process and its children; ratio = median of the pairs'"
        " mmreview/checkpatch.pl CPU ratios (p25–p75 beside it).\n"
    )
    header = [
        "figure",
        "input",
        "pairs",
        "mmreview CPU",
        "checkpatch.pl CPU",
        "ratio",
        "p25–p75",
        "mmreview wall",
        "peak RSS mm / cp",
    ]
    extra = args.count_git or args.instructions
    if args.count_git:
        header.append("git procs")
    if args.instructions:
        header.append("instructions mm / cp (ratio)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * 2 + "---:|" * (len(header) - 2))
    for r in results:
        ratios = sorted(r.ratios)
        cells = [
            r.figure.name,
            r.figure.what,
            str(len(ratios)),
            _ms(statistics.median(r.mm_cpu)),
            _ms(statistics.median(r.cp_cpu)),
            f"**{statistics.median(ratios):.2f}×**",
            f"{_quantile(ratios, 0.25):.2f}–{_quantile(ratios, 0.75):.2f}",
            _ms(statistics.median(r.mm_wall)),
            f"{r.mm_rss / 1024:.0f} / {_mib(r.cp_rss)}",
        ]
        if extra and args.count_git:
            cells.append("—" if r.git_processes is None else str(r.git_processes))
        if args.instructions:
            if r.mm_instructions and r.cp_instructions:
                cells.append(
                    f"{r.mm_instructions / 1e6:.0f} M / {r.cp_instructions / 1e6:.0f} M"
                    f" ({r.mm_instructions / r.cp_instructions:.2f}×)"
                )
            else:
                cells.append("—")
        print("| " + " | ".join(cells) + " |")


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB" if kib else "—"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _machine() -> str:
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
