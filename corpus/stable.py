"""`mmreview corpus stable`: the rules measured on real mm fixes.

Every change a stable series takes into mm/ is a real upstream fix,
backported (or the context one needs).  Two Debian point releases of
`linux-source-6.1` become two commits of one git tree, and the mm files that
differ between them are cut into one unit per function: a function whose text
differs between the releases (matched by file and name), or that only the
newer release has.  Each unit gets two patches, made as real `git
format-patch` text of scratch commits:

- *forward*: the old tree with only that function changed to its new version
  (the fix applied to the old code: any finding is a false alarm);
- *reverse*: the new tree with only that function changed back (the fix
  undone, the real bug put back: a finding in the function catches it).

Nothing of the kernel is committed to this repository: `build` downloads the
packages at run time, and the committed manifest (corpus/stable/) holds facts
only: which function, its upstream subject, the class of the fix.  `score`
reviews every patch with every rule and reports per class.
"""

from __future__ import annotations

import fcntl
import fnmatch
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from analyzer.engine import review
from analyzer.images import Image
from analyzer.parsing import parse
from analyzer.patches import InputError, read_series
from analyzer.registry import select_rules
from analyzer.rule import Finding, Rule
from analyzer.tree import KernelTree
from corpus.recipes import IDENTITY, MutationError, Scratch

PACKAGE = "linux-source-6.1"
OLD_VERSION = "6.1.170-3"
NEW_VERSION = "6.1.192-3"
BUILD_NAME = "stable-6.1"
# Beside the package in a source checkout (pip install -e).
DEFAULT_MANIFEST = Path(__file__).resolve().parent / "stable" / "manifest-6.1.toml"

# What the reviews read: the files units are cut from, the headers rules
# look declarations up in, and the top Makefile (the kernel version).
UNPACKED = (
    "Makefile",
    "mm",
    "include",
    "fs/userfaultfd.c",
    "fs/proc/task_mmu.c",
    "fs/dax.c",
    "kernel/events/uprobes.c",
    "kernel/fork.c",
)
# Where units are cut: mm/, the mm code that lives elsewhere, and the
# static inline helpers of the mm headers.
UNIT_PATHS = (
    "mm/*",
    "fs/userfaultfd.c",
    "fs/proc/task_mmu.c",
    "fs/dax.c",
    "kernel/events/uprobes.c",
    "kernel/fork.c",
    "include/linux/mm.h",
    "include/linux/mm_*.h",
    "include/linux/mmzone.h",
    "include/linux/mman.h",
    "include/linux/mmu_notifier.h",
    "include/linux/huge_mm.h",
    "include/linux/hugetlb*.h",
    "include/linux/pagemap.h",
    "include/linux/pagewalk.h",
    "include/linux/page-flags.h",
    "include/linux/page_ref.h",
    "include/linux/pgtable.h",
    "include/linux/rmap.h",
    "include/linux/swap*.h",
    "include/linux/userfaultfd_k.h",
    "include/linux/memcontrol.h",
    "include/linux/mempolicy.h",
    "include/linux/memory_hotplug.h",
    "include/linux/memblock.h",
    "include/linux/migrate.h",
    "include/linux/ksm.h",
    "include/linux/damon.h",
    "include/linux/kasan.h",
    "include/linux/kmemleak.h",
    "include/linux/vmalloc.h",
    "include/linux/vmstat.h",
    "include/linux/slab.h",
    "include/linux/gfp.h",
    "include/linux/shmem_fs.h",
    "include/linux/secretmem.h",
    "include/linux/highmem*.h",
)

# Bump when the tree or the units change shape: an older build is rebuilt.
BUILD_FORMAT = 1
STAMP = "mm-review-stable.stamp"  # in <build>/.git, written last
UNITS_DIR = "units"
INDEX = "index.json"

GIT = [
    "git",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "core.autocrlf=false",
]
# The two release commits: fixed identity and dates, so that their ids
# depend on the package contents only.
_TREE_IDENTITY = {
    "GIT_AUTHOR_NAME": "mm-review stable corpus",
    "GIT_AUTHOR_EMAIL": "stable@mm-review.invalid",
    "GIT_COMMITTER_NAME": "mm-review stable corpus",
    "GIT_COMMITTER_EMAIL": "stable@mm-review.invalid",
}
_RELEASE_DATES = ("2026-05-01T00:00:00+0000", "2026-11-26T00:00:00+0000")
# Nothing of the caller's git environment may reach the tree.
_GIT_ENV_DROPPED = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_INDEX_VERSION",
    "GIT_CEILING_DIRECTORIES",
)

# -- classes ------------------------------------------------------------------

WAVE1 = ("leak", "error-path", "use-after-put", "null-deref", "sleep-in-atomic", "loop-no-yield")
WAVE2 = ("entry-helper", "uffd-wp", "dirty-young-tlb", "huge-pmd")
OTHER_CLASSES = (
    "arithmetic",
    "stale-state",
    "accounting",
    "race",
    "pt-lifetime",
    "other-fix",
    "not-a-fix",
    "build",
)
CLASSES = (*WAVE1, *WAVE2, *OTHER_CLASSES)

