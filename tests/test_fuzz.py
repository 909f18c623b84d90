"""Property tests: hostile variants of real patch shapes, through the reader,
the engine and every reporter, in-process.

Whatever the input, nothing escapes but InputError (one line per problem,
naming the input), every error and note the review makes is one line, every
format renders the whole review, and a case ends in bounded time.  The
patches are generated (files, hunks, kernel-ish lines, headers, MIME
wrapping, mbox series) or taken from seeds (hand-written kernel-style ones
and `git format-patch` / `git diff` output of real git), then corrupted
(tests/fuzzing.py names each way).

The "ci" Hypothesis profile (tests/conftest.py: derandomized, no example
database) runs a fixed slice in about a minute; `HYPOTHESIS_PROFILE=fuzz`
runs many more examples with fresh randomness.
"""

from __future__ import annotations

import gzip
import json
import random
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.engine import Review, review
from analyzer.patches import InputError, read_series
from analyzer.registry import all_rules
from analyzer.reporters import FORMATS, render_report
from analyzer.tree import KernelTree
from tests.conftest import Tree, build_minitree
from tests.fuzzing import BIG, CATEGORIES, kernel_style_seeds, mime_mail, mutate

# An exception "ignored" in a finalizer or a gc callback (the budget's timer
# firing there) is a traceback on stderr: fail on it.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

RULES = list(all_rules())
# A case is one input read, reviewed and rendered eight times: its patches
# get this budget each, and the whole case must end well within CASE_SECONDS.
PATCH_SECONDS = 3.0
CASE_SECONDS = 30.0
SMALL = [c for c in CATEGORIES if c not in BIG]


@pytest.fixture(scope="module")
def git_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tree, dict[str, bytes]]:
    """format-patch output (a series with cover letter and base, one patch
    alone) and git diff output, made with real git on the mini tree."""
    tree = build_minitree(tmp_path_factory.mktemp("fuzz"))
    tree.edit("mm/fault.c", "\tif (pmd_none(_pmd))", "\tif (!pmd_present(_pmd))")
    tree.commit("mm/demo: treat a non-present PMD as empty")
    tree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    tree.commit("mm/demo: drop the uffd-wp re-check")
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint nr_present = 0;")
    tree.commit("mm/demo: rename the counter", 'Fixes: 0123456789ab ("mm/demo: x")')
    seeds = {
        "git-series": tree.format_patch("--cover-letter", "-v2", "--base=HEAD~3", "--thread", "-3"),
        "git-patch": tree.format_patch("--base=HEAD~1", "-1"),
        "git-diff": tree.git("diff", "HEAD~3", "HEAD").encode(),
    }
    tree.git("reset", "-q", "--hard", "HEAD~3")
    return tree, seeds


def check(data: bytes, tree: KernelTree | None = None) -> Review | None:
    """The properties, for one input; the review when there was one."""
    started = time.monotonic()
    try:
        series = read_series(["-"], stdin=data)
    except InputError as err:
        assert err.lines and all(one_line(line) and "<stdin>" in line for line in err.lines)
        return None
    result = review(series, RULES, tree=tree, patch_seconds=PATCH_SECONDS)
    assert all(one_line(line) for line in result.errors + result.notes), result.errors
    assert all("<stdin>" in line or line.startswith("patch ") for line in result.errors), (
        result.errors
    )
    # A rule that fails says so in a note; on any input that is a bug.
    assert not [n for n in result.notes if " failed (" in n], result.notes
    errors_before = list(result.errors)
    for name in FORMATS:
        options = {"sender": "mm-review <mm-review@localhost>"} if name == "email" else {}
        text = render_report(result, name, **options)
        # Nothing left out of any report (a reporter failing on a patch would be).
        assert result.errors == errors_before, (name, result.errors)
        if name in ("json", "sarif", "b4-review"):
            json.loads(text)
        elif name == "rdjsonl":
            [json.loads(line) for line in text.splitlines()]
        elif name == "html":
            assert text.rstrip().endswith("</body></html>")
    assert time.monotonic() - started < CASE_SECONDS
    return result


def one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text and "\r" not in text


# -- generated patches -------------------------------------------------------

