#!/usr/bin/env python3
"""`mmreview check` end to end on hostile input, with and without the real
6.12 tree, in every output format.

    python bench/fuzz.py [--tree DIR] [-n 10000] [--workers 2] [--seed 1] [--keep DIR]

Seeds are real: `git format-patch` patches of edits to functions of mm/
(single patches, `--cover-letter --thread --base` series), the same commits
as `git diff` output and as MIME mail (the patch inline or attached, in
base64, quoted-printable or 8bit), and real big patches (a 2,000-line change
of mm/memory.c, a tree-wide patch of 2,002 files).  The commits are made in
a scratch object directory (corpus.recipes.Scratch); the tree is never
written.  Each case is a seed corrupted one way (tests/fuzzing.py: 24
categories, from byte flips to 200-deep MIME and 500-message mboxes), given
as a file or on stdin, half of them with `--tree`, the formats in turn.

Per case: the exit status, the wall time and the peak RSS (GNU time's %M:
a child forked from this script would inherit this script's RSS as its
high-water mark), any traceback or "internal error" on stderr, any stderr
line that is not one of mmreview's own one-line messages, a report file
left half-written.  The tree's .git (refs, packed refs, index, HEAD, the
number of objects, hooks) is compared before, during and after.  Prints a
markdown table per category; not a test, not run by pytest.
"""

from __future__ import annotations

import argparse
import email.policy
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.images import Image  # noqa: E402
from analyzer.parsing import parse  # noqa: E402
from analyzer.reporters import FORMATS  # noqa: E402
from corpus.recipes import Scratch  # noqa: E402
from tests.fuzzing import BIG, CATEGORIES, mutate  # noqa: E402

GNU_TIME = "/usr/bin/time"
SIGNED_OFF = "Signed-off-by: Jane Dev <jane@example.com>"
SLOW_SECONDS = 20.0
# The bound on one review's peak RSS.
RSS_BOUND_KIB = 500 << 10
KILL_SECONDS = 120.0
# Cases of a big category cost seconds each: fewer of them.
BIG_SHARE = 0.4


def git(tree: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, check=True).stdout


# -- seeds ------------------------------------------------------------------------


def _functions(tree: Path, path: str) -> list[tuple[int, int]]:
    """(first body row, last body row) of each function of a file."""
    parsed = parse(Image.of(git(tree, "show", f"HEAD:{path}")))
    return [
        (f.start_row + 2, f.end_row - 1) for f in parsed.functions if f.end_row - f.start_row > 6
    ]


def _edit(text: bytes, body: tuple[int, int], rng: random.Random) -> bytes | None:
    """One structural edit inside a function body: the lesson's swap where
    it applies, else a statement deleted, duplicated, or a comment added."""
    lines = text.split(b"\n")
    first, last = body
    rows = [
        r for r in range(first, last) if lines[r].strip() and not lines[r].lstrip().startswith(b"#")
    ]
    if not rows:
        return None
    row = rng.choice(rows)
    swaps = [r for r in rows if b"pmd_none(" in lines[r] or b"pte_none(" in lines[r]]
    kind = rng.choice(["swap", "delete", "duplicate", "comment", "rename"])
    if kind == "swap" and swaps:
        row = rng.choice(swaps)
        lines[row] = (
            lines[row]
            .replace(b"pmd_none(", b"!pmd_present(", 1)
            .replace(b"pte_none(", b"!pte_present(", 1)
        )
    elif kind == "delete":
        del lines[row]
    elif kind == "duplicate":
        lines.insert(row, lines[row])
    elif kind == "rename" and (names := re.findall(rb"\b([a-z_][a-z0-9_]{2,})\b", lines[row])):
        name = rng.choice(names)
        for r in range(first, last):
            lines[r] = re.sub(rb"\b%s\b" % re.escape(name), name + b"_x", lines[r])
    else:
        indent = re.match(rb"^\s*", lines[row]).group()  # type: ignore[union-attr]
        lines.insert(row, indent + b"/* checked again below */")
    return b"\n".join(lines)


