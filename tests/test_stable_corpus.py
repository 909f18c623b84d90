"""The stable corpus (corpus/stable.py): the unit cutter, the changelog
reader, the manifest checks, the scorer's arithmetic on a small tree built
with the real git, and `mmreview corpus stable build/score` end to end on
two small .deb packages made here with dpkg-deb (no download).  The real
corpus is a command, not a test: it downloads about 280 MB."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from analyzer.patches import InputError
from analyzer.registry import select_rules
from corpus import stable
from corpus.stable import (
    ADDED,
    CHANGED,
    Progress,
    Release,
    check_manifest,
    cut_file,
    load_index,
    load_manifest,
    read_changelog,
    render_json,
    render_text,
    score,
    write_units,
)
from tests.conftest import ROOT, git, mmreview

# -- the unit cutter ----------------------------------------------------------

OLD_DEMO = b"""\
// SPDX-License-Identifier: GPL-2.0
#include <linux/mm.h>

static unsigned long demo_total;

static int demo_same(int nr)
{
	return nr + 1;
}

static int demo_changed(struct demo_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	return ctx->nr;
}

static void demo_removed(void)
{
	demo_total = 0;
}

#ifdef CONFIG_DEMO_FEATURE
static int demo_feature(void)
{
	return 1;
}
#else
static int demo_feature(void)
{
	return 0;
}
#endif

unsigned long demo_last(void)
{
	return demo_total;
}
"""

CHANGED_BEFORE = b"""\
static int demo_changed(struct demo_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	return ctx->nr;
}"""
CHANGED_AFTER = b"""\
static int demo_changed(struct demo_ctx *ctx)
{
	int nr;

	if (!ctx)
		return -EINVAL;
	spin_lock(&ctx->lock);
	nr = ctx->nr;
	spin_unlock(&ctx->lock);
	return nr;
}"""
ADDED_FUNCTION = b"""\
static bool demo_added(struct demo_ctx *ctx)
{
	return READ_ONCE(ctx->nr) > 0;
}"""
FEATURE_OFF_BEFORE = b"""\
static int demo_feature(void)
{
	return 0;
}
#endif"""
FEATURE_OFF_AFTER = b"""\
static int demo_feature(void)
{
	return -ENODEV;
}
#endif"""

NEW_DEMO = (
    OLD_DEMO.replace(CHANGED_BEFORE, CHANGED_AFTER + b"\n\n" + ADDED_FUNCTION)
    .replace(b"static void demo_removed(void)\n{\n\tdemo_total = 0;\n}\n\n", b"")
    .replace(FEATURE_OFF_BEFORE, FEATURE_OFF_AFTER)
)


def test_cutter_makes_one_unit_per_changed_or_added_function() -> None:
    units = {u.unit.id: u for u in cut_file("mm/demo.c", OLD_DEMO, NEW_DEMO)}
    # demo_same and demo_last are unchanged, demo_removed only exists in the
    # old file, the first demo_feature() (CONFIG_DEMO_FEATURE=y) is unchanged.
    assert sorted(units) == [
        "mm/demo.c:demo_added",
        "mm/demo.c:demo_changed",
        "mm/demo.c:demo_feature#2",
    ]
    assert units["mm/demo.c:demo_changed"].unit.kind == CHANGED
    assert units["mm/demo.c:demo_feature#2"].unit.kind == CHANGED
    assert units["mm/demo.c:demo_added"].unit.kind == ADDED
    assert units["mm/demo.c:demo_feature#2"].unit.function == "demo_feature"


def test_forward_changes_only_the_function_on_the_old_file() -> None:
    unit = {u.unit.id: u for u in cut_file("mm/demo.c", OLD_DEMO, NEW_DEMO)}[
        "mm/demo.c:demo_changed"
    ]
    assert unit.forward == OLD_DEMO.replace(CHANGED_BEFORE, CHANGED_AFTER)
    # The reverse puts the old function back into the new file, and only it:
    # the added function stays, the removed one stays removed.
    assert unit.reverse == NEW_DEMO.replace(CHANGED_AFTER, CHANGED_BEFORE)
    assert ADDED_FUNCTION in unit.reverse and b"demo_removed" not in unit.reverse