PATHS = st.sampled_from(
    [
        "mm/memory.c",
        "mm/khugepaged.c",
        "mm/fault.c",
        "include/linux/pgtable.h",
        "Documentation/mm/x.rst",
        "mm/caf\u00e9.c",
        "mm/with space.c",
        "../../etc/passwd",
        "/etc/shadow",
        "mm/\u0000nul.c",
        "",
    ]
)
KERNEL_LINES = st.sampled_from(
    [
        "\tif (pmd_none(*pmd))",
        "\tif (!pmd_present(pmdval))",
        "\t\treturn 0;",
        "\tpte = pte_offset_map_lock(mm, pmd, addr, &ptl);",
        "\tspin_lock(ptl);",
        "\tVM_BUG_ON(!pmd_present(*pmd));",
        "\tif (unlikely(vma->anon_vma || userfaultfd_wp(vma))) {",
        "\t}",
        "{",
        "}",
        "static int demo(struct vm_area_struct *vma, pmd_t *pmd)",
        "#ifdef CONFIG_TRANSPARENT_HUGEPAGE",
        "#endif",
        "\tlist_for_each_entry(page, &list, lru) {",
        "/* caf\u00e9 */",
        "",
        "\t\\",
    ]
)


@st.composite
def hunks(draw: st.DrawFn) -> str:
    lines = draw(
        st.lists(
            st.tuples(
                st.sampled_from([" ", "+", "-", "", "\\ No newline at end of file\n"]), KERNEL_LINES
            ),
            min_size=1,
            max_size=30,
        )
    )
    body = "".join(kind if kind.startswith("\\") else f"{kind}{text}\n" for kind, text in lines)
    old = sum(1 for kind, _ in lines if kind in (" ", "-"))
    new = sum(1 for kind, _ in lines if kind in (" ", "+"))
    if draw(st.booleans()):  # the header's counts right, or anything
        old, new = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
    start = draw(st.integers(0, 9000))
    header = draw(st.sampled_from(["", " static int demo(void)", " demo_walk_pmd(struct"]))
    return f"@@ -{start},{old} +{start},{new} @@{header}\n{body}"


@st.composite
def diffs(draw: st.DrawFn) -> str:
    files = []
    for _ in range(draw(st.integers(1, 4))):
        path = draw(PATHS)
        kind = draw(st.sampled_from(["modify", "new", "delete", "rename", "binary"]))
        head = f"diff --git a/{path} b/{path}\n"
        if kind == "new":
            head += "new file mode 100644\nindex 0000000..1111111\n--- /dev/null\n"
            head += f"+++ b/{path}\n"
        elif kind == "delete":
            head += (
                f"deleted file mode 100644\nindex 1111111..0000000\n--- a/{path}\n+++ /dev/null\n"
            )
        elif kind == "rename":
            head = (
                f"diff --git a/{path} b/{path}.new\nsimilarity index 80%\n"
                f"rename from {path}\nrename to {path}.new\n--- a/{path}\n+++ b/{path}.new\n"
            )
        elif kind == "binary":
            files.append(head + f"Binary files a/{path} and b/{path} differ\n")
            continue
        else:
            head += f"index 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n"
        files.append(head + "".join(draw(st.lists(hunks(), min_size=1, max_size=3))))
    return "".join(files)


SUBJECTS = st.sampled_from(
    [
        "[PATCH] mm/demo: x",
        "[PATCH v2 1/3] mm/demo: one",
        "[PATCH v2 0/3] mm/demo: cover",
        "[PATCH 9999/3] mm/demo: odd",
        "[RFC PATCH mm-unstable 02/12] mm: y",
        "Re: [PATCH 1/2] mm: reply",
        "=?utf-8?q?=5BPATCH=5D_mm=3A_caf=C3=A9?=",
        "=?x-unknown?b?////?=",
        "(" * 300 + "x",
        "",
    ]
)


