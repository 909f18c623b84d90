"""A series applied in memory makes the files `git apply` makes, and hands
to git everything it cannot be sure of; a review talks to git a few times."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

from analyzer.images import apply_exactly, hunk_git_rejects
from analyzer.patches import read_series
from analyzer.tree import KernelTree
from tests.conftest import MMREVIEW, ROOT, Tree

LINES = b"".join(b"\tline %d;\n" % n for n in range(1, 41))


def git_apply(tmp_path: Path, name: str, pre: bytes | None, diff: str) -> bytes | None:
    """What git apply makes of `diff` on the file `name` holding `pre`
    (None: no such file), outside any repository; None if it refuses."""
    work = tmp_path / "apply"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    if pre is not None:
        (work / name).write_bytes(pre)
    (work / "p.diff").write_text(diff, encoding="utf-8", errors="surrogateescape")
    done = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", "p.diff"], cwd=work, capture_output=True
    )
    if done.returncode != 0:
        return None
    return (work / name).read_bytes() if (work / name).exists() else b""


def diff_of(tmp_path: Path, old: bytes | None, new: bytes | None, *options: str) -> str:
    """`git diff --no-index` of two versions of demo.c, as a patch."""
    a, b = tmp_path / "a", tmp_path / "b"
    for side, text in ((a, old), (b, new)):
        shutil.rmtree(side, ignore_errors=True)
        side.mkdir()
        if text is not None:
            (side / "demo.c").write_bytes(text)
    done = subprocess.run(
        ["git", "diff", "--no-index", "--no-color", *options, "a", "b"],
        cwd=tmp_path,
        capture_output=True,
    )
    assert done.returncode == 1, done.stderr
    text = done.stdout.decode("utf-8", "surrogateescape")
    return text.replace("a/a/demo.c", "a/demo.c").replace("b/b/demo.c", "b/demo.c")


def patched_file(diff: str):
    (patch,) = read_series(["-"], stdin=diff.encode("utf-8", "surrogateescape")).patches
    (file,) = patch.files
    return file.patched


EDITS = {
    "middle": (LINES, LINES.replace(b"line 20;", b"line twenty;")),
    "start": (LINES, b"\tfirst;\n" + LINES.replace(b"\tline 1;\n", b"")),
    "end": (LINES, LINES.replace(b"\tline 40;\n", b"\tlast;\n\tafter;\n")),
    "two hunks": (LINES, LINES.replace(b"line 3;", b"x;").replace(b"line 37;", b"y;")),
    "no newline, old side": (LINES.rstrip(b"\n"), LINES),
    "no newline, new side": (LINES, LINES.rstrip(b"\n")),
    "no newline, both": (LINES.rstrip(b"\n"), LINES.replace(b"line 40", b"forty").rstrip(b"\n")),
    "new file": (None, LINES),
    "deleted file": (LINES, None),
    "not utf-8": (LINES + b"\t/* \xe9t\xe9 */\n", LINES + b"\t/* \xe9t\xe9 ! */\n"),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_exact_patch_makes_the_file_git_apply_makes(tmp_path: Path, edit: str) -> None:
    old, new = EDITS[edit]
    patched = patched_file(diff_of(tmp_path, old, new))
    made = apply_exactly(old or b"", patched)
    assert made == (new or b"")
    # The text the review hands to git apply when it does not apply in memory.
    assert made == git_apply(tmp_path, "demo.c", old, str(patched))


def test_a_patch_read_without_its_carriage_returns_is_left_to_git(tmp_path: Path) -> None:
    # The patch reader drops a plain diff's CRs; the file keeps them.
    old = LINES.replace(b"\n", b"\r\n")
    patched = patched_file(diff_of(tmp_path, old, old.replace(b"20", b"2")))
    assert apply_exactly(old, patched) is None
    assert git_apply(tmp_path, "demo.c", old, str(patched)) is None


def test_what_does_not_sit_where_it_says_is_left_to_git(tmp_path: Path) -> None:
    old, new = EDITS["middle"]
    diff = str(patched_file(diff_of(tmp_path, old, new)))
    moved = b"\tnew 0;\n\tnew 00;\n" + old
    # git applies it 2 lines lower; in memory it is not applied at all.
    assert apply_exactly(moved, patched_file(diff)) is None
    assert git_apply(tmp_path, "demo.c", moved, diff) is not None
    conflict = old.replace(b"line 21;", b"changed;")
    assert apply_exactly(conflict, patched_file(diff)) is None
    assert git_apply(tmp_path, "demo.c", conflict, diff) is None
    # A hunk with no context after it must end the file (git apply refuses
    # it anywhere else without --unidiff-zero).
    zero = str(patched_file(diff_of(tmp_path, old, new, "-U0")))
    assert apply_exactly(old, patched_file(zero)) is None
    assert git_apply(tmp_path, "demo.c", old, zero) is None


def git_refusal(tmp_path: Path, pre: bytes, diff: str) -> str | None:
    """The line of git apply's "patch failed: demo.c:<line>"; None when it applies."""
    work = tmp_path / "apply"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "demo.c").write_bytes(pre)
    (work / "p.diff").write_text(diff, encoding="utf-8", errors="surrogateescape")
    done = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", "p.diff"], cwd=work, capture_output=True
    )
    if done.returncode == 0:
        return None
    failed = [line for line in done.stderr.decode().splitlines() if "patch failed" in line]
    return failed[0].rsplit(":", 1)[1] if failed else done.stderr.decode()


