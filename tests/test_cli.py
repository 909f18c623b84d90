"""End to end: `mmreview` as a subprocess on real git output."""

from __future__ import annotations

import hashlib
import json
import mailbox
from pathlib import Path

from tests.conftest import ROOT, Tree, mmreview

SWAP = (
    "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
)


def swap_patch(tree: Tree) -> bytes:
    tree.edit("mm/fault.c", *SWAP)
    tree.commit("mm/demo: treat a non-present PMD as empty")
    return tree.format_patch("-1")


def test_flags_pmd_none_turned_into_not_present(minitree: Tree, tmp_path: Path) -> None:
    patch = tmp_path / "0001.patch"
    patch.write_bytes(swap_patch(minitree))
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    result = mmreview("check", str(patch), "--tree", str(minitree.path), "-f", "checkpatch")
    assert result.returncode == 1, result.stderr
    assert result.stdout.decode() == (
        "mm/fault.c:34: WARNING:PMD_PRESENT_AS_EMPTY: "
        "pmd_none(_pmd) replaced by !pmd_present(_pmd): a PMD migration entry is not present "
        "but not empty either; test pmd_none() for 'nothing mapped' and handle migration entries apart (in demo_must_wait())\n"
    )
    assert result.stderr == b""


def test_rename_only_is_silent(minitree: Tree) -> None:
    minitree.edit("mm/fault.c", "pmd_t *pmd, _pmd;", "pmd_t *pmd, pmdval;")
    text = (minitree.path / "mm/fault.c").read_text()
    (minitree.path / "mm/fault.c").write_text(
        text.replace("(_pmd)", "(pmdval)").replace("_pmd = ", "pmdval = ")
    )
    minitree.commit("mm/demo: rename _pmd to pmdval")
    result = mmreview(
        "check", "-", "--tree", str(minitree.path), "--all", input=minitree.format_patch("-1")
    )
    assert b"PMD_PRESENT_AS_EMPTY" not in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_already_there_is_not_the_patch_doing(minitree: Tree) -> None:
    # Once demo_must_wait() waits on !pmd_present(), touching the function
    # again does not make that new.
    minitree.edit("mm/fault.c", *SWAP)
    minitree.commit("mm/demo: treat a non-present PMD as empty")
    minitree.edit("mm/fault.c", "\tmmap_assert_locked(mm);", "\tmmap_assert_locked(ctx->mm);")
    minitree.commit("mm/demo: assert on the context's mm")
    result = mmreview("check", "-", "--tree", str(minitree.path), input=minitree.format_patch("-1"))
    assert result.returncode == 0, result.stdout
    shown = mmreview(
        "check", "-", "--tree", str(minitree.path), "--all", input=minitree.format_patch("-1")
    )
    assert shown.returncode == 1 and b"PMD_PRESENT_AS_EMPTY" in shown.stdout


def series(tree: Tree) -> bytes:
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint nr_present = 0;")
    tree.commit("mm/demo: start renaming the counter")
    tree.edit("mm/fault.c", *SWAP)
    tree.commit("mm/demo: treat a non-present PMD as empty")
    tree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    tree.commit("mm/demo: drop the uffd-wp re-check")
    return tree.format_patch("--cover-letter", "-v2", "--base=HEAD~3", "--thread", "-3")


def test_mbox_series_in_any_order(minitree: Tree, tmp_path: Path) -> None:
    mbox_bytes = series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    # Shuffle the messages: order comes from the [PATCH v2 n/3] counters.
    source = tmp_path / "in.mbox"
    source.write_bytes(mbox_bytes)
    shuffled = mailbox.mbox(tmp_path / "shuffled.mbox")
    for message in reversed(list(mailbox.mbox(source))):
        shuffled.add(message)
    shuffled.close()
    result = mmreview(
        "check", str(tmp_path / "shuffled.mbox"), "--tree", str(minitree.path), "-f", "json"
    )
    report = json.loads(result.stdout)
    assert [p["index"] for p in report["patches"]] == [1, 2, 3]
    assert report["base_reason"].startswith("base-commit")
    assert [(f["rule"], f["patch"]["index"], f["function"]) for f in report["findings"]] == [
        ("PMD_PRESENT_AS_EMPTY", 2, "demo_must_wait"),
        ("COLLAPSE_WITHOUT_UFFD_CHECK", 3, "demo_retract_one"),
    ]
    assert all(f["confidence"] == "HIGH" for f in report["findings"])
    assert result.returncode == 1