def test_ifdef_alternatives_pair_by_order() -> None:
    unit = {u.unit.id: u for u in cut_file("mm/demo.c", OLD_DEMO, NEW_DEMO)}[
        "mm/demo.c:demo_feature#2"
    ]
    assert unit.forward == OLD_DEMO.replace(FEATURE_OFF_BEFORE, FEATURE_OFF_AFTER)
    assert unit.forward.count(b"return 1;") == 1  # the CONFIG_DEMO_FEATURE=y one untouched
    assert unit.reverse == NEW_DEMO.replace(FEATURE_OFF_AFTER, FEATURE_OFF_BEFORE)


def test_added_function_goes_after_its_predecessor_forward_only() -> None:
    unit = {u.unit.id: u for u in cut_file("mm/demo.c", OLD_DEMO, NEW_DEMO)}["mm/demo.c:demo_added"]
    assert unit.reverse is None
    assert unit.forward == OLD_DEMO.replace(
        CHANGED_BEFORE, CHANGED_BEFORE + b"\n\n" + ADDED_FUNCTION
    )


def test_new_file_every_function_is_added() -> None:
    units = cut_file("mm/fresh.c", None, OLD_DEMO)
    assert {u.unit.kind for u in units} == {ADDED}
    assert [u.unit.function for u in units] == [
        "demo_same",
        "demo_changed",
        "demo_removed",
        "demo_feature",
        "demo_feature",
        "demo_last",
    ]
    assert all(u.forward.count(b"{") == 1 for u in units)  # one function each


def test_identical_files_make_no_unit() -> None:
    assert cut_file("mm/demo.c", OLD_DEMO, OLD_DEMO) == []


# -- the changelog --------------------------------------------------------------

CHANGELOG = """\
linux (6.1.12-2) bookworm-security; urgency=high

  * mm/demo: fix the Debian-only patch (Closes: #1099999)

 -- Jane Maintainer <jane@example.org>  Mon, 02 Nov 2026 10:00:00 +0100

linux (6.1.12-1) bookworm-security; urgency=high

  * New upstream stable update:
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.1.11
    - mm/demo: put the folio on the error path of demo_isolate()
      (CVE-2099-0001)
    - [x86] mm/demo: a subject long enough to be continued on a
      second line
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.1.12
    - userfaultfd: demo subject (CVE-2099-0002, CVE-2099-0003)

  [ Joe Helper ]
  * [rt] Update to 6.1.12-rt7:
    - rt: a realtime change
  * demo: a Debian change

 -- Jane Maintainer <jane@example.org>  Sat, 31 Oct 2026 10:00:00 +0100

linux (6.1.10-3) bookworm-security; urgency=high

  * Update to 6.1.10:
    - mm/demo: already in the old release

 -- Jane Maintainer <jane@example.org>  Fri, 02 Oct 2026 10:00:00 +0100
"""


def test_changelog_items_between_the_versions() -> None:
    entries = read_changelog(CHANGELOG, "6.1.10-3", "6.1.12-2")
    assert [(e.subject, e.version, e.release, e.cves) for e in entries] == [
        ("mm/demo: fix the Debian-only patch", "6.1.12-2", None, ()),
        (
            "mm/demo: put the folio on the error path of demo_isolate()",
            "6.1.12-1",
            "6.1.11",
            ("CVE-2099-0001",),
        ),
        (
            "mm/demo: a subject long enough to be continued on a second line",
            "6.1.12-1",
            "6.1.11",
            (),
        ),
        ("userfaultfd: demo subject", "6.1.12-1", "6.1.12", ("CVE-2099-0002", "CVE-2099-0003")),
        ("rt: a realtime change", "6.1.12-1", None, ()),
        ("demo: a Debian change", "6.1.12-1", None, ()),
    ]


def test_changelog_update_to_header_and_upper_bound() -> None:
    newest_only = read_changelog(CHANGELOG, "6.1.12-1")
    assert [e.subject for e in newest_only] == ["mm/demo: fix the Debian-only patch"]
    everything = read_changelog(
        CHANGELOG + "\nlinux (6.1.9-1) bookworm; urgency=medium\n", "6.1.9-1"
    )
    old = [e for e in everything if e.version == "6.1.10-3"]
    assert [(e.subject, e.release) for e in old] == [
        ("mm/demo: already in the old release", "6.1.10")
    ]
    skipped = read_changelog(CHANGELOG, "6.1.10-3", "6.1.12-1")
    assert "mm/demo: fix the Debian-only patch" not in [e.subject for e in skipped]


