"""BAD_FIXES_TAG against real git commits: the minitree for tags that name
commits it has, the real 6.12 tree (a single imported commit) for one that
names a commit it has not."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Tree, mmreview

FIX_BODY = "The re-check under the lock was missing.\n\n{tag}"


def broken_commit(tree: Tree) -> tuple[str, str]:
    """A commit a later patch fixes: its SHA and subject."""
    tree.edit("mm/khugepaged.c", "if (userfaultfd_wp(vma))\n\t\treturn;\n", "")
    subject = "mm/demo: skip the early uffd-wp check"
    return tree.commit(subject), subject


def fix_patch(tree: Tree, tag: str) -> bytes:
    """A fix carrying `tag`, formatted as `git format-patch` sends it."""
    tree.edit("mm/fault.c", "SPDX-License-Identifier: GPL-2.0", "SPDX-License-Identifier: GPL-2.0 ")
    tree.commit("mm/demo: fix it", FIX_BODY.format(tag=tag))
    return tree.format_patch("-1")


def check(tree: Tree, patch: bytes, *args: str) -> tuple[int, str]:
    result = mmreview(
        "check", "-", "--tree", str(tree.path), "--select", "BAD_FIXES_TAG", *args, input=patch
    )
    assert b"Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.decode()


def message_line(tree: Tree, text: str) -> int:
    """Where `text` sits in the fix's commit message as git shows it."""
    lines = tree.git("log", "-1", "--format=%B").split("\n")
    return next(n for n, line in enumerate(lines, 1) if text in line)


def test_tag_naming_a_commit_of_the_tree_with_its_subject_is_silent(minitree: Tree) -> None:
    sha, subject = broken_commit(minitree)
    patch = fix_patch(minitree, f'Fixes: {sha[:12]} ("{subject}")')
    assert check(minitree, patch, "-f", "checkpatch") == (0, "")


def test_wrong_subject_names_the_real_one_at_the_tag_line(minitree: Tree) -> None:
    sha, subject = broken_commit(minitree)
    patch = fix_patch(minitree, f'Fixes: {sha[:12]} ("mm/demo: skip uffd-wp")')
    code, out = check(minitree, patch, "-f", "checkpatch")
    line = message_line(minitree, "Fixes:")
    assert code == 1
    assert out == (
        f"COMMIT_MSG:{line}: WARNING:BAD_FIXES_TAG: Fixes: {sha[:12]}: the subject of "
        f'{sha[:12]} is "{subject}" (expected: Fixes: {sha[:12]} ("{subject}"))\n'
    )


def test_short_sha_is_resolved_and_the_full_tag_suggested(minitree: Tree) -> None:
    sha, subject = broken_commit(minitree)
    patch = fix_patch(minitree, f"Fixes: {sha[:8]} ({subject})")
    code, out = check(minitree, patch, "-f", "json")
    report = json.loads(out)
    (finding,) = report["findings"]
    assert code == 1
    assert finding["file"] == "COMMIT_MSG"
    assert finding["line"] == message_line(minitree, "Fixes:")
    assert finding["column"] == len("Fixes: ") + 1
    assert finding["source_line"] == f"Fixes: {sha[:8]} ({subject})"
    assert finding["patch"]["subject"] == "mm/demo: fix it"
    assert "the SHA has 8 characters, use at least 12" in finding["message"]
    assert 'quote the subject: ("<subject>")' in finding["message"]
    assert finding["message"].endswith(f'(expected: Fixes: {sha[:12]} ("{subject}"))')


def test_unknown_sha_in_the_minitree(minitree: Tree) -> None:
    patch = fix_patch(minitree, 'Fixes: 0123456789ab ("mm/demo: no such commit")')
    code, out = check(minitree, patch, "-f", "checkpatch")
    assert code == 1
    assert "Fixes: 0123456789ab: no such commit in the tree" in out


def test_sha_of_a_blob_is_not_a_commit(minitree: Tree) -> None:
    blob = minitree.git("rev-parse", "HEAD:mm/fault.c").strip()
    patch = fix_patch(minitree, f'Fixes: {blob[:12]} ("mm/demo: a file, not a commit")')
    _, out = check(minitree, patch, "-f", "checkpatch")
    assert f"Fixes: {blob[:12]}: names a blob, not a commit" in out


def test_ambiguous_short_sha(minitree: Tree) -> None:
    # Enough blobs that two share their first five hex digits.
    seen: dict[str, str] = {}
    prefix = None
    for batch in range(8):
        data = "".join(f"blob {batch}-{n}\0" for n in range(512)).encode()
        names = minitree.git("hash-object", "-w", "--stdin-paths", input=_paths(minitree, data))
        for sha in names.split():
            if sha[:5] in seen and seen[sha[:5]] != sha:
                prefix = sha[:5]
                break
            seen[sha[:5]] = sha
        if prefix:
            break
    assert prefix, "no five-digit collision among the blobs"
    patch = fix_patch(minitree, f'Fixes: {prefix} ("mm/demo: which one?")')
    _, out = check(minitree, patch, "-f", "checkpatch")
    assert f"Fixes: {prefix}: the SHA has 5 characters, use at least 12; ambiguous in" in out