def test_range_and_stdin_agree(minitree: Tree) -> None:
    mbox_bytes = series(minitree)
    by_range = mmreview(
        "check", "--tree", str(minitree.path), "--range", "HEAD~3..HEAD", "-f", "checkpatch"
    )
    by_stdin = mmreview(
        "check", "-", "--tree", str(minitree.path), "-f", "checkpatch", input=mbox_bytes
    )
    assert by_range.stdout == by_stdin.stdout
    assert by_range.stdout.count(b"\n") == 2


def fingerprint(tree: Tree) -> tuple:
    git_dir = tree.path / ".git"
    index = hashlib.sha1((git_dir / "index").read_bytes()).hexdigest()
    objects = sorted(
        str(p.relative_to(git_dir)) for p in (git_dir / "objects").rglob("*") if p.is_file()
    )
    return tree.git("status", "--porcelain"), tree.git("rev-parse", "HEAD"), index, objects


def test_never_touches_the_users_tree(minitree: Tree, tmp_path: Path) -> None:
    mbox_bytes = series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    (minitree.path / "mm/fault.c").write_text(
        (minitree.path / "mm/fault.c").read_text() + "/* wip */\n"
    )
    hook = minitree.path / ".git/hooks/post-applypatch"
    hook.write_text("#!/bin/sh\ntouch hook-ran\n")
    hook.chmod(0o755)
    before = fingerprint(minitree)
    result = mmreview("check", "-", "--tree", str(minitree.path), input=mbox_bytes)
    assert result.returncode == 1
    assert fingerprint(minitree) == before
    assert not (minitree.path / "hook-ran").exists()


def test_patch_that_does_not_apply_is_named_and_the_rest_reviewed(minitree: Tree) -> None:
    mbox_bytes = series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    minitree.edit("mm/fault.c", "again:\n", "retry:\n")
    minitree.commit("local change the series does not know")
    result = mmreview(
        "check", "-", "--tree", str(minitree.path), "--base", "HEAD", input=mbox_bytes
    )
    stderr = result.stderr.decode()
    assert "patch 2/3" in stderr and "mm/fault.c: hunk #1" in stderr and "does not apply" in stderr
    assert "reviewed from the patch alone" in stderr
    out = result.stdout.decode()
    assert "PMD_PRESENT_AS_EMPTY" in out and "COLLAPSE_WITHOUT_UFFD_CHECK" in out
    assert result.returncode == 1


def test_no_tree_reviews_the_shipped_example() -> None:
    result = mmreview("check", "corpus/examples/demo-cleanups-v2.mbox", cwd=ROOT)
    out = result.stdout.decode()
    assert result.returncode == 1
    assert "mm/fault.c:34:7: warning:" in out and "[PMD_PRESENT_AS_EMPTY]" in out
    assert "mm/khugepaged.c:32:2: error:" in out
    assert "1 error, 1 warning, 0 checks in 3 patches" in out