# The rules that claim a class: a reverse patch is caught "by its class"
# when one of them fires in the unit's function.  A class without a rule
# yet is absent.
CLASS_RULES: dict[str, tuple[str, ...]] = {
    "huge-pmd": ("PTE_WORK_ON_HUGE_PMD",),
    "entry-helper": ("ENTRY_HELPER_MISFIT",),
    "uffd-wp": ("UFFD_WP_NOT_CARRIED",),
    "dirty-young-tlb": ("DIRTY_YOUNG_LOST",),
    "null-deref": ("FAILED_RESULT_UNCHECKED",),
    "sleep-in-atomic": ("SLEEP_IN_ATOMIC",),
    "loop-no-yield": ("LOOP_NO_YIELD",),
    "leak": ("RELEASED_ON_EVERY_PATH",),
    "error-path": ("RELEASED_ON_EVERY_PATH",),
    "use-after-put": ("USE_AFTER_PUT",),
}


# -- progress -----------------------------------------------------------------


class Progress:
    """One line per step on stderr; a bar for the long loops when stderr is
    a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()

    def step(self, message: str) -> None:
        self.stream.write(f"mmreview: stable: {message}\n")
        self.stream.flush()

    @contextmanager
    def bar(self, total: int, description: str) -> Iterator[Callable[[], None]]:
        if not self.tty or total == 0:
            yield lambda: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        columns = (
            f"mmreview: stable: {description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Bar(*columns, console=Console(file=self.stream), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)


# -- the changelog ------------------------------------------------------------


@dataclass(frozen=True)
class ChangelogEntry:
    subject: str  # as upstream wrote it: no [arch] tag, no (CVE-...) note
    version: str  # the Debian version whose stanza lists it
    release: str | None  # the upstream stable release, "6.1.171", when given
    cves: tuple[str, ...] = ()


_STANZA_RE = re.compile(r"^(?P<source>\S+) \((?P<version>[^)\s]+)\) [^;]*;")
_RELEASE_RES = (
    re.compile(r"/ChangeLog-(\d+\.\d+\.\d+)\s*$"),
    re.compile(r"\bUpdate to (\d+\.\d+\.\d+)(?![\w.-])"),
)
_NOTE_RE = re.compile(r"\s*\((?:(?:CVE-\d+-\d+|Closes: [^)]*)(?:,\s*)?)+\)\s*$")
_CVE_RE = re.compile(r"CVE-\d+-\d+")
_ARCH_TAG_RE = re.compile(r"^(?:\[[^\]]+\]\s*)+")


def read_changelog(text: str, newer_than: str, up_to: str | None = None) -> list[ChangelogEntry]:
    """The items of the stanzas after version `newer_than` (not included) up
    to version `up_to` (included; default: the newest), in the order of the
    file (newest first).  Items under a "New upstream stable update" or
    "Update to 6.1.N" header carry that release."""
    entries: list[ChangelogEntry] = []
    version: str | None = None
    taking = up_to is None
    found_old = False
    release: str | None = None
    item: list[str] = []

    def finish() -> None:
        if item and taking and version is not None:
            entry = _entry(" ".join(item), version, release)
            if entry is not None:
                entries.append(entry)
        item.clear()

    for line in text.splitlines():
        stanza = _STANZA_RE.match(line)
        if stanza:
            finish()
            version, release = stanza["version"], None
            if version == newer_than:
                found_old = True
                break
            if version == up_to:
                taking = True
            continue
        stripped = line.strip()
        if not stripped or line.startswith(" -- ") or _is_name_header(stripped):
            finish()
            continue
        header = _release_header(stripped)
        if header is not None:  # the URL line, or "* Update to 6.1.171:"
            finish()
            release = header
        elif stripped.startswith(("* ", "- ")):
            finish()
            if stripped.startswith("* "):  # Debian's own change ends the upstream list
                release = None
            item.append(stripped[2:])
        elif item:
            item.append(stripped)  # a continuation line
    finish()
    if not found_old:
        raise InputError(f"changelog: no stanza for version {newer_than}")
    if up_to is not None and not taking:
        raise InputError(f"changelog: no stanza for version {up_to}")
    return entries


def _release_header(line: str) -> str | None:
    for pattern in _RELEASE_RES:
        if match := pattern.search(line):
            return match.group(1)
    return None


def _is_name_header(line: str) -> bool:
    return line.startswith("[ ") and line.endswith(" ]")


def _entry(text: str, version: str, release: str | None) -> ChangelogEntry | None:
    text = " ".join(text.split())
    if text.endswith(":"):  # a header of sub-items, not a change
        return None
    cves = tuple(_CVE_RE.findall(text))
    subject = _NOTE_RE.sub("", text)
    subject = _ARCH_TAG_RE.sub("", subject).strip()
    if not subject:
        return None
    return ChangelogEntry(subject, version, release, cves)


def candidate_subjects(file: str, function: str, entries: Iterable[ChangelogEntry]) -> list[str]:
    """Subjects that may be this function's fix, best first: those that name
    the function, then those whose prefix names its file ("mm/damon/core:"
    for mm/damon/core.c)."""
    named, by_file = [], []
    word = re.compile(rf"(?<![\w]){re.escape(function)}(?![\w])")
    prefixes = _subject_prefixes(file)
    for entry in entries:
        subject = entry.subject
        if word.search(subject):
            named.append(subject)
        elif any(subject.startswith(prefix) for prefix in prefixes):
            by_file.append(subject)
    return list(dict.fromkeys(named + by_file))


def _subject_prefixes(file: str) -> tuple[str, ...]:
    stem = file.rsplit(".", 1)[0]
    base = stem.rsplit("/", 1)[-1]
    prefixes = [f"{stem}:", f"{stem}/", f"{base}:", f"mm/{base}:", f"mm, {base}:"]
    if base.startswith(("mm_", "page_")):
        prefixes.append(f"mm/{base.replace('_', '-')}:")
    return tuple(prefixes)


# -- cutting units ------------------------------------------------------------

CHANGED, ADDED = "changed", "added"


@dataclass(frozen=True)
class Unit:
    id: str  # "<file>:<function>", "#<n>" added for the n-th of one name
    file: str
    function: str
    kind: str  # CHANGED, or ADDED (only in the new release: forward only)


@dataclass(frozen=True)
class CutUnit:
    unit: Unit
    forward: bytes  # the old file with the function at its new version
    reverse: bytes | None  # the new file with the function back at its old one


@dataclass(frozen=True)
class _Span:
    name: str
    occurrence: int  # 1 for the first definition of this name in the file
    start: int
    end: int

    @property
    def key(self) -> tuple[str, int]:
        return self.name, self.occurrence


def function_spans(text: bytes) -> list[_Span]:
    """The function definitions of a file, in order, with the project's own
    parser; a definition nested in, or overlapping, an earlier one is
    dropped (a half-recovered parse of the same text)."""
    functions = sorted(parse(Image.of(text)).functions, key=lambda f: f.node.start_byte)
    spans: list[_Span] = []
    seen: dict[str, int] = {}
    end = -1
    for function in functions:
        if function.node.start_byte < end:
            continue
        end = function.node.end_byte
        seen[function.name] = seen.get(function.name, 0) + 1
        spans.append(_Span(function.name, seen[function.name], function.node.start_byte, end))
    return spans


def cut_file(path: str, old: bytes | None, new: bytes) -> list[CutUnit]:
    """One unit per function of `path` whose text differs from `old` to
    `new` (by name; the n-th definition of a name pairs with the n-th), or
    that only `new` has.  Functions only `old` has are not units: their
    removal is part of another change."""
    old_text = old if old is not None else b""
    old_spans = {span.key: span for span in function_spans(old_text)} if old else {}
    new_spans = function_spans(new)
    units = []
    for position, span in enumerate(new_spans):
        new_function = new[span.start : span.end]
        unit_id = f"{path}:{span.name}" + (f"#{span.occurrence}" if span.occurrence > 1 else "")
        before = old_spans.get(span.key)
        if before is not None:
            old_function = old_text[before.start : before.end]
            if old_function == new_function:
                continue
            unit = Unit(unit_id, path, span.name, CHANGED)
            forward = old_text[: before.start] + new_function + old_text[before.end :]
            reverse = new[: span.start] + old_function + new[span.end :]
            units.append(CutUnit(unit, forward, reverse))
        else:
            unit = Unit(unit_id, path, span.name, ADDED)
            forward = _insert(old_text, new_function, new_spans, position, old_spans)
            units.append(CutUnit(unit, forward, None))
    return units


def _insert(
    old: bytes,
    function: bytes,
    new_spans: list[_Span],
    position: int,
    old_spans: dict[tuple[str, int], _Span],
) -> bytes:
    """`old` with a function the new release added, placed after the
    nearest function before it that both releases have (else before the
    nearest one after it, else at the end)."""
    for span in reversed(new_spans[:position]):
        if (anchor := old_spans.get(span.key)) is not None:
            return old[: anchor.end] + b"\n\n" + function + old[anchor.end :]
    for span in new_spans[position + 1 :]:
        if (anchor := old_spans.get(span.key)) is not None:
            return old[: anchor.start] + function + b"\n\n" + old[anchor.start :]
    if not old:  # a file the new release added
        return function + b"\n"
    return old.rstrip(b"\n") + b"\n\n" + function + b"\n"


def is_unit_path(path: str, patterns: Iterable[str] = UNIT_PATHS) -> bool:
    return path.endswith((".c", ".h")) and any(
        fnmatch.fnmatchcase(path, pattern) for pattern in patterns
    )


# -- git ------------------------------------------------------------------------


def _git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROPPED}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    env.update(extra or {})
    return env


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> bytes:
    out = subprocess.run(
        [*GIT, *args], cwd=repo, env=env or _git_env(), capture_output=True, check=False
    )
    if out.returncode != 0:
        lines = out.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"{repo}: git {args[0]} failed: {lines[-1] if lines else 'no message'}")
    return out.stdout


def _changed_paths(repo: Path, old: str, new: str) -> list[str]:
    out = _git(repo, "diff", "--name-only", "--no-renames", "-z", old, new)
    return sorted(p for p in out.decode().split("\0") if p)


def _blob(repo: Path, rev: str, path: str) -> bytes | None:
    out = subprocess.run(
        [*GIT, "cat-file", "blob", f"{rev}:{path}"],
        cwd=repo,
        env=_git_env(),
        capture_output=True,
        check=False,
    )
    return out.stdout if out.returncode == 0 else None


# -- writing the units ------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    version: str
    commit: str


def unit_file_name(unit_id: str, direction: str) -> str:
    return unit_id.replace("/", "_").replace(":", "__").replace("#", "-") + f".{direction}.patch"


def write_units(
    repo: Path,
    old: Release,
    new: Release,
    entries: list[ChangelogEntry],
    progress: Progress,
    patterns: Iterable[str] = UNIT_PATHS,
) -> list[dict]:
    """Cut the units between the two release commits of `repo` and write
    their patches and index.json into <repo>/units; the index's units."""
    patterns = tuple(patterns)
    paths = [p for p in _changed_paths(repo, old.commit, new.commit) if is_unit_path(p, patterns)]
    directory = repo / UNITS_DIR
    directory.mkdir(exist_ok=True)
    _exclude(repo, f"/{UNITS_DIR}/")
    progress.step(f"cutting {len(paths)} changed files into units, one per function")
    cut: list[CutUnit] = []
    for path in paths:
        new_text = _blob(repo, new.commit, path)
        if new_text is None:
            continue  # removed in the new release: no forward change to make
        cut.extend(cut_file(path, _blob(repo, old.commit, path), new_text))
    index = []
    with (
        Scratch(str(repo), str(repo / ".git" / "objects")) as scratch,
        progress.bar(len(cut), "writing patches") as advance,
    ):
        for item in cut:
            unit = item.unit
            record = {
                "id": unit.id,
                "file": unit.file,
                "function": unit.function,
                "kind": unit.kind,
                "forward": unit_file_name(unit.id, "forward"),
                "reverse": unit_file_name(unit.id, "reverse") if item.reverse else None,
                "candidates": candidate_subjects(unit.file, unit.function, entries),
            }
            sides = [("forward", old, new, item.forward)]
            if item.reverse is not None:
                sides.append(("reverse", new, old, item.reverse))
            for direction, base, source, text in sides:
                message = _commit_message(unit, base.version, source.version)
                try:
                    commit = scratch.commit(base.commit, {unit.file: text}, message)
                    patch = scratch.format_patch(commit)
                except MutationError as err:
                    raise InputError(f"{unit.id}: {direction} patch: {err}") from None
                (directory / str(record[direction])).write_bytes(patch)
            index.append(record)
            advance()
    data = {
        "schema": "mm-review/stable-units",
        "version": 1,
        "old": vars(old),
        "new": vars(new),
        "units": index,
        "changelog": [vars(e) | {"cves": list(e.cves)} for e in entries],
    }
    (directory / INDEX).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return index