def make_seeds(tree: Path, rng: random.Random, count: int = 40) -> dict[str, list[bytes]]:
    """kind -> seeds: "patch", "series", "diff", "mime", "big"."""
    head = git(tree, "rev-parse", "HEAD").decode().strip()
    mm_files = [
        p
        for p in git(tree, "ls-tree", "--name-only", "HEAD", "mm/").decode().split()
        if p.endswith(".c")
    ]
    seeds: dict[str, list[bytes]] = defaultdict(list)
    bodies = {}
    with Scratch(str(tree), str(tree / ".git" / "objects")) as scratch:
        for number in range(count):
            length = 1 if number % 3 else rng.randint(2, 4)
            parent = head
            made = 0
            for step in range(length):
                path = rng.choice(mm_files)
                if path not in bodies:
                    bodies[path] = _functions(tree, path)
                if not bodies[path]:
                    continue
                text = scratch.git("show", f"{parent}:{path}")
                edited = _edit(text, rng.choice(bodies[path]), rng)
                if edited is None or edited == text:
                    continue
                subject = f"mm/{Path(path).stem}: fuzz seed {number}.{step}"
                message = f"{subject}\n\nA change to fuzz from.\n\n{SIGNED_OFF}\n"
                parent = scratch.commit(parent, {path: edited}, message)
                made += 1
            if not made:
                continue
            if made == 1:
                patch = scratch.format_patch(parent, 1, *([f"--base={head}"] if number % 2 else []))
                seeds["patch"].append(patch)
                seeds["diff"].append(scratch.git("diff", f"{parent}~1", parent))
                seeds["mime"].append(as_mime(patch, rng))
            else:
                seeds["series"].append(
                    scratch.format_patch(
                        parent, made, "--cover-letter", "--thread", f"--base={head}", "-v2"
                    )
                )
    return seeds


def as_mime(patch: bytes, rng: random.Random) -> bytes:
    """A format-patch mail as a mail client sends it: multipart with the
    diff attached, or the whole body re-encoded."""
    original = message_from_bytes(patch.split(b"\n", 1)[1], policy=email.policy.default)
    body = original.get_content()
    message = EmailMessage()
    for name in ("From", "Date", "Subject", "Message-ID"):
        if original[name]:
            message[name] = str(original[name])
    message["To"] = "linux-mm@kvack.org"
    cte = rng.choice(["base64", "quoted-printable", "8bit"])
    if rng.random() < 0.5:
        message.set_content(body, cte=cte)
    else:
        text, _, diff = body.partition("\ndiff --git ")
        message.set_content(text)
        message.add_attachment(
            ("diff --git " + diff).encode(),
            maintype="text",
            subtype="x-patch",
            filename="0001-fuzz.patch",
            cte=cte if cte != "8bit" else "base64",
        )
        message.set_boundary(f"==fuzz-{rng.randrange(1 << 30)}==")
    return message.as_bytes(policy=email.policy.SMTP)


def big_real_patches(tree: Path, out: Path) -> dict[str, Path]:
    """Real big patches: every use of six common locals of mm/memory.c
    renamed (about 2,000 changed lines), and linux/mm.h included under a
    new name in the 2,002 files that include it (tree-wide)."""
    head = git(tree, "rev-parse", "HEAD").decode().strip()
    made = {}
    with Scratch(str(tree), str(tree / ".git" / "objects")) as scratch:
        memory = scratch.git("show", f"{head}:mm/memory.c")
        renamed = re.sub(
            rb"\b(vmf|vma|addr|pte|folio|page)\b", lambda m: m.group(1) + b"_x", memory
        )
        commit = scratch.commit(
            head,
            {"mm/memory.c": renamed},
            "mm/memory: rename the locals\n\nSigned-off-by: Jane Dev <jane@example.com>\n",
        )
        made["memory-2000"] = scratch.format_patch(commit, 1)
        users = (
            git(tree, "grep", "-l", "#include <linux/mm.h>", "--", "*.c", "*.h").decode().split()
        )
        files = {
            path: scratch.git("show", f"{head}:{path}").replace(
                b"#include <linux/mm.h>", b"#include <linux/mm_api.h>"
            )
            for path in users
        }
        commit = scratch.commit(
            head,
            files,
            "treewide: include mm_api.h\n\nSigned-off-by: Jane Dev <jane@example.com>\n",
        )
        made["treewide-include"] = scratch.format_patch(commit, 1)
    paths = {}
    for name, data in made.items():
        paths[name] = out / f"{name}.patch"
        paths[name].write_bytes(data)
    return paths