def test_changelog_without_the_version_is_an_error() -> None:
    with pytest.raises(InputError, match=r"^changelog: no stanza for version 6\.1\.8-1$"):
        read_changelog(CHANGELOG, "6.1.8-1")
    with pytest.raises(InputError, match=r"^changelog: no stanza for version 6\.1\.99-1$"):
        read_changelog(CHANGELOG, "6.1.10-3", "6.1.99-1")


def test_candidate_subjects_name_the_function_first() -> None:
    entries = read_changelog(CHANGELOG, "6.1.10-3")
    assert stable.candidate_subjects("mm/demo.c", "demo_isolate", entries)[0] == (
        "mm/demo: put the folio on the error path of demo_isolate()"
    )
    assert stable.candidate_subjects("fs/userfaultfd.c", "nothing_named", entries) == [
        "userfaultfd: demo subject"
    ]


# -- the manifest ---------------------------------------------------------------

UNIT = """\
[[unit]]
id = "mm/demo.c:demo_changed"
file = "mm/demo.c"
function = "demo_changed"
subject = ""
class = "race"
"""


def manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (UNIT.replace('"race"', '"racy"'), "unit 'mm/demo.c:demo_changed': unknown class 'racy'"),
        (UNIT + "\n" + UNIT, "unit 'mm/demo.c:demo_changed': duplicate id"),
        (
            UNIT.replace('class = "race"\n', ""),
            "unit 'mm/demo.c:demo_changed': missing key 'class'",
        ),
        (UNIT.replace('id = "mm/demo.c:demo_changed"\n', ""), "unit #1: missing key 'id'"),
        (UNIT + 'labels = "x"\n', "unit 'mm/demo.c:demo_changed': unknown key(s) labels"),
        (
            UNIT.replace('id = "mm/demo.c:demo_changed"', 'id = "mm/demo.c:other"'),
            "id must be 'mm/demo.c:demo_changed'",
        ),
        (UNIT.replace('subject = ""', "subject = 3"), "'subject' must be a string"),
        ("[[unit]\n", "invalid TOML"),
        ('title = "x"\n', "unknown top-level key(s) title"),
    ],
)
def test_manifest_problems_are_one_line_naming_file_and_entry(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = manifest(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_manifest_loads_and_must_label_exactly_the_built_units(tmp_path: Path) -> None:
    second = UNIT.replace("demo_changed", "demo_feature").replace(
        'demo_feature"\nfile', 'demo_feature#2"\nfile'
    )
    path = manifest(tmp_path, UNIT + "\n" + second + 'note = "the CONFIG_DEMO_FEATURE=n one"\n')
    entries = load_manifest(path)
    assert [(e.id, e.klass, e.note) for e in entries] == [
        ("mm/demo.c:demo_changed", "race", ""),
        ("mm/demo.c:demo_feature#2", "race", "the CONFIG_DEMO_FEATURE=n one"),
    ]
    index = {
        "units": [{"id": "mm/demo.c:demo_changed"}, {"id": "mm/demo.c:demo_feature#2"}],
        "changelog": [],
    }
    assert set(check_manifest(path, entries, index)) == {
        "mm/demo.c:demo_changed",
        "mm/demo.c:demo_feature#2",
    }
    with pytest.raises(InputError, match=r"no entry for unit\(s\) mm/demo.c:demo_added$"):
        check_manifest(
            path, entries, {**index, "units": [*index["units"], {"id": "mm/demo.c:demo_added"}]}
        )
    with pytest.raises(InputError, match=r"unit\(s\) mm/demo.c:demo_feature#2 not in the build$"):
        check_manifest(path, entries, {**index, "units": index["units"][:1]})
    named = load_manifest(
        manifest(tmp_path, UNIT.replace('subject = ""', 'subject = "mm/demo: invented"'))
    )
    with pytest.raises(InputError, match="subject 'mm/demo: invented' is not in the changelog"):
        check_manifest(path, named, {**index, "units": index["units"][:1]})


# -- scoring --------------------------------------------------------------------

# A kernel-style file at two releases.  demo_walk() gained the NULL check of
# pte_alloc_map_lock()'s result (its reverse drops it again: a bug
# PTE_OFFSET_MAP_UNCHECKED knows, in 6.1 too, where the allocation can fail); demo_pages() changed its arithmetic (no
# rule knows); demo_young() started to read the PTE with a plain
# dereference (its forward is what PT_ENTRY_PLAIN_DEREF flags); demo_fresh()
# is new (forward only).
WALK_OLD = b"""\
// SPDX-License-Identifier: GPL-2.0
#include <linux/mm.h>
#include <linux/pgtable.h>

static int demo_walk(struct mm_struct *mm, pmd_t *pmd, unsigned long addr)
{
	spinlock_t *ptl;
	pte_t *pte;
	int ret = 0;

	pte = pte_alloc_map_lock(mm, pmd, addr, &ptl);
	if (!pte_none(ptep_get(pte)))
		ret = 1;
	pte_unmap_unlock(pte, ptl);
	return ret;
}

static unsigned long demo_pages(unsigned long start, unsigned long end)
{
	return (end - start) >> PAGE_SHIFT;
}

static bool demo_young(struct vm_area_struct *vma, unsigned long addr, pte_t *pte)
{
	return ptep_test_and_clear_young(vma, addr, pte);
}
"""
WALK_NEW = (
    WALK_OLD.replace(
        b"\tpte = pte_alloc_map_lock(mm, pmd, addr, &ptl);\n",
        b"\tpte = pte_alloc_map_lock(mm, pmd, addr, &ptl);\n\tif (!pte)\n\t\treturn -EAGAIN;\n",
    )
    .replace(b"(end - start) >> PAGE_SHIFT", b"PFN_UP(end - start)")
    .replace(
        b"\treturn ptep_test_and_clear_young(vma, addr, pte);\n",
        b"\tif (!pte_present(*pte))\n\t\treturn false;\n\treturn ptep_test_and_clear_young(vma, addr, pte);\n",
    )
    + b"\nstatic bool demo_fresh(struct mm_struct *mm)\n{\n\treturn mm != NULL;\n}\n"
)
WALK_MANIFEST = """\
[[unit]]
id = "mm/demo_walk.c:demo_walk"
file = "mm/demo_walk.c"
function = "demo_walk"
subject = "mm/demo_walk: check the page table"
class = "null-deref"

[[unit]]
id = "mm/demo_walk.c:demo_pages"
file = "mm/demo_walk.c"
function = "demo_pages"
subject = ""
class = "arithmetic"

[[unit]]
id = "mm/demo_walk.c:demo_young"
file = "mm/demo_walk.c"
function = "demo_young"
subject = ""
class = "entry-helper"

[[unit]]
id = "mm/demo_walk.c:demo_fresh"
file = "mm/demo_walk.c"
function = "demo_fresh"
subject = ""
class = "not-a-fix"
"""


def two_releases(repo: Path, files: dict[str, tuple[bytes, bytes]]) -> tuple[Release, Release]:
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    commits = []
    for side in (0, 1):
        for path, texts in files.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(texts[side])
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"release {side}")
        commits.append(git(repo, "rev-parse", "HEAD").strip())
    return Release("6.1.1-1", commits[0]), Release("6.1.2-1", commits[1])


@pytest.fixture
def walk_build(tmp_path: Path) -> Path:
    repo = tmp_path / "build"
    old, new = two_releases(repo, {"mm/demo_walk.c": (WALK_OLD, WALK_NEW)})
    entries = read_changelog(
        "linux (6.1.2-1) bookworm; urgency=medium\n\n  * Update to 6.1.2:\n"
        "    - mm/demo_walk: check the page table\n\n -- J <j@example.org>  Mon, 02 Nov 2026 10:00:00 +0100\n\n"
        "linux (6.1.1-1) bookworm; urgency=medium\n",
        "6.1.1-1",
    )
    write_units(repo, old, new, entries, Progress(io.StringIO()))
    return repo


def test_units_are_format_patch_text_that_applies_to_its_base(walk_build: Path) -> None:
    index = load_index(walk_build)
    assert [(u["id"], u["kind"]) for u in index["units"]] == [
        ("mm/demo_walk.c:demo_walk", CHANGED),
        ("mm/demo_walk.c:demo_pages", CHANGED),
        ("mm/demo_walk.c:demo_young", CHANGED),
        ("mm/demo_walk.c:demo_fresh", ADDED),
    ]
    walk = index["units"][0]
    assert walk["candidates"] == ["mm/demo_walk: check the page table"]
    forward = (walk_build / "units" / walk["forward"]).read_bytes()
    assert (
        forward.startswith(b"From ")
        and b"\nSubject: [PATCH] mm: take demo_walk() of 6.1.2-1\n" in forward
    )
    assert b"+\tif (!pte)\n" in forward
    reverse = (walk_build / "units" / walk["reverse"]).read_bytes()
    assert b"-\tif (!pte)\n" in reverse
    check = subprocess.run(
        ["git", "apply", "--check", "-"], cwd=walk_build, input=reverse, capture_output=True
    )
    assert check.returncode == 0, check.stderr  # HEAD is the new release
    assert index["units"][3]["reverse"] is None
    assert git(walk_build, "status", "--porcelain") == ""  # nothing written to the tree


def test_scorer_counts_per_class(walk_build: Path, tmp_path: Path) -> None:
    path = manifest(tmp_path, WALK_MANIFEST)
    entries = load_manifest(path)
    index = load_index(walk_build)
    check_manifest(path, entries, index)
    scoring = score(walk_build, entries, index, select_rules(), Progress(io.StringIO()))
    units = {u.entry.function: u for u in scoring.units}
    assert units["demo_walk"].caught_any and not units["demo_walk"].caught_class
    assert {
        f.rule for f in units["demo_walk"].reverse or [] if units["demo_walk"].in_function(f)
    } == {"PTE_OFFSET_MAP_UNCHECKED"}
    assert not units["demo_pages"].caught_any and not units["demo_pages"].flagged
    assert units["demo_young"].flagged and not units["demo_young"].caught_any
    assert [f.rule for f in units["demo_young"].forward] == ["PT_ENTRY_PLAIN_DEREF"]
    assert units["demo_fresh"].reverse is None and not units["demo_fresh"].flagged
    assert not any(u.errors for u in scoring.units)

    per_class = {k: vars(t) for k, t in scoring.per_class().items()}
    assert per_class == {
        "null-deref": {
            "units": 1,
            "reverses": 1,
            "caught_by_class_rule": 0,
            "caught_by_any_rule": 1,
            "forward_flagged": 0,
            "errors": 0,
        },
        "entry-helper": {
            "units": 1,
            "reverses": 1,
            "caught_by_class_rule": 0,
            "caught_by_any_rule": 0,
            "forward_flagged": 1,
            "errors": 0,
        },
        "arithmetic": {
            "units": 1,
            "reverses": 1,
            "caught_by_class_rule": 0,
            "caught_by_any_rule": 0,
            "forward_flagged": 0,
            "errors": 0,
        },
        "not-a-fix": {
            "units": 1,
            "reverses": 0,
            "caught_by_class_rule": 0,
            "caught_by_any_rule": 0,
            "forward_flagged": 0,
            "errors": 0,
        },
    }
    assert vars(scoring.total(stable.WAVE1))["units"] == 1
    assert vars(scoring.total(stable.WAVE2))["forward_flagged"] == 1
    total = scoring.total()
    assert (total.units, total.reverses, total.caught_by_any_rule, total.forward_flagged) == (
        4,
        3,
        1,
        1,
    )

    # The same run with a rule claiming the class.
    claimed = score(
        walk_build,
        entries,
        index,
        select_rules(),
        Progress(io.StringIO()),
        class_rules={
            "null-deref": ("PTE_OFFSET_MAP_UNCHECKED",),
            "entry-helper": ("PT_ENTRY_PLAIN_DEREF",),
        },
    )
    assert claimed.per_class()["null-deref"].caught_by_class_rule == 1
    # A forward finding is a false alarm, never a catch.
    assert claimed.per_class()["entry-helper"].caught_by_class_rule == 0

    text = io.StringIO()
    render_text(scoring, text)
    report = text.getvalue()
    assert re.search(r"^null-deref +1 +0/1 +1/1 +0/1$", report, re.MULTILINE)
    assert re.search(r"^all +4 +0/3 +1/3 +1/4$", report, re.MULTILINE)
    assert "forward patches flagged 1/4 (25%); reverse patches caught 1/3 (33%)" in report
    assert (
        "  mm/demo_walk.c:demo_young [entry-helper]\n    PT_ENTRY_PLAIN_DEREF mm/demo_walk.c:"
        in report
    )

    out = io.StringIO()
    render_json(claimed, out)
    data = json.loads(out.getvalue())
    assert (data["schema"], data["version"]) == ("mm-review/stable", 1)
    assert data["class_rules"]["null-deref"] == ["PTE_OFFSET_MAP_UNCHECKED"]
    assert data["total"]["caught_by_class_rule"] == 1
    walk = next(u for u in data["units"] if u["function"] == "demo_walk")
    assert walk["reverse_caught_by_class_rule"] is True and walk["forward_flagged"] is False
    fresh = next(u for u in data["units"] if u["function"] == "demo_fresh")
    assert fresh["reverse_findings"] is None and fresh["reverse_caught_by_any_rule"] is None


# -- build and score end to end, on two small packages --------------------------

MAKEFILE = b"VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\n"
MM_H = b"#ifndef _LINUX_MM_H\n#define _LINUX_MM_H\n#endif\n"
MEMORY_C = b"// SPDX-License-Identifier: GPL-2.0\nint demo_memory(void)\n{\n\treturn 0;\n}\n"
PACKAGE_CHANGELOG = """\
linux (6.1.192-3) bookworm-security; urgency=high

  * New upstream stable update:
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.1.192
    - mm/demo_walk: check the page table

 -- Jane Maintainer <jane@example.org>  Thu, 26 Nov 2026 18:12:56 +0100

linux (6.1.170-3) bookworm-security; urgency=high

  * demo: an older change

 -- Jane Maintainer <jane@example.org>  Fri, 01 May 2026 10:00:00 +0100
"""


def make_deb(path: Path, version: str, demo_walk: bytes, scratch: Path) -> None:
    """A linux-source-6.1 look-alike: the source tarball and the changelog
    where the real package has them."""
    root = scratch / f"pkg-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-source-6.1\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Jane Maintainer <jane@example.org>\nDescription: test package\n"
    )
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:xz") as archive:
        for name, data in (
            ("Makefile", MAKEFILE),
            ("include/linux/mm.h", MM_H),
            ("mm/memory.c", MEMORY_C),
            ("mm/demo_walk.c", demo_walk),
            ("drivers/demo.c", b"int not_unpacked;\n"),
        ):
            info = tarfile.TarInfo(f"linux-source-6.1/{name}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    (root / "usr" / "src").mkdir(parents=True)
    (root / "usr" / "src" / "linux-source-6.1.tar.xz").write_bytes(tarball.getvalue())
    doc = root / "usr" / "share" / "doc" / "linux-source-6.1"
    doc.mkdir(parents=True)
    (doc / "changelog.Debian.gz").write_bytes(gzip.compress(PACKAGE_CHANGELOG.encode(), mtime=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(path)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def package_cache(tmp_path: Path) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb (sudo apt-get install dpkg)")
    cache = tmp_path / "cache"
    for version, text in (("6.1.170-3", WALK_OLD), ("6.1.192-3", WALK_NEW)):
        make_deb(cache / "dl" / f"linux-source-6.1_{version}_all.deb", version, text, tmp_path)
    return cache


def test_build_from_packages_then_score_from_the_command_line(
    package_cache: Path, tmp_path: Path
) -> None:
    progress = io.StringIO()
    target = stable.build(package_cache, Progress(progress))
    assert target == package_cache.resolve() / "stable-6.1"
    steps = progress.getvalue()
    assert "using " in steps and "apt-get" not in steps  # the cached packages, no download
    assert "committing 6.1.170-3" in steps and "4 units (3 with a reverse patch)" in steps
    assert (
        git(target, "log", "--format=%s", "v6.1.170..v6.1.192")
        == "Debian linux-source-6.1 6.1.192-3\n"
    )
    assert git(target, "ls-files").split() == [
        "Makefile",
        "include/linux/mm.h",
        "mm/demo_walk.c",
        "mm/memory.c",
    ]
    assert git(target, "status", "--porcelain") == ""
    assert [e["subject"] for e in load_index(target)["changelog"]] == [
        "mm/demo_walk: check the page table"
    ]
    assert not [p for p in package_cache.iterdir() if p.name.startswith(".stable-6.1.tmp")]

    # Built once: the second call only finds it.
    again = io.StringIO()
    assert stable.build(package_cache, Progress(again)) == target
    assert "is built" in again.getvalue() and "unpacking" not in again.getvalue()

    # Deterministic: another cache with the same packages, the same commits.
    other = tmp_path / "other"
    shutil.copytree(package_cache / "dl", other / "dl")
    rebuilt = stable.build(other, Progress(io.StringIO()))
    assert git(rebuilt, "rev-parse", "v6.1.170", "v6.1.192") == git(
        target, "rev-parse", "v6.1.170", "v6.1.192"
    )

    labels = manifest(tmp_path, WALK_MANIFEST)
    result = mmreview(
        "corpus",
        "stable",
        "score",
        "--cache",
        str(package_cache),
        "--manifest",
        str(labels),
        "-f",
        "json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == "mm-review/stable"
    assert data["classes"]["null-deref"]["caught_by_any_rule"] == 1
    # The tree says 6.1: demo_young()'s plain *pte is how 6.1 read PTEs
    # (ptep_get() came in v6.5), so its forward patch is not flagged.
    assert data["total"]["forward_flagged"] == 0
    assert b"mmreview: stable: reviewing 4 units with" in result.stderr

    selected = mmreview(
        "corpus",
        "stable",
        "score",
        "--cache",
        str(package_cache),
        "--manifest",
        str(labels),
        "--select",
        "PTE_OFFSET_MAP_UNCHECKED",
    )
    assert (
        selected.returncode == 0
        and b"forward patches flagged 0/4 (0%); reverse patches caught 1/3" in selected.stdout
    )


def test_a_directory_the_build_did_not_make_is_left_alone(package_cache: Path) -> None:
    (package_cache / "stable-6.1").mkdir()
    (package_cache / "stable-6.1" / "mine.txt").write_text("keep me")
    with pytest.raises(
        InputError, match="exists but was not made by 'mmreview corpus stable build'"
    ):
        stable.build(package_cache, Progress(io.StringIO()))
    assert (package_cache / "stable-6.1" / "mine.txt").read_text() == "keep me"


def test_a_damaged_package_is_one_line(package_cache: Path) -> None:
    deb = package_cache / "dl" / "linux-source-6.1_6.1.192-3_all.deb"
    deb.write_bytes(deb.read_bytes()[: deb.stat().st_size // 2])
    result = mmreview("corpus", "stable", "build", "--cache", str(package_cache))
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith(
        "mmreview: error: linux-source-6.1_6.1.192-3_all.deb: "
    )
    assert b"Traceback" not in result.stderr
    assert not (package_cache / "stable-6.1").exists()
    assert not [p for p in package_cache.iterdir() if p.name.startswith(".stable-6.1.tmp")]


def test_usage_and_setup_errors_exit_2_in_one_line(tmp_path: Path) -> None:
    # No apt-get on PATH (git only) and no package in the cache.
    env_path = tmp_path / "bin"
    env_path.mkdir()
    (env_path / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    result = subprocess.run(
        [*stable_cli(), "build", "--cache", str(tmp_path / "cache")],
        env={**os.environ, "PATH": str(env_path), "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1] == (
        "mmreview: error: cannot download linux-source-6.1=6.1.170-3: apt-get is not available"
    )
    empty = mmreview("corpus", "stable", "score", "--cache", str(tmp_path / "empty"))
    assert empty.returncode == 2
    assert empty.stderr.decode().strip() == (
        f"mmreview: error: {tmp_path / 'empty' / 'stable-6.1'}: no units/index.json;"
        " run 'mmreview corpus stable build' first"
    )
    bad_format = mmreview("corpus", "stable", "score", "--cache", str(tmp_path), "-f", "xml")
    assert bad_format.returncode == 2 and b"--format xml: unknown format" in bad_format.stderr
    bad_rule = mmreview("corpus", "stable", "score", "--cache", str(tmp_path), "--select", "NOPE")
    assert bad_rule.returncode == 2 and b"unknown rule 'NOPE'" in bad_rule.stderr


def stable_cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "analyzer.cli", "corpus", "stable"]


def test_the_committed_manifest_is_valid() -> None:
    entries = load_manifest(stable.DEFAULT_MANIFEST)
    assert len(entries) == len({e.id for e in entries})
    assert {e.klass for e in entries} <= set(stable.CLASSES)
    for rules in stable.CLASS_RULES.values():
        assert {r.id for r in select_rules(list(rules))} == set(rules)