def _exclude(repo: Path, pattern: str) -> None:
    """The units live in the tree's directory but are no part of it."""
    exclude = repo / ".git" / "info" / "exclude"
    exclude.parent.mkdir(exist_ok=True)
    lines = exclude.read_text(encoding="utf-8").splitlines() if exclude.exists() else []
    if pattern not in lines:
        exclude.write_text("\n".join([*lines, pattern]) + "\n", encoding="utf-8")


def _commit_message(unit: Unit, base: str, source: str) -> str:
    """Neutral on purpose: nothing in it says which side is the fix."""
    directory = unit.file.rsplit("/", 1)[0]
    what = "add" if unit.kind == ADDED else "take"
    return (
        f"{directory}: {what} {unit.function}() of {source}\n\n"
        f"{unit.file}: {unit.function}() as {source} has it, on top of\n"
        f"{base}; the rest of the tree is {base}'s.\n\n"
        f"Signed-off-by: {IDENTITY['GIT_AUTHOR_NAME']} <{IDENTITY['GIT_AUTHOR_EMAIL']}>\n"
    )


# -- building the corpus --------------------------------------------------------


def default_cache() -> Path:
    configured = os.environ.get("MMREVIEW_KERNEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "mm-review"


def build(cache: Path | None, progress: Progress) -> Path:
    """The corpus in <cache>/stable-6.1: built once, then reused."""
    cache = (cache or default_cache()).expanduser()
    try:
        (cache / "dl").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"--cache {cache}: {err.strerror or err}") from None
    cache = cache.resolve()
    target = cache / BUILD_NAME
    with _locked(cache / f".{BUILD_NAME}.lock", progress):
        if _complete(target):
            progress.step(f"{target} is built (delete it to rebuild)")
            return target
        if target.exists() or target.is_symlink():
            if not ((target / ".git" / STAMP).exists() or _empty_dir(target)):
                raise InputError(
                    f"{target} exists but was not made by 'mmreview corpus stable build';"
                    " remove it or choose another --cache"
                )
            progress.step(f"{target} is incomplete or out of date; rebuilding it")
        debs = [download(cache / "dl", version, progress) for version in (OLD_VERSION, NEW_VERSION)]
        started = time.perf_counter()
        scratch = Path(tempfile.mkdtemp(prefix=f".{BUILD_NAME}.tmp.", dir=cache))
        try:
            _build_into(scratch, debs, progress)
            if target.exists() or target.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{BUILD_NAME}.old.", dir=cache))
                target.rename(old / "t")
                shutil.rmtree(old)
            os.chmod(scratch, 0o777 & ~_umask())
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        progress.step(f"built {target} in {time.perf_counter() - started:.0f} s")
    return target