def many_patch_mbox(tree: Path, out: Path, count: int) -> Path:
    """A series of `count` real patches (each an edit of a function of mm/,
    on top of the one before), as one b4-style mbox."""
    rng = random.Random(count)
    head = git(tree, "rev-parse", "HEAD").decode().strip()
    mm_files = [
        p
        for p in git(tree, "ls-tree", "--name-only", "HEAD", "mm/").decode().split()
        if p.endswith(".c")
    ]
    bodies: dict[str, list[tuple[int, int]]] = {}
    with Scratch(str(tree), str(tree / ".git" / "objects")) as scratch:
        parent = head
        made = 0
        while made < count:
            path = rng.choice(mm_files)
            if path not in bodies:
                bodies[path] = _functions(tree, path)
            if not bodies[path]:
                continue
            text = scratch.git("show", f"{parent}:{path}")
            edited = _edit(text, rng.choice(bodies[path]), rng)
            if edited is None or edited == text:
                continue
            # The rows of the file may have moved: re-read its functions next time.
            bodies.pop(path)
            made += 1
            parent = scratch.commit(
                parent,
                {path: edited},
                f"mm/{Path(path).stem}: part {made}\n\n{SIGNED_OFF}\n",
            )
        data = scratch.format_patch(parent, count, "--cover-letter", "--thread", f"--base={head}")
    mbox = out / f"series-{count}.mbox"
    mbox.write_bytes(data)
    return mbox


# -- the tree must not change ------------------------------------------------------


def fingerprint(tree: Path) -> dict[str, str]:
    git_dir = tree / ".git"

    def digest(path: Path) -> str:
        return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else "-"

    hooks = (
        sorted(
            f"{p.name}:{digest(p)}:{oct(p.stat().st_mode)}" for p in (git_dir / "hooks").glob("*")
        )
        if (git_dir / "hooks").is_dir()
        else []
    )
    return {
        "refs": hashlib.sha1(git(tree, "for-each-ref")).hexdigest(),
        "packed-refs": digest(git_dir / "packed-refs"),
        "index": digest(git_dir / "index"),
        "HEAD": digest(git_dir / "HEAD"),
        "objects": str(sum(len(files) for _, _, files in os.walk(git_dir / "objects"))),
        "hooks": hashlib.sha1("\n".join(hooks).encode()).hexdigest(),
        "config": digest(git_dir / "config"),
    }


# -- cases ---------------------------------------------------------------------------


@dataclass
class Case:
    number: int
    category: str
    seed_kind: str
    data: bytes
    with_tree: bool
    output_format: str
    stdin: bool
    to_file: bool


@dataclass
class Outcome:
    case: Case
    code: int
    seconds: float
    rss_kib: int
    traceback: bool
    stray: bool  # a stderr line that is not one of mmreview's own
    half_report: bool
    stderr: str = ""


SEED_KINDS = {
    "many_messages": ["patch", "series"],
    "deep_mime": ["patch", "mime"],
    "missing_headers": ["patch", "series", "mime"],
    "wrong_charset": ["mime", "patch"],
    "counter_9999": ["patch", "series"],
}