def test_a_hunk_found_nowhere_is_the_one_git_stops_at(tmp_path: Path) -> None:
    old = LINES
    patched = patched_file(
        diff_of(tmp_path, old, old.replace(b"line 10;", b"x;").replace(b"line 30;", b"y;"))
    )
    # The second hunk's lines are gone; the first applies 2 lines lower.
    target = b"\tnew 0;\n\tnew 00;\n" + old.replace(b"line 32;", b"changed;")
    assert hunk_git_rejects(target, patched) == 2
    assert git_refusal(tmp_path, target, str(patched)) == str(patched[1].source_start)
    # It applies at an offset: git's to make.
    assert hunk_git_rejects(b"\tnew 0;\n" + old, patched) is None
    # The first hunk fits in two places: which git takes is git's to say.
    twice = old.replace(b"line 38;", b"line 7;").replace(b"line 39;", b"line 8;")
    twice = twice.replace(b"line 40;", b"line 9;").replace(b"line 32;", b"changed;")
    twice += b"".join(b"\tline %d;\n" % n for n in (10, 11, 12, 13))
    assert hunk_git_rejects(twice, patched) is None


def test_a_long_hunk_of_blank_lines_is_left_to_git() -> None:
    # 60,000 places to try a hunk of 30,001 lines: bounded, not compared out.
    body = " \n" * 30_000 + "-x\n+y\n"
    diff = (
        f"diff --git a/demo.c b/demo.c\n--- a/demo.c\n+++ b/demo.c\n@@ -2,30001 +2,30001 @@\n{body}"
    )
    assert hunk_git_rejects(b"\n" * 60_000, patched_file(diff)) is None


# Lines from a small alphabet, so that hunks often fit in several places.
_LINE = st.sampled_from([b"\ta;\n", b"\tb;\n", b"}\n", b"\n", b"\tc(d);\n", b"\te++;\n"])
_TEXT = st.lists(_LINE, min_size=1, max_size=30)
_EDIT = st.tuples(st.integers(0, 29), st.integers(0, 2), st.lists(_LINE, max_size=2))
# Other patches' edits, near this one's (-2..2 lines off), bring lines of their own.
_DRIFT = st.tuples(
    st.integers(-2, 2), st.integers(0, 2), st.lists(_LINE | st.just(b"\tdrift;\n"), max_size=2)
)


def _edited(lines: list[bytes], edits: list[tuple[int, int, list[bytes]]]) -> list[bytes]:
    result = list(lines)
    for at, remove, insert in edits:
        at = min(at, len(result))
        result[at : at + remove] = insert
    return result


@given(
    text=_TEXT,
    change=st.lists(_EDIT, min_size=1, max_size=3),
    drift=st.lists(_DRIFT, max_size=2),
    context=st.integers(1, 3),
)
def test_a_hunk_said_to_be_refused_is_the_one_git_refuses(
    tmp_path_factory: pytest.TempPathFactory,
    text: list[bytes],
    change: list[tuple[int, int, list[bytes]]],
    drift: list[tuple[int, int, list[bytes]]],
    context: int,
) -> None:
    tmp_path = tmp_path_factory.mktemp("refusal")
    old, new = b"".join(text), b"".join(_edited(text, change))
    assume(old != new)
    patched = patched_file(diff_of(tmp_path, old, new, f"-U{context}"))
    # The patch, applied to the file as other patches left it.
    near = [(max(0, change[n % len(change)][0] + off), r, i) for n, (off, r, i) in enumerate(drift)]
    target = b"".join(_edited(text, near))
    rejected = hunk_git_rejects(target, patched)
    event("refused" if rejected is not None else "left to git")
    if rejected is not None:
        assert git_refusal(tmp_path, target, str(patched)) == str(
            patched[rejected - 1].source_start
        )