def _build_into(directory: Path, debs: list[Path], progress: Progress) -> None:
    env_base = _git_env(_TREE_IDENTITY)
    _git(directory, "init", "-q", "--initial-branch=main", env=env_base)
    releases = []
    changelog = b""
    for deb, version, date in zip(debs, (OLD_VERSION, NEW_VERSION), _RELEASE_DATES, strict=True):
        _clear_work_tree(directory)
        progress.step(f"unpacking {deb.name} ({', '.join(UNPACKED)})")
        changelog = unpack(deb, directory)
        progress.step(f"committing {version}")
        env = {**env_base, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        _git(directory, "add", "-A", "-f", ".", env=env)
        _git(
            directory,
            "commit",
            "-q",
            "--no-verify",
            "-m",
            f"Debian {PACKAGE} {version}",
            "-m",
            f"The files mm-review's stable corpus reviews ({', '.join(UNPACKED)}),"
            f" unpacked from {deb.name}.",
            env=env,
        )
        upstream = version.split("-")[0]
        _git(directory, "tag", f"v{upstream}", env=env)
        commit = _git(directory, "rev-parse", "HEAD", env=env).decode().strip()
        releases.append(Release(version, commit))
    text = gzip.decompress(changelog).decode("utf-8", "replace")
    entries = read_changelog(text, OLD_VERSION, NEW_VERSION)
    progress.step(f"{len(entries)} changelog items from {OLD_VERSION} to {NEW_VERSION}")
    units = write_units(directory, releases[0], releases[1], entries, progress)
    reverses = sum(1 for u in units if u["reverse"])
    progress.step(f"{len(units)} units ({reverses} with a reverse patch)")
    stamp = f"{releases[1].commit} {OLD_VERSION} {NEW_VERSION} {BUILD_FORMAT}\n"
    (directory / ".git" / STAMP).write_text(stamp, encoding="utf-8")


def _clear_work_tree(directory: Path) -> None:
    """Everything but .git: the next release is unpacked in its place."""
    for child in directory.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _complete(target: Path) -> bool:
    try:
        head, old, new, build_format = (target / ".git" / STAMP).read_text().split()
    except (OSError, ValueError):
        return False
    if (old, new, build_format) != (OLD_VERSION, NEW_VERSION, str(BUILD_FORMAT)):
        return False
    out = subprocess.run(
        [*GIT, "rev-parse", "-q", "--verify", "HEAD^{commit}"],
        cwd=target,
        env=_git_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() == head and (target / UNITS_DIR / INDEX).is_file()


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _locked(path: Path, progress: Progress) -> Iterator[None]:
    """One builder per cache; a waiter then finds the finished corpus."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.step(f"waiting for another build using {path.parent}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# -- downloading and unpacking ------------------------------------------------

# What apt says when its lists do not know a package or version (or are so
# stale that the mirror no longer has the file): refresh them once.
_APT_UNKNOWN_RE = re.compile(
    r"Unable to locate package|Version '[^']*' for '[^']*' was not found|No packages found"
    r"|Can't select (?:candidate )?version|has no installation candidate|404\s+Not Found"
)


def download(directory: Path, version: str, progress: Progress) -> Path:
    """<directory>/linux-source-6.1_<version>_all.deb, from apt-get
    download unless it is there already."""
    deb = directory / f"{PACKAGE}_{version.replace(':', '%3a')}_all.deb"
    if deb.is_file():
        progress.step(f"using {deb}")
        return deb
    if shutil.which("apt-get") is None:
        raise InputError(f"cannot download {PACKAGE}={version}: apt-get is not available")
    spec = f"{PACKAGE}={version}"
    progress.step(f"apt-get download {spec} into {directory}")
    result = _apt(["apt-get", "download", spec], directory)
    if result.returncode != 0 and _APT_UNKNOWN_RE.search(result.stdout + result.stderr):
        progress.step(f"apt-get update (apt does not know {spec})")
        update = _apt(["apt-get", "update", "-qq"], directory)
        if update.returncode != 0:
            raise InputError(f"cannot download {spec}: apt-get update failed: {_apt_error(update)}")
        result = _apt(["apt-get", "download", spec], directory)
    if result.returncode != 0:
        raise InputError(f"cannot download {spec}: apt-get download failed: {_apt_error(result)}")
    if not deb.is_file():
        raise InputError(f"cannot download {spec}: apt-get wrote no {deb.name} in {directory}")
    return deb


def _apt(command: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except OSError as err:
        raise InputError(f"cannot run {command[0]}: {err.strerror or err}") from None


def _apt_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [
        line.strip()
        for line in (result.stdout + "\n" + result.stderr).splitlines()
        if line.strip() and "Download is performed unsandboxed" not in line
    ]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or [f"exit {result.returncode}"])[-1]


def unpack(deb: Path, directory: Path) -> bytes:
    """Unpack the UNPACKED paths of the package's source tarball into
    `directory` (streamed: no intermediate file); the package's
    changelog.Debian.gz, as bytes."""
    source = f"./usr/src/{PACKAGE}.tar.xz"
    changelog_name = f"./usr/share/doc/{PACKAGE}/changelog.Debian.gz"
    changelog: bytes | None = None
    found_source = False
    try:
        process = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as err:
        raise InputError(f"{deb.name}: cannot run dpkg-deb: {err.strerror or err}") from None
    assert process.stdout is not None and process.stderr is not None
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as outer:
            for member in outer:
                if member.name == changelog_name:
                    handle = outer.extractfile(member)
                    changelog = handle.read() if handle else None
                elif member.name == source:
                    handle = outer.extractfile(member)
                    if handle is not None:
                        _unpack_source(handle, directory)
                        found_source = True
    except (tarfile.TarError, EOFError, OSError) as err:
        process.kill()
        process.wait()
        message = _first_line(process.stderr.read())
        raise InputError(f"{deb.name}: cannot unpack: {message or err}") from None
    finally:
        process.stdout.close()
    if process.wait() != 0:
        message = _first_line(process.stderr.read())
        raise InputError(f"{deb.name}: dpkg-deb failed: {message or 'no message'}")
    process.stderr.close()
    if not found_source:
        raise InputError(f"{deb.name}: no {source[2:]} in the package")
    if changelog is None:
        raise InputError(f"{deb.name}: no {changelog_name[2:]} in the package")
    for path in ("Makefile", "mm/memory.c", "include/linux/mm.h"):
        if not (directory / path).is_file():
            raise InputError(f"{deb.name}: no {path} in {source[2:]}")
    return changelog


def _first_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines()]
    return next((line for line in lines if line), "")


def _unpack_source(handle: IO[bytes], directory: Path) -> None:
    prefix = f"{PACKAGE}/"
    wanted = tuple(f"{prefix}{path}" for path in UNPACKED)

    def chosen(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        name = member.name
        if not any(name == w or name.startswith(w + "/") for w in wanted):
            return None
        renamed = {"name": name[len(prefix) :]}
        if member.islnk() and member.linkname.startswith(prefix):
            renamed["linkname"] = member.linkname[len(prefix) :]
        return tarfile.data_filter(member.replace(**renamed), path)

    with tarfile.open(fileobj=handle, mode="r|xz") as inner:
        inner.extractall(directory, filter=chosen)


# -- the manifest -------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    file: str
    function: str
    subject: str
    klass: str
    note: str = ""


_MANIFEST_KEYS = {"id", "file", "function", "subject", "class"}
_MANIFEST_OPTIONAL = {"note"}
_FUNCTION_RE = re.compile(r"^[A-Za-z_]\w*$")


def load_manifest(path: Path) -> list[ManifestEntry]:
    """The [[unit]] tables of a manifest, checked: one line naming the file
    and the entry for the first problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{path}: invalid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    if extra := sorted(set(data) - {"unit"}):
        raise InputError(f"{path}: unknown top-level key(s) {', '.join(extra)}")
    tables = data.get("unit", [])
    if not isinstance(tables, list) or not tables:
        raise InputError(f"{path}: no [[unit]] tables")
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, 1):
        entry = _manifest_entry(path, number, table)
        if entry.id in seen:
            raise InputError(f"{path}: unit '{entry.id}': duplicate id")
        seen.add(entry.id)
        entries.append(entry)
    return entries


def _manifest_entry(path: Path, number: int, table: dict) -> ManifestEntry:
    name = f"unit '{table['id']}'" if isinstance(table.get("id"), str) else f"unit #{number}"

    def fail(problem: str) -> InputError:
        return InputError(f"{path}: {name}: {problem}")

    for key in sorted(_MANIFEST_KEYS):
        if key not in table:
            raise fail(f"missing key '{key}'")
    if unknown := sorted(set(table) - _MANIFEST_KEYS - _MANIFEST_OPTIONAL):
        raise fail(f"unknown key(s) {', '.join(unknown)}")
    for key, value in table.items():
        if not isinstance(value, str):
            raise fail(f"'{key}' must be a string")
    if table["class"] not in CLASSES:
        raise fail(f"unknown class '{table['class']}' (one of {', '.join(CLASSES)})")
    if not _FUNCTION_RE.match(table["function"]):
        raise fail(f"function '{table['function']}' is not a C identifier")
    stem = f"{table['file']}:{table['function']}"
    if table["id"] != stem and not re.fullmatch(re.escape(stem) + r"#[2-9]\d*", table["id"]):
        raise fail(f"id must be '{stem}' (or '{stem}#<n>' for its n-th definition)")
    return ManifestEntry(
        id=table["id"],
        file=table["file"],
        function=table["function"],
        subject=table["subject"],
        klass=table["class"],
        note=table.get("note", ""),
    )


# -- scoring ------------------------------------------------------------------


@dataclass
class UnitScore:
    entry: ManifestEntry
    kind: str
    forward: list[Finding] = field(default_factory=list)
    reverse: list[Finding] | None = None  # None: no reverse patch (an added function)
    errors: list[str] = field(default_factory=list)
    class_rules: tuple[str, ...] = ()  # the rules claiming the unit's class

    def in_function(self, finding: Finding) -> bool:
        return finding.path == self.entry.file and finding.function == self.entry.function

    @property
    def flagged(self) -> bool:
        return bool(self.forward)

    @property
    def caught_any(self) -> bool:
        return self.reverse is not None and any(self.in_function(f) for f in self.reverse)

    @property
    def caught_class(self) -> bool:
        return self.reverse is not None and any(
            self.in_function(f) and f.rule in self.class_rules for f in self.reverse
        )


@dataclass
class ClassTally:
    units: int = 0
    reverses: int = 0
    caught_by_class_rule: int = 0
    caught_by_any_rule: int = 0
    forward_flagged: int = 0
    errors: int = 0

    def add(self, score: UnitScore) -> None:
        self.units += 1
        self.reverses += score.reverse is not None
        self.caught_by_class_rule += score.caught_class
        self.caught_by_any_rule += score.caught_any
        self.forward_flagged += score.flagged
        self.errors += bool(score.errors)


@dataclass
class Scoring:
    build: str
    old: Release
    new: Release
    rules: list[str]
    units: list[UnitScore]
    seconds: float
    class_rules: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def per_class(self) -> dict[str, ClassTally]:
        tallies = {klass: ClassTally() for klass in CLASSES}
        for unit in self.units:
            tallies[unit.entry.klass].add(unit)
        return {klass: tally for klass, tally in tallies.items() if tally.units}

    def total(self, classes: Iterable[str] | None = None) -> ClassTally:
        wanted = set(classes) if classes is not None else set(CLASSES)
        total = ClassTally()
        for unit in self.units:
            if unit.entry.klass in wanted:
                total.add(unit)
        return total


def load_index(build_dir: Path) -> dict:
    path = build_dir / UNITS_DIR / INDEX
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{build_dir}: no {UNITS_DIR}/{INDEX}; run 'mmreview corpus stable build' first"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read: {err}") from None
    if data.get("schema") != "mm-review/stable-units" or data.get("version") != 1:
        raise InputError(f"{path}: not a units index of this version; rebuild the corpus")
    return data