def plan_cases(seeds: dict[str, list[bytes]], total: int, rng: random.Random) -> list[Case]:
    small = [c for c in CATEGORIES if c not in BIG]
    weights = {c: (BIG_SHARE if c in BIG else 1.0) for c in CATEGORIES}
    share = total / sum(weights.values())
    per_category = {c: max(1, round(share * weights[c])) for c in CATEGORIES}
    per_category[small[0]] += total - sum(per_category.values())
    formats = list(FORMATS)
    cases = []
    for category, count in per_category.items():
        for index in range(count):
            kinds = SEED_KINDS.get(category) or [
                k for k in ("patch", "series", "diff", "mime", "big") if seeds.get(k)
            ]
            if category in BIG:
                kinds = [k for k in kinds if k != "big"]
            kind = rng.choice([k for k in kinds if seeds.get(k)])
            data = mutate(rng.choice(seeds[kind]), category, rng)
            cases.append(
                Case(
                    number=len(cases),
                    category=category,
                    seed_kind=kind,
                    data=data,
                    with_tree=index % 2 == 0,
                    output_format=formats[(index // 2) % len(formats)],
                    stdin=index % 5 == 0,
                    to_file=index % 3 != 0,
                )
            )
    rng.shuffle(cases)
    return cases


_OWN_LINE = re.compile(r"^mmreview: (error|note|internal error): ")


def run_case(case: Case, tree: Path, work: Path, env: dict[str, str]) -> Outcome:
    here = work / f"case-{case.number}"
    here.mkdir()
    source = here / "input"
    source.write_bytes(case.data)
    report = here / "report.out"
    timing = here / "time"
    command = [GNU_TIME, "-f", "%e %M", "-o", str(timing), sys.executable, "-m", "analyzer.cli"]
    command += ["check", "-" if case.stdin else str(source), "-f", case.output_format]
    if case.with_tree:
        command += ["--tree", str(tree)]
    if case.to_file:
        command += ["-o", str(report)]
    started = time.monotonic()
    try:
        with open(source, "rb") as stdin:
            done = subprocess.run(
                command,
                stdin=stdin if case.stdin else subprocess.DEVNULL,
                capture_output=True,
                cwd=here,
                env=env,
                timeout=KILL_SECONDS,
            )
        code, stderr = done.returncode, done.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as killed:
        code, stderr = -9, (killed.stderr or b"").decode("utf-8", "replace")
    seconds = time.monotonic() - started
    rss = 0
    if timing.exists():
        measured = timing.read_text().split()
        if len(measured) >= 2 and measured[-1].isdigit():
            rss = int(measured[-1])
    lines = [line for line in stderr.splitlines() if line.strip()]
    traceback = "Traceback" in stderr or "internal error" in stderr
    stray = any(not _OWN_LINE.match(line) for line in lines)
    half = bool([p for p in here.iterdir() if p.name.startswith(".report.out.")])
    if case.to_file and code in (0, 1, 2) and report.exists():
        half = half or not complete(report.read_text(errors="replace"), case.output_format)
    return Outcome(case, code, seconds, rss, traceback, stray, half, stderr[-4000:])


def complete(text: str, output_format: str) -> bool:
    """Is this a whole report of its format?  (An empty checkpatch, rdjsonl
    or email report is a whole one: nothing was found.)"""
    try:
        if output_format in ("json", "sarif", "b4-review"):
            json.loads(text)
        elif output_format == "rdjsonl":
            for line in text.splitlines():
                json.loads(line)
    except ValueError:
        return False
    if output_format == "html":
        return text.rstrip().endswith("</body></html>")
    if output_format == "text":
        return " in " in (text.rstrip().splitlines() or [""])[-1]
    return True


def keep(outcome: Outcome, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    case = outcome.case
    where = "tree" if case.with_tree else "notree"
    name = f"{case.number:05d}-{case.category}-{where}-{case.output_format}"
    (directory / f"{name}.input").write_bytes(case.data)
    (directory / f"{name}.txt").write_text(
        f"code {outcome.code}, {outcome.seconds:.1f} s, {outcome.rss_kib} KiB"
        f"{', traceback' if outcome.traceback else ''}{', stray stderr' if outcome.stray else ''}"
        f"{', half report' if outcome.half_report else ''}; stdin={case.stdin} -o={case.to_file}\n"
        + outcome.stderr
    )


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| category | cases | tracebacks | exits not 0/1/2 | over 20 s | max RSS (MiB)"
        " | max time (s) | stray stderr | half reports |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_category: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_category[outcome.case.category].append(outcome)
    for name, group in [*sorted(by_category.items()), ("**all**", outcomes)]:
        rows.append(
            f"| {name} | {len(group)} | {sum(o.traceback for o in group)} |"
            f" {sum(o.code not in (0, 1, 2) for o in group)} |"
            f" {sum(o.seconds > SLOW_SECONDS for o in group)} |"
            f" {max(o.rss_kib for o in group) / 1024:.0f} | {max(o.seconds for o in group):.1f} |"
            f" {sum(o.stray for o in group)} | {sum(o.half_report for o in group)} |"
        )
    return "\n".join(rows)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C or a plain `kill` ends the run with the table so far; a shell
    # starts a background job with SIGINT ignored, so both are set here.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, help="kernel tree (default: corpus/fetch-kernel)")
    parser.add_argument("-n", type=int, default=10000, help="cases (default 10000)")
    parser.add_argument("--workers", type=int, default=2, choices=(1, 2))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=40, help="real patches to make (default 40)")
    parser.add_argument("--keep", type=Path, help="write failing cases here")
    args = parser.parse_args()
    if not Path(GNU_TIME).exists():
        print("bench/fuzz.py: needs GNU time (/usr/bin/time) for the peak RSS", file=sys.stderr)
        return 2
    tree = args.tree or Path(
        subprocess.run(
            [str(ROOT / "corpus" / "fetch-kernel")], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mmreview-fuzz-"))
    # Bytecode cached outside the tree: 10,000 cold starts should not each
    # compile every module again (PYTHONDONTWRITEBYTECODE would make them).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(NO_COLOR="1", PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    try:
        started = time.monotonic()
        seeds = make_seeds(tree, rng, args.seeds)
        for name, path in big_real_patches(tree, work).items():
            seeds["big"].append(path.read_bytes())
            del name
        cases = plan_cases(seeds, args.n, rng)
        print(
            f"{len(cases)} cases from {sum(len(v) for v in seeds.values())} seeds"
            f" ({', '.join(f'{k}: {len(v)}' for k, v in sorted(seeds.items()))})"
            f" made in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        before = fingerprint(tree)
        outcomes: list[Outcome] = []
        changed: list[str] = []
        lock = threading.Lock()

        def one(case: Case) -> None:
            outcome = run_case(case, tree, work, env)
            with lock:
                outcomes.append(outcome)
                bad = outcome.traceback or outcome.code not in (0, 1, 2) or outcome.stray
                bad = bad or outcome.seconds > SLOW_SECONDS or outcome.half_report
                bad = bad or outcome.rss_kib > RSS_BOUND_KIB
                if bad and args.keep:
                    keep(outcome, args.keep)
                done = len(outcomes)
                if done % 250 == 0:
                    now = fingerprint(tree)
                    if now != before:
                        changed.append(
                            f"after {done} cases: {sorted(k for k in now if now[k] != before[k])}"
                        )
                    rate = done / (time.monotonic() - started)
                    print(
                        f"{done}/{len(cases)} cases, {rate:.2f}/s,"
                        f" {sum(o.traceback for o in outcomes)} tracebacks,"
                        f" {sum(o.seconds > SLOW_SECONDS for o in outcomes)} slow,"
                        f" {sum(o.rss_kib > RSS_BOUND_KIB for o in outcomes)} over 500 MiB",
                        file=sys.stderr,
                        flush=True,
                    )
            shutil.rmtree(work / f"case-{case.number}", ignore_errors=True)

        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(one, case) for case in cases]
            try:
                for future in futures:
                    future.result()
            except KeyboardInterrupt:
                # Ctrl-C: the table of the cases run so far, not nothing.
                for future in futures:
                    future.cancel()
                print(f"interrupted after {len(outcomes)} cases", file=sys.stderr)
        after = fingerprint(tree)
        if after != before:
            changed.append(f"at the end: {sorted(k for k in after if after[k] != before[k])}")
        elapsed = time.monotonic() - started
        with_tree = sum(o.case.with_tree for o in outcomes)
        print(
            f"\n{len(outcomes)} cases in {elapsed / 60:.0f} min, {args.workers} workers;"
            f" {with_tree} with --tree {tree}, {len(outcomes) - with_tree} without;"
            f" formats: {', '.join(FORMATS)}\n"
        )
        print(table(outcomes))
        print(f"\ntree .git unchanged: {'yes' if not changed else 'NO: ' + '; '.join(changed)}")
        worst = max(outcomes, key=lambda o: o.seconds)
        print(
            f"slowest: case {worst.case.number} ({worst.case.category},"
            f" {'tree' if worst.case.with_tree else 'no tree'}, {worst.case.output_format})"
            f" {worst.seconds:.1f} s, exit {worst.code}"
        )
        failed = [
            o
            for o in outcomes
            if o.traceback
            or o.code not in (0, 1, 2)
            or o.seconds > SLOW_SECONDS
            or o.rss_kib > RSS_BOUND_KIB
        ]
        return 1 if failed or changed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