def _paths(tree: Tree, data: bytes) -> bytes:
    """Write each NUL-separated content to a file; their paths, one a line."""
    folder = tree.path.parent / "blobs"
    folder.mkdir(exist_ok=True)
    paths = []
    for n, content in enumerate(data.split(b"\0")[:-1]):
        path = folder / f"{content.decode().replace(' ', '_')}-{n}"
        path.write_bytes(content)
        paths.append(str(path))
    return "\n".join(paths).encode() + b"\n"


def test_without_a_tree_only_the_form_is_checked(minitree: Tree, tmp_path: Path) -> None:
    good_form = fix_patch(minitree, 'Fixes: 0123456789ab ("mm/demo: not in any tree")')
    result = mmreview("check", "-", "--select", "BAD_FIXES_TAG", input=good_form)
    assert result.returncode == 0, result.stdout
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    bad_form = fix_patch(minitree, "Fixes: 0123456 mm/demo: not in any tree")
    result = mmreview("check", "-", "--select", "BAD_FIXES_TAG", "-f", "checkpatch", input=bad_form)
    assert result.returncode == 1
    assert result.stdout.decode().startswith("COMMIT_MSG:")
    assert "no such commit" not in result.stdout.decode()


def test_text_report_shows_the_tag_line_and_its_patch(minitree: Tree) -> None:
    sha, _ = broken_commit(minitree)
    patch = fix_patch(minitree, f'Fixes: {sha[:12]} ("wrong")')
    _, out = check(minitree, patch)
    line = message_line(minitree, "Fixes:")
    assert out.startswith(f"COMMIT_MSG:{line}:8: warning: Fixes: {sha[:12]}: the subject of")
    assert 'patch 1/1 "mm/demo: fix it"' in out
    assert f'{line:>5} | Fixes: {sha[:12]} ("wrong")' in out
    assert f"{'':5} | {'':7}^~~~" in out


def test_range_review_checks_the_commits_own_tags(minitree: Tree) -> None:
    sha, subject = broken_commit(minitree)
    fix_patch(minitree, f'Fixes: {sha[:12]} ("{subject}")')
    minitree.edit("mm/fault.c", "GPL-2.0 ", "GPL-2.0")
    minitree.commit("mm/demo: fix the fix", f'Fixes: {sha[:11]} ("{subject}")')
    result = mmreview(
        "check",
        "--tree",
        str(minitree.path),
        "--range",
        "HEAD~2..HEAD",
        "--select",
        "BAD_FIXES_TAG",
        "-f",
        "checkpatch",
    )
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("COMMIT_MSG:3: WARNING:BAD_FIXES_TAG: Fixes: ")
    assert "(patch 2/2)" in lines[0]


def test_tree_without_history_checks_only_the_form(kernel_tree: Path, tmp_path: Path) -> None:
    # The Debian tree is one imported commit: no upstream SHA resolves in it,
    # and that proves nothing, so only the form of the tag is checked.
    patch = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: Jane Dev <jane@example.com>\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0000\n"
        "Subject: [PATCH] mm/khugepaged: note the retract rules\n"
        "\n"
        "Write down what retract_page_tables() must re-check under the locks.\n"
        "\n"
        'Fixes: 1d65b771bc08 ("mm/khugepaged: retract_page_tables() without mmap or vma lock")\n'
        "Signed-off-by: Jane Dev <jane@example.com>\n"
        "---\n"
        " mm/RETRACT-NOTES | 1 +\n"
        "diff --git a/mm/RETRACT-NOTES b/mm/RETRACT-NOTES\n"
        "new file mode 100644\n"
        "--- /dev/null\n"
        "+++ b/mm/RETRACT-NOTES\n"
        "@@ -0,0 +1 @@\n"
        "+Re-check anon_vma and userfaultfd_wp() under pml and ptl.\n"
    )

    def review(text: str):
        return mmreview(
            "check",
            "-",
            "--tree",
            str(kernel_tree),
            "--select",
            "BAD_FIXES_TAG",
            "-f",
            "checkpatch",
            input=text.encode(),
        )

    silent = review(patch)
    assert (silent.returncode, silent.stdout) == (0, b""), silent.stderr
    short = review(patch.replace("Fixes: 1d65b771bc08 (", "Fixes: 1d65b771 ("))
    assert short.returncode == 1
    assert short.stdout.decode().startswith(
        "COMMIT_MSG:5: WARNING:BAD_FIXES_TAG: Fixes: 1d65b771: the SHA has 8 characters"
    )


def test_in_body_from_does_not_shift_the_line(minitree: Tree) -> None:
    # Sending someone else's patch puts their From: at the top of the body;
    # git am takes it out of the commit message again.
    sha, _ = broken_commit(minitree)
    fix_patch(minitree, f'Fixes: {sha[:12]} ("wrong")')
    patch = minitree.format_patch("-1", "--from=Maintainer Max <max@example.com>")
    assert b"\n\nFrom: Jane Dev <jane@example.com>\n\n" in patch
    _, out = check(minitree, patch, "-f", "checkpatch")
    assert out.startswith(f"COMMIT_MSG:{message_line(minitree, 'Fixes:')}: ")