def check_manifest(manifest: Path, entries: list[ManifestEntry], index: dict) -> dict[str, dict]:
    """The index's units by id, after checking that the manifest labels
    exactly the built units and names only subjects of the changelog."""
    units = {u["id"]: u for u in index["units"]}
    labelled = {e.id for e in entries}
    if missing := [i for i in units if i not in labelled]:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(f"{manifest}: no entry for unit(s) {', '.join(missing[:3])}{more}")
    if unknown := [i for i in labelled if i not in units]:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise InputError(f"{manifest}: unit(s) {', '.join(unknown[:3])}{more} not in the build")
    subjects = {e["subject"] for e in index.get("changelog", [])}
    for entry in entries:
        if entry.subject and entry.subject not in subjects:
            raise InputError(
                f"{manifest}: unit '{entry.id}': subject '{entry.subject}' is not in the"
                " changelog between the two releases"
            )
    return units


def score(
    build_dir: Path,
    entries: list[ManifestEntry],
    index: dict,
    rules: list[Rule],
    progress: Progress,
    class_rules: dict[str, tuple[str, ...]] | None = None,
) -> Scoring:
    """Review every unit's forward patch against the old release and its
    reverse patch against the new one, with one KernelTree for all."""
    class_rules = CLASS_RULES if class_rules is None else class_rules
    started = time.perf_counter()
    units = {u["id"]: u for u in index["units"]}
    old = Release(**index["old"])
    new = Release(**index["new"])
    tree = KernelTree(str(build_dir))
    results = []
    with progress.bar(len(entries), "reviewing units") as advance:
        for entry in entries:
            unit = units[entry.id]
            result = UnitScore(entry, unit["kind"], class_rules=class_rules.get(entry.klass, ()))
            result.forward = _review(build_dir, unit["forward"], tree, old, rules, result.errors)
            if unit["reverse"]:
                result.reverse = _review(
                    build_dir, unit["reverse"], tree, new, rules, result.errors
                )
            results.append(result)
            advance()
    seconds = time.perf_counter() - started
    return Scoring(str(build_dir), old, new, [r.id for r in rules], results, seconds, class_rules)