@st.composite
def mails(draw: st.DrawFn) -> bytes:
    diff = draw(diffs())
    shape = draw(st.sampled_from(["plain", "mail", "mbox", "mime", "gzip"]))
    if shape == "plain":
        return diff.encode("utf-8", "surrogatepass")
    if shape == "mime":
        return mime_mail(diff, draw(st.randoms(use_true_random=False)))
    subjects = draw(st.lists(SUBJECTS, min_size=1, max_size=5 if shape != "mail" else 1))
    messages = []
    for number, subject in enumerate(subjects, 1):
        message = EmailMessage()
        message["From"] = draw(
            st.sampled_from(
                ["Jane Dev <jane@example.com>", "", "((((((((((x", "=?utf-8?b?SsO2cmc=?= <j@x>"]
            )
        )
        message["Subject"] = subject
        message["Message-ID"] = f"<{number}@example.com>"
        message.set_content(f"Body {number}\n\nSigned-off-by: Jane\n---\n{diff}")
        messages.append(message.as_bytes(policy=SMTP).replace(b"\r\n", b"\n"))
    if shape == "mail":
        return messages[0]
    data = b"".join(b"From mboxrd@z Thu Jan  1 00:00:00 1970\n" + m + b"\n" for m in messages)
    return gzip.compress(data) if shape == "gzip" else data


# -- the properties ----------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mails(), st.lists(st.sampled_from(SMALL), max_size=2), st.randoms(use_true_random=False))
def test_generated_inputs(data: bytes, categories: list[str], rng: random.Random) -> None:
    for category in categories:
        data = mutate(data, category, rng)
    check(data)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(sorted(kernel_style_seeds())),
    st.sampled_from(SMALL),
    st.randoms(use_true_random=False),
)
def test_kernel_style_seeds_corrupted(name: str, category: str, rng: random.Random) -> None:
    check(mutate(kernel_style_seeds()[name], category, rng))


@settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.sampled_from(["git-series", "git-patch", "git-diff"]),
    st.sampled_from(SMALL),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_git_output_corrupted_with_and_without_the_tree(
    git_seeds: tuple[Tree, dict[str, bytes]],
    name: str,
    category: str,
    with_tree: bool,
    rng: random.Random,
) -> None:
    tree, seeds = git_seeds
    kernel = KernelTree(str(tree.path)) if with_tree else None
    try:
        check(mutate(seeds[name], category, rng), kernel)
    finally:
        if kernel is not None:
            kernel.repo.close()


@pytest.mark.parametrize("category", sorted(BIG))
def test_big_inputs_end_in_bounded_time(
    git_seeds: tuple[Tree, dict[str, bytes]], category: str
) -> None:
    """The sizes the issue named: 1 MB lines, 50k-line hunks, 2,000 files,
    200-deep MIME, 500 messages; each reviewed or refused in one line."""
    _, seeds = git_seeds
    rng = random.Random(category)
    data = mutate(seeds["git-patch"], category, rng)
    while not _biggest(category, data):
        data = mutate(seeds["git-patch"], category, rng)
    started = time.monotonic()
    result = check(data)
    assert time.monotonic() - started < CASE_SECONDS
    if category == "many_messages":
        assert result is not None and len(result.reviewed_patches) == 500


def _biggest(category: str, data: bytes) -> bool:
    """Is this the biggest size the category draws?"""
    if category == "long_line":
        return max(map(len, data.split(b"\n"))) >= 1 << 20
    if category == "big_hunk":
        return data.count(b"\n+") >= 50000
    if category == "deep_mime":
        return data.count(b"multipart/") >= 200
    return True


def test_the_clean_seeds_are_reviewed(git_seeds: tuple[Tree, dict[str, bytes]]) -> None:
    """The seeds themselves are good input: the properties are not met by
    refusing everything."""
    _, seeds = git_seeds
    for name, data in {**seeds, **kernel_style_seeds()}.items():
        result = check(data)
        assert result is not None and not result.errors, (name, result and result.errors)
        assert result.reviewed_patches, name


def test_the_minitree_is_untouched_by_a_fuzz_slice(
    git_seeds: tuple[Tree, dict[str, bytes]], tmp_path: Path
) -> None:
    tree, seeds = git_seeds
    before = (tree.git("status", "--porcelain"), tree.git("rev-parse", "HEAD"), _objects(tree))
    kernel = KernelTree(str(tree.path))
    rng = random.Random(7)
    for category in SMALL:
        check(mutate(seeds["git-series"], category, rng), kernel)
    kernel.repo.close()
    assert (
        tree.git("status", "--porcelain"),
        tree.git("rev-parse", "HEAD"),
        _objects(tree),
    ) == before


def _objects(tree: Tree) -> int:
    return sum(1 for p in (tree.path / ".git" / "objects").rglob("*") if p.is_file())
