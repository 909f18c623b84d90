"""Applying a series in a scratch index: images, offsets, bases."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.patches import InputError, read_series
from analyzer.tree import KernelTree, _tree_entries
from tests.conftest import Tree


def three_patches(tree: Tree) -> bytes:
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint nr = 0;")
    tree.commit("one")
    tree.edit("mm/fault.c", "\t\tpresent++;", "\t\tnr++;")
    tree.commit("two")
    (tree.path / "mm/new.c").write_text("int demo_new;\n")
    tree.git("add", "mm/new.c")
    tree.git("rm", "-q", "include/linux/pgtable.h")
    tree.commit("three")
    return tree.format_patch("-3", "--base=HEAD~3")


def test_series_images_chain_patch_to_patch(minitree: Tree) -> None:
    mbox = three_patches(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    kernel = KernelTree(str(minitree.path))
    series = read_series(["-"], stdin=mbox)
    base, reason = kernel.choose_base(series, None)
    assert reason.startswith("base-commit")
    images = list(kernel.images(series, base))
    first, second, third = (i.files for i in images)
    assert first[0].post.blob_id == second[0].pre.blob_id
    assert b"\tint nr = 0;" in second[0].post.text and b"\t\tnr++;" in second[0].post.text
    paths = {f.path: (f.pre is None, f.post is None) for f in third}
    assert paths == {"mm/new.c": (True, False), "include/linux/pgtable.h": (False, True)}
    # Rules reading headers see the tree as each patch leaves it.
    assert kernel.reader(images[0])("include/linux/pgtable.h") is not None
    assert kernel.reader(images[2])("include/linux/pgtable.h") is None
    assert kernel.reader(images[2])("mm/new.c") == b"int demo_new;\n"


def test_offset_application_maps_lines_to_the_real_post_image(minitree: Tree) -> None:
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint nr = 0;")
    minitree.commit("change")
    mbox = minitree.format_patch("-1")
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    minitree.edit(
        "mm/fault.c",
        "#include <linux/mm.h>\n",
        "#include <linux/mm.h>\n#include <linux/a.h>\n#include <linux/b.h>\n",
    )
    minitree.commit("two more includes")
    kernel = KernelTree(str(minitree.path))
    series = read_series(["-"], stdin=mbox)
    file = next(kernel.images(series, kernel.resolve("HEAD"))).files[0]
    (added,) = file.added
    assert file.post.text.split(b"\n")[added - 1] == b"\tint nr = 0;"


def test_base_choice(minitree: Tree) -> None:
    kernel = KernelTree(str(minitree.path))
    series = read_series(
        ["-"],
        stdin=b"diff --git a/mm/fault.c b/mm/fault.c\n--- a/mm/fault.c\n+++ b/mm/fault.c\n@@ -1 +1 @@\n-a\n+b\n\nbase-commit: 0123456789abcdef0123456789abcdef01234567\n",
    )
    head = kernel.resolve("HEAD")
    assert kernel.choose_base(series, None) == (
        head,
        "HEAD (base-commit 0123456789ab is not in the tree)",
    )
    assert kernel.choose_base(series, "HEAD")[0] == head
    with pytest.raises(InputError, match="--base nope: no such revision"):
        kernel.choose_base(series, "nope")


def test_not_a_repository(tmp_path) -> None:
    with pytest.raises(InputError, match="not a git repository"):
        KernelTree(str(tmp_path))


def test_thousands_of_blobs_in_one_read(minitree: Tree, tmp_path) -> None:
    # A series touching thousands of files (a tree-wide rename) must not
    # dead-lock the batch read: both pipes to git would fill.
    names = []
    for number in range(3000):
        path = tmp_path / f"f{number}"
        path.write_text(f"int demo_{number};\n" * 1000)
        names.append(str(path))
    shas = minitree.git(
        "hash-object", "-w", "--stdin-paths", input="\n".join(names).encode()
    ).split()
    kernel = KernelTree(str(minitree.path))
    contents = kernel.blobs(shas)
    assert len(contents) == 3000
    assert contents[shas[1234]] == b"int demo_1234;\n" * 1000


def test_a_file_read_by_its_directory_is_the_file_git_names(minitree: Tree) -> None:
    """KernelTree.read() looks a file up in its directory's tree object:
    whatever `git cat-file blob REV:PATH` gives, it gives (a symbolic link's
    target text, not what it points to), and None where that fails."""
    (minitree.path / "include/linux/alias.h").symlink_to("pgtable.h")
    (minitree.path / "include/linux/deep/er").mkdir(parents=True)
    (minitree.path / "include/linux/deep/er/x.h").write_text("int x;\n")
    minitree.git("add", "-A")
    head = minitree.commit("links and depth")
    paths = [
        "mm/fault.c",
        "include/linux/pgtable.h",
        "include/linux/alias.h",
        "include/linux/deep/er/x.h",
        "include/linux",
        "include/linux/pgtable.h/x",
        "include/linux/nope.h",
        "nope/x.h",
        "mm//fault.c",
        "./mm/fault.c",
        "mm/../mm/fault.c",
        "",
    ]
    kernel = KernelTree(str(minitree.path))
    for path in paths:
        try:
            expected: bytes | None = subprocess.run(
                ["git", "cat-file", "blob", f"{head}:{path}"],
                cwd=minitree.path,
                capture_output=True,
                check=True,
            ).stdout
        except subprocess.CalledProcessError:
            expected = None
        assert kernel.read(head, path) == expected, path
    assert kernel.read(head, "include/linux/alias.h") == b"pgtable.h"


_MODES = st.sampled_from(["100644", "100755", "120000", "40000", "160000"])
_NAMES = st.text(
    st.characters(blacklist_characters="\0/", blacklist_categories=("Cs",)), min_size=1, max_size=12
)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(_NAMES.filter(lambda n: n not in (".", "..")), _MODES, max_size=12))
def test_tree_entries_read_as_git_writes_them(tmp_path_factory, entries) -> None:
    """Entries of a tree object git itself made (`git mktree`) are read back
    with their modes and ids, whatever bytes the ids hold."""
    repo = tmp_path_factory.mktemp("repo")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    lines, expected = [], {}
    for number, (name, mode) in enumerate(sorted(entries.items())):
        kind = {"40000": "tree", "160000": "commit"}.get(mode, "blob")
        sha = f"{number:02x}" * 20 if kind != "tree" else "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        lines.append(f"{mode} {kind} {sha}\t{name}")
        expected[name] = (mode.encode(), sha)
    made = (
        subprocess.run(
            ["git", "-C", str(repo), "mktree", "-z", "--missing"],
            input="".join(f"{line}\0" for line in lines).encode(),
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    raw = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "tree", made], capture_output=True, check=True
    ).stdout
    assert _tree_entries(raw) == expected