def _review(
    build_dir: Path,
    name: str,
    tree: KernelTree,
    base: Release,
    rules: list[Rule],
    errors: list[str],
) -> list[Finding]:
    path = build_dir / UNITS_DIR / name
    try:
        patch = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    result = review(read_series(["-"], stdin=patch), rules, tree=tree, base=base.commit)
    # A unit patch that does not apply to its own base is a bug of the build.
    errors.extend(f"{name}: {e}" for e in result.errors)
    errors.extend(f"{name}: {n}" for n in result.notes if "reviewed from the patch alone" in n)
    return result.findings


# -- reports --------------------------------------------------------------------


def _ratio(part: int, whole: int) -> str:
    return f"{part}/{whole}" + (f" ({100 * part / whole:.0f}%)" if whole else "")


def render_text(scoring: Scoring, out: TextIO) -> None:
    per_class = scoring.per_class()
    header = ("class", "units", "reverse caught (class rule)", "(any rule)", "forward flagged")
    rows = [header]

    def row(name: str, tally: ClassTally) -> tuple[str, ...]:
        return (
            name,
            str(tally.units),
            f"{tally.caught_by_class_rule}/{tally.reverses}",
            f"{tally.caught_by_any_rule}/{tally.reverses}",
            f"{tally.forward_flagged}/{tally.units}",
        )

    for klass, tally in per_class.items():
        rows.append(row(klass, tally))
    rows.append(row("wave 1", scoring.total(WAVE1)))
    rows.append(row("wave 2", scoring.total(WAVE2)))
    rows.append(row("all", scoring.total()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for number, cells in enumerate(rows):
        if number in (1, len(rows) - 3):
            out.write("  ".join("-" * w for w in widths) + "\n")
        text = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        out.write("  ".join(text).rstrip() + "\n")
    total = scoring.total()
    out.write(
        f"\nforward patches flagged {_ratio(total.forward_flagged, total.units)};"
        f" reverse patches caught {_ratio(total.caught_by_any_rule, total.reverses)}"
        f" ({total.caught_by_class_rule} by a rule claiming the class);"
        f" {len(scoring.rules)} rules, {scoring.seconds:.1f} s\n"
    )
    _list(out, "forward patches flagged", [u for u in scoring.units if u.flagged], "forward")
    _list(out, "reverse patches caught", [u for u in scoring.units if u.caught_any], "reverse")
    errors = [u for u in scoring.units if u.errors]
    if errors:
        out.write("\nerrors (a unit patch the review could not apply):\n")
        for unit in errors:
            for error in unit.errors:
                out.write(f"  {unit.entry.id}: {error}\n")


def _list(out: TextIO, title: str, units: list[UnitScore], side: str) -> None:
    if not units:
        return
    out.write(f"\n{title}:\n")
    for unit in units:
        out.write(f"  {unit.entry.id} [{unit.entry.klass}]\n")
        findings = unit.forward if side == "forward" else (unit.reverse or [])
        for finding in findings:
            if side == "reverse" and not unit.in_function(finding):
                continue
            out.write(
                f"    {finding.rule} {finding.path}:{finding.line}: {finding.message}"
                f" (in {finding.function}())\n"
            )


def render_json(scoring: Scoring, out: TextIO) -> None:
    from analyzer.reporters.json_report import finding_dict

    data = {
        "schema": "mm-review/stable",
        "version": 1,
        "build": scoring.build,
        "old": vars(scoring.old),
        "new": vars(scoring.new),
        "rules": scoring.rules,
        "class_rules": {k: list(v) for k, v in scoring.class_rules.items()},
        "seconds": round(scoring.seconds, 3),
        "classes": {k: vars(t) for k, t in scoring.per_class().items()},
        "wave1": vars(scoring.total(WAVE1)),
        "wave2": vars(scoring.total(WAVE2)),
        "total": vars(scoring.total()),
        "units": [
            {
                "id": u.entry.id,
                "file": u.entry.file,
                "function": u.entry.function,
                "class": u.entry.klass,
                "subject": u.entry.subject,
                "kind": u.kind,
                "forward_flagged": u.flagged,
                "reverse_caught_by_any_rule": u.caught_any if u.reverse is not None else None,
                "reverse_caught_by_class_rule": u.caught_class if u.reverse is not None else None,
                "forward_findings": [finding_dict(f) for f in u.forward],
                "reverse_findings": (
                    [finding_dict(f) for f in u.reverse] if u.reverse is not None else None
                ),
                "errors": u.errors,
            }
            for u in scoring.units
        ],
    }
    json.dump(data, out, indent=2)
    out.write("\n")


RENDERERS = {"text": render_text, "json": render_json}


# -- the commands ---------------------------------------------------------------


def run_build(cache: Path | None, progress: Progress | None = None) -> int:
    target = build(cache, progress or Progress())
    print(target)
    return 0


def run_score(
    cache: Path | None,
    manifest: Path | None,
    select: list[str] | None,
    output_format: str,
    out: TextIO,
    progress: Progress | None = None,
) -> int:
    """Score the built corpus; 0 whenever the run completed (a measurement,
    not a gate)."""
    if output_format not in RENDERERS:
        raise InputError(
            f"--format {output_format}: unknown format (choose from {', '.join(RENDERERS)})"
        )
    progress = progress or Progress()
    build_dir = (cache or default_cache()).expanduser() / BUILD_NAME
    manifest = manifest or DEFAULT_MANIFEST
    rules = select_rules(select)
    entries = load_manifest(manifest)
    index = load_index(build_dir)
    check_manifest(manifest, entries, index)
    progress.step(f"reviewing {len(entries)} units with {len(rules)} rules")
    scoring = score(build_dir, entries, index, rules, progress)
    RENDERERS[output_format](scoring, out)
    return 0