def three_patch_series(tree: Tree) -> bytes:
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint nr = 0;")
    tree.commit("one")
    tree.edit("mm/fault.c", "\t\tpresent++;", "\t\tnr++;")
    tree.commit("two")
    (tree.path / "mm/new.c").write_text("int demo_new;\n")
    tree.git("add", "mm/new.c")
    tree.git("rm", "-q", "include/linux/pgtable.h")
    tree.commit("three")
    return tree.format_patch("-3", "--base=HEAD~3")


def summary(kernel: KernelTree, mbox: bytes) -> list:
    series = read_series(["-"], stdin=mbox)
    base, _ = kernel.choose_base(series, None)
    return [
        (
            [
                (f.path, f.pre and f.pre.blob_id, f.post and f.post.blob_id, f.added, f.removed)
                for f in images.files
            ],
            images.state,
        )
        for images in kernel.images(series, base)
    ]


def test_a_series_in_memory_is_the_series_git_applies(minitree: Tree, monkeypatch) -> None:
    mbox = three_patch_series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    in_memory = summary(KernelTree(str(minitree.path)), mbox)
    monkeypatch.setattr(KernelTree, "_apply_in_memory", lambda *_: None)
    by_git = summary(KernelTree(str(minitree.path)), mbox)
    assert in_memory == by_git
    # And the blob ids are git's own.
    assert in_memory[0][0][0][2] == minitree.git("rev-parse", "ORIG_HEAD~2:mm/fault.c").strip()


def test_a_single_patch_review_starts_two_git_processes(minitree: Tree, tmp_path: Path) -> None:
    # A tree of one commit (a snapshot, like the 6.12 tree) that does not
    # have the patch's commit: discovery (which says where .mmreview.toml
    # would be) and one cat-file.
    snapshot = tmp_path / "snapshot"
    shutil.copytree(minitree.path, snapshot, ignore=shutil.ignore_patterns(".git"))
    snapshot_tree = Tree(snapshot)
    snapshot_tree.git("init", "-q")
    snapshot_tree.git("add", ".")
    snapshot_tree.git("commit", "-q", "-m", "snapshot")
    patch = tmp_path / "one.patch"
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint nr = 0;")
    minitree.commit("one")
    patch.write_bytes(minitree.format_patch("-1"))
    log = tmp_path / "git.log"
    shim = tmp_path / "bin"
    shim.mkdir()
    real = shutil.which("git")
    (shim / "git").write_text(f'#!/bin/sh\necho "$1 $2 $3 $4" >> {log}\nexec {real} "$@"\n')
    (shim / "git").chmod(0o755)
    env_path = f"{shim}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(
        [*MMREVIEW, "check", str(patch), "--tree", str(snapshot), "-q"],
        env={**os.environ, "PATH": env_path, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    started = log.read_text().splitlines()
    assert len(started) == 2, started
    assert any("cat-file --batch" in line for line in started)


def test_a_root_commit_is_its_own_history(tmp_path: Path) -> None:
    # A snapshot imported as one commit: the own-commit search reads it
    # from the cat-file process, with the subject `git log %s` gives.
    repo = Tree(tmp_path / "one")
    repo.path.mkdir()
    repo.git("init", "-q")
    (repo.path / "a.c").write_text("int a;\n")
    repo.git("add", "a.c")
    message = "\n \n  mm: a subject  \nin two lines\t\n \nThe body.\n"
    repo.git("commit", "-q", "--cleanup=verbatim", "-m", message)
    kernel = KernelTree(str(repo.path))
    expected = repo.git("log", "--no-merges", "-n500", "--format=%H%x00%s", "HEAD")
    assert kernel.recent_commits(500) == [tuple(expected.rstrip("\n").split("\0"))]
    assert kernel.recent_commits(500)[0][1] == "  mm: a subject in two lines"
    # With history, git log lists it.
    repo.git("commit", "-q", "--allow-empty", "-m", "second")
    two = KernelTree(str(repo.path)).recent_commits(500)
    assert [subject for _, subject in two] == ["second", "  mm: a subject in two lines"]
