"""Precision on two years of real upstream mm development.

Every rule is diff-aware, so `mmreview scan` (whole files) cannot measure the
rules that only fire on what a patch removes or changes.  This runs them on
the real evolution of mm/ instead: Debian's linux-source-6.1 and
linux-source-6.12 packages become two commits of one scratch repository
(mm/, include/linux/, fs/userfaultfd.c), and the change of each file from
6.1 to 6.12 is reviewed as one patch against 6.1.  Upstream code that
shipped is correct until shown otherwise, so every finding is a false alarm
to explain (or a real bug fixed later than 6.12).

    python bench/history_precision.py [--cache DIR] [--json FILE]

Prints a count per rule and every finding.  Not a test: the 6.1 download and
the review of ~180 file-sized patches take a minute or two.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.engine import review  # noqa: E402
from analyzer.patches import read_series  # noqa: E402
from analyzer.registry import all_rules  # noqa: E402
from analyzer.tree import KernelTree  # noqa: E402

SUBSET = ("mm", "include/linux", "fs/userfaultfd.c")
GIT = ["git", "-c", "core.hooksPath=/dev/null", "-c", "gc.auto=0", "-c", "commit.gpgsign=false"]
IDENTITY = {
    "GIT_AUTHOR_NAME": "mm-review history",
    "GIT_AUTHOR_EMAIL": "history@mm-review.invalid",
    "GIT_COMMITTER_NAME": "mm-review history",
    "GIT_COMMITTER_EMAIL": "history@mm-review.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **IDENTITY}
    return subprocess.run(
        [*GIT, *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def old_source(cache: Path) -> Path:
    """linux-source-6.1, unpacked (the subset only)."""
    target = cache / "linux-6.1-subset"
    if (target / ".complete").exists():
        return target
    download = cache / "dl"
    download.mkdir(parents=True, exist_ok=True)
    if not list(download.glob("linux-source-6.1_*.deb")):
        subprocess.run(["apt-get", "download", "linux-source-6.1"], cwd=download, check=True)
    deb = sorted(download.glob("linux-source-6.1_*.deb"))[-1]
    scratch = Path(tempfile.mkdtemp(dir=cache))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(scratch)], check=True)
    tarball = next(scratch.rglob("linux-source-6.1.tar.xz"))
    wanted = tuple(f"linux-source-6.1/{part}" for part in SUBSET)
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(wanted)]
        archive.extractall(scratch / "src", members=members, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    (scratch / "src" / "linux-source-6.1").rename(target)
    shutil.rmtree(scratch)
    (target / ".complete").touch()
    return target


def history_repo(cache: Path, new_tree: Path) -> Path:
    """Commit 6.1's subset, then 6.12's on top."""
    repo = cache / "history-6.1-6.12"
    if (repo / ".git" / "complete").exists():
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    for source, message in ((old_source(cache), "6.1"), (new_tree, "6.12")):
        for part in SUBSET:
            destination = repo / part
            if destination.is_dir():
                shutil.rmtree(destination)
            destination.unlink(missing_ok=True)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if (source / part).is_dir():
                shutil.copytree(source / part, destination)
            else:
                shutil.copy2(source / part, destination)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message)
    (repo / ".git" / "complete").touch()
    return repo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("MMREVIEW_KERNEL_CACHE", Path.home() / ".cache" / "mm-review")),
    )
    parser.add_argument("--json", type=Path, help="also write the findings here")
    options = parser.parse_args()

    new_tree = Path(
        subprocess.run(
            [str(ROOT / "corpus" / "fetch-kernel"), str(options.cache)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
    )
    repo = history_repo(options.cache, new_tree)
    tree = KernelTree(str(repo))
    rules = list(all_rules())
    changed = git(repo, "diff", "--name-only", "HEAD~1", "HEAD", "--", "mm", "fs").split()
    files = [path for path in changed if path.endswith((".c", ".h"))]
    started = time.perf_counter()
    findings = []
    for path in files:
        diff = git(repo, "diff", "HEAD~1", "HEAD", "--", path)
        series = read_series(["-"], stdin=diff.encode())
        # No time budget: a file-sized patch may take longer than a real
        # one, and a cut review would hide findings.
        result = review(series, rules, tree=tree, base="HEAD~1", patch_seconds=None)
        findings.extend(result.findings)
    elapsed = time.perf_counter() - started

    counts = collections.Counter((f.rule, f.severity.value) for f in findings)
    print(
        f"{len(files)} files of mm/ and fs/userfaultfd.c changed from 6.1 to 6.12, "
        f"reviewed as one patch each in {elapsed:.1f} s\n"
    )
    print("| rule | severity | findings |\n| --- | --- | ---: |")
    for (rule, severity), count in sorted(counts.items()):
        print(f"| {rule} | {severity} | {count} |")
    print(f"| all | | {len(findings)} |\n")
    for f in findings:
        print(f"{f.path}:{f.line}: {f.severity.value}:{f.rule}: in {f.function}(): {f.message}")
    if options.json:
        options.json.write_text(
            json.dumps(
                [
                    {
                        "rule": f.rule,
                        "severity": f.severity.value,
                        "file": f.path,
                        "line": f.line,
                        "function": f.function,
                        "message": f.message,
                        "source_line": f.source_line,
                    }
                    for f in findings
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