def test_malformed_inputs_exit_2_without_traceback(minitree: Tree, tmp_path: Path) -> None:
    good = swap_patch(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    cases = {
        "empty.patch": b"",
        "garbage.patch": b"\x00\x01 this is not a patch at all\n",
        "truncated.patch": good[: good.index(b"+\tif (!pmd_present")],
        "missing.patch": good.replace(b"mm/fault.c", b"mm/nosuch.c"),
    }
    outcomes = {}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = mmreview("check", str(path), "--tree", str(minitree.path))
        assert b"Traceback" not in result.stderr, result.stderr
        outcomes[name] = (result.returncode, result.stderr.decode())
    assert outcomes["empty.patch"] == (
        2,
        f"mmreview: error: {tmp_path}/empty.patch: empty input, expected a patch or mbox\n",
    )
    assert (
        outcomes["garbage.patch"][0] == 2
        and "garbage.patch: not a patch" in outcomes["garbage.patch"][1]
    )
    assert (
        outcomes["truncated.patch"][0] == 2 and "malformed diff" in outcomes["truncated.patch"][1]
    )
    # A file the tree lacks is reported for that patch, and the patch is still reviewed.
    code, stderr = outcomes["missing.patch"]
    assert code == 1 and "mm/nosuch.c: file is not in the tree" in stderr
    nothing = mmreview("check", str(tmp_path / "does-not-exist.patch"))
    assert nothing.returncode == 2 and nothing.stderr.decode().count("\n") == 1
    assert b"Traceback" not in nothing.stderr


def test_one_bad_patch_does_not_lose_the_series(minitree: Tree, tmp_path: Path) -> None:
    mbox_bytes = series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    # Cut the diff out of patch 1/3 only.
    start = mbox_bytes.index(b"diff --git")
    end = mbox_bytes.index(b"From ", start)
    broken = mbox_bytes[:start] + b"\n" + mbox_bytes[end:]
    result = mmreview("check", "-", "--tree", str(minitree.path), input=broken)
    assert result.returncode == 2
    assert "has no diff" in result.stderr.decode()
    assert (
        b"PMD_PRESENT_AS_EMPTY" in result.stdout and b"COLLAPSE_WITHOUT_UFFD_CHECK" in result.stdout
    )


def test_usage_errors() -> None:
    assert mmreview("check").returncode == 2
    bad_format = mmreview("check", "corpus/examples/demo-cleanups-v2.mbox", "-f", "xml")
    assert bad_format.returncode == 2 and b"--format xml" in bad_format.stderr
    bad_tree = mmreview("check", "-", "--tree", "/nonexistent", input=b"x")
    assert bad_tree.returncode == 2 and b"--tree /nonexistent" in bad_tree.stderr
    bad_rule = mmreview("check", "corpus/examples/demo-cleanups-v2.mbox", "--select", "NOPE")
    assert bad_rule.returncode == 2 and b"unknown rule 'NOPE'" in bad_rule.stderr
    in_a_list = mmreview(
        "check", "corpus/examples/demo-cleanups-v2.mbox", "--ignore", "MM_BUG_ON,NOPE"
    )
    assert in_a_list.returncode == 2 and b"unknown rule 'NOPE'" in in_a_list.stderr


def test_rule_lists_as_checkpatch_takes_them() -> None:
    """`--ignore A,B` (checkpatch.pl's form) is `--ignore A --ignore B`."""
    example = "corpus/examples/demo-cleanups-v2.mbox"
    every = mmreview("check", example, "-f", "checkpatch").stdout.decode()
    shown = {line.split(":")[3] for line in every.splitlines() if line.count(":") > 3}
    assert len(shown) >= 2, every
    first, *others = sorted(shown)
    listed = mmreview("check", example, "-f", "checkpatch", "--ignore", ",".join(others))
    repeated = mmreview(
        "check", example, "-f", "checkpatch", *[a for o in others for a in ("--ignore", o)]
    )
    assert listed.stdout == repeated.stdout
    left = {
        line.split(":")[3] for line in listed.stdout.decode().splitlines() if line.count(":") > 3
    }
    assert left == {first}
    chosen = mmreview("check", example, "-f", "checkpatch", "--select", f"{first},{others[0]}")
    assert {
        line.split(":")[3] for line in chosen.stdout.decode().splitlines() if line.count(":") > 3
    } == {first, others[0]}


def test_rules_and_explain() -> None:
    listing = mmreview("rules").stdout.decode()
    assert "PMD_PRESENT_AS_EMPTY" in listing and "COLLAPSE_WITHOUT_UFFD_CHECK" in listing
    doc = mmreview("explain", "pmd-present-as-empty").stdout.decode()
    for section in (
        "## Why is this bad?",
        "## Example",
        "## Use instead",
        "## References",
        "a365ac09d334",
    ):
        assert section in doc
    assert mmreview("explain", "NOPE").returncode == 2
