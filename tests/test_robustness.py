"""Every bad input gets one clear line and loses nothing; work is bounded;
the rough edges a new user hit following the README.

End to end through `mmreview` (a subprocess) on real git output where the
behaviour is the command's; in-process where a failure has to be made on
purpose (a rule or a reporter that raises).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer import budget, parsing
from analyzer.bot.config import load as load_bot_config
from analyzer.bot.delivery import plan
from analyzer.bot.reviewer import Mail, Reviewer
from analyzer.engine import review
from analyzer.images import Image
from analyzer.patches import InputError, Limits, printable, read_series
from analyzer.registry import all_rules
from analyzer.reporters import html as html_report
from analyzer.reporters import render_report
from analyzer.rule import Finding, FunctionRule, PatchRef, Severity
from analyzer.tree import KernelTree
from tests.conftest import (
    FETCH_KERNEL_NO_APT,
    ROOT,
    Tree,
    kernel_tree_or_skip,
    mmreview,
    run_fetch_kernel,
)
from tests.test_cli import SWAP, series, swap_patch

EXAMPLES = ROOT / "corpus" / "examples"
EXAMPLE = EXAMPLES / "0002-mm-demo-treat-a-non-present-PMD-as-empty.patch"


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return result.stderr.decode().splitlines()


def assert_one_line_error(result: subprocess.CompletedProcess, *wanted: str) -> None:
    """Exit 2, exactly one line on stderr, saying all of `wanted`."""
    assert result.returncode == 2, result.stderr
    said = lines(result)
    assert len(said) == 1 and said[0].startswith("mmreview: error: "), said
    assert all(w in said[0] for w in wanted), said
    assert b"Traceback" not in result.stderr


# -- several inputs, one bad: the others are still reviewed ------------------


def test_a_missing_file_among_several_loses_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.patch"
    result = mmreview("check", str(EXAMPLE), str(missing), "-f", "json")
    assert result.returncode == 2
    assert lines(result) == [f"mmreview: error: {missing}: no such file or directory"]
    report = json.loads(result.stdout)
    assert [f["rule"] for f in report["findings"]] == ["PMD_PRESENT_AS_EMPTY"]
    assert report["errors"] == [f"{missing}: no such file or directory"]


def test_every_unreadable_input_is_named_on_its_own_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.patch"
    empty.write_bytes(b"")
    result = mmreview("check", str(tmp_path / "nope.patch"), str(empty), str(tmp_path))
    assert result.returncode == 2 and result.stdout == b""
    assert lines(result) == [
        f"mmreview: error: {tmp_path}/nope.patch: no such file or directory",
        f"mmreview: error: {empty}: empty input, expected a patch or mbox",
        f"mmreview: error: {tmp_path}: is a directory, expected a patch or mbox file",
    ]


def test_inputs_that_are_not_patches(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(4096).replace(b"diff --git", b"x"))
    assert_one_line_error(mmreview("check", str(garbage)), str(garbage))
    assert_one_line_error(mmreview("check", "/dev/null"), "/dev/null: empty input")
    prose = tmp_path / "notes.txt"
    prose.write_text("Just some notes about the mm series.\n")
    assert_one_line_error(mmreview("check", str(prose)), "notes.txt: not a patch, mbox or diff")
    assert_one_line_error(mmreview("check", str(tmp_path)), "is a directory")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{EXAMPLE}' > '{fifo}'"])
    through_fifo = mmreview("check", str(fifo), "-f", "checkpatch")
    writer.wait(timeout=30)
    assert through_fifo.returncode == 1 and b"PMD_PRESENT_AS_EMPTY" in through_fifo.stdout
    assert_one_line_error(mmreview("check", "-", input=b""), "<stdin>: empty input")


def test_a_bad_patch_in_a_series_is_named_and_the_others_reviewed(minitree: Tree) -> None:
    mbox = series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    # Patch 1/3 gets a path leaving the tree, patch 3/3 a NUL in its path.
    first = mbox.index(b"[PATCH v2 1/3]")
    second = mbox.index(b"[PATCH v2 2/3]")
    third = mbox.index(b"[PATCH v2 3/3]")
    broken = (
        mbox[:first]
        + mbox[first:second].replace(b"a/mm/fault.c", b"a/../../etc/passwd")
        + mbox[second:third]
        + mbox[third:].replace(b"b/mm/khugepaged.c", b"b/mm/khuge\0paged.c")
    )
    result = mmreview("check", "-", "--tree", str(minitree.path), "-f", "json", input=broken)
    assert result.returncode == 2
    said = lines(result)
    assert len(said) == 2 and all(
        line.startswith("mmreview: error: <stdin> (message") for line in said
    )
    assert "refusing diff path '../../etc/passwd': path leaves the tree" in said[0]
    assert "control character or NUL in the path" in said[1]
    report = json.loads(result.stdout)
    assert [(f["rule"], f["patch"]["index"]) for f in report["findings"]] == [
        ("PMD_PRESENT_AS_EMPTY", 2)
    ]


# -- command line --------------------------------------------------------------


def test_base_needs_tree_like_range() -> None:
    assert_one_line_error(mmreview("check", str(EXAMPLE), "--base", "HEAD"), "--base needs --tree")
    assert_one_line_error(mmreview("check", "--range", "A..B"), "--range needs --tree")


def test_a_bad_range_is_one_line_of_our_own(minitree: Tree) -> None:
    for spec, wanted in [
        ("nosuch..HEAD", "--range nosuch..HEAD: no revision 'nosuch' in"),
        ("HEAD..nosuch", "--range HEAD..nosuch: no revision 'nosuch' in"),
        ("HEAD", "--range HEAD: expected A..B"),
        ("HEAD..HEAD", "--range HEAD..HEAD: no commits in range"),
        ("--output=x..HEAD", "'--output=x' is not a revision"),
    ]:
        result = mmreview("check", "--tree", str(minitree.path), f"--range={spec}")
        assert_one_line_error(result, wanted)
        said = lines(result)[0]
        assert "Use '--'" not in said and "hint:" not in said and not said.endswith(("-", "<"))
    assert (minitree.path / "x..HEAD").exists() is False


def test_formats_are_case_insensitive() -> None:
    for name in ("JSON", "Json", "CHECKPATCH", "Html"):
        result = mmreview("check", str(EXAMPLE), "-f", name)
        assert result.returncode == 1, (name, result.stderr)
    assert json.loads(mmreview("check", str(EXAMPLE), "-f", "JSON").stdout)["schema"]
    assert_one_line_error(mmreview("check", str(EXAMPLE), "-f", "xml"), "--format xml: unknown")


def test_summary_plurals() -> None:
    out = mmreview("check", str(EXAMPLES / "demo-cleanups-v2.mbox")).stdout.decode()
    assert out.splitlines()[-1] == "1 error, 1 warning, 0 checks in 3 patches"
    one = mmreview("check", str(EXAMPLE)).stdout.decode().splitlines()[-1]
    assert one == "0 errors, 1 warning, 0 checks in 1 patch"


def test_tree_that_is_not_a_repository_or_is_bare(tmp_path: Path, minitree: Tree) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert_one_line_error(
        mmreview("check", str(EXAMPLE), "--tree", str(plain)), "not a git repository"
    )
    empty_bare = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", str(empty_bare)], check=True)
    assert_one_line_error(
        mmreview("check", str(EXAMPLE), "--tree", str(empty_bare)), "has no commits"
    )
    bare = tmp_path / "linux.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(minitree.path), str(bare)], check=True)
    result = mmreview(
        "check", str(EXAMPLES / "demo-cleanups-v2.mbox"), "--tree", str(bare), "-f", "json"
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert {f["confidence"] for f in report["findings"]} == {"HIGH"}


# -- the README's quick start with a tree ---------------------------------------


def test_demo_tree_gives_the_shipped_examples_a_tree(tmp_path: Path) -> None:
    made = subprocess.run(
        [str(ROOT / "corpus" / "demo-tree"), str(tmp_path / "demo")],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    demo = Path(made.stdout.strip())
    result = mmreview("check", str(EXAMPLES / "demo-cleanups-v2.mbox"), "--tree", str(demo))
    out = result.stdout.decode()
    assert result.returncode == 1 and result.stderr == b"", result.stderr
    assert "confidence: high" in out and "confidence: low" not in out
    assert "1 error, 1 warning, 0 checks in 3 patches (base: HEAD" in out
    # The same files, always the same commit.
    again = subprocess.run(
        [str(ROOT / "corpus" / "demo-tree"), str(tmp_path / "again")],
        capture_output=True,
        text=True,
    )
    head = ["git", "-C", "{}", "rev-parse", "HEAD"]
    ids = {
        subprocess.run([a.format(p) for a in head], capture_output=True, text=True).stdout
        for p in (demo, again.stdout.strip())
    }
    assert len(ids) == 1
    refused = subprocess.run(
        [str(ROOT / "corpus" / "demo-tree"), str(demo)], capture_output=True, text=True
    )
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1


# -- reports: whole or not at all -------------------------------------------------


def test_format_patch_base_to_html_writes_a_full_report(minitree: Tree, tmp_path: Path) -> None:
    minitree.edit("mm/fault.c", *SWAP)
    minitree.commit("mm/demo: treat a non-present PMD as empty")
    patch = minitree.format_patch("--base=HEAD~1", "-1")
    assert b"\n\nbase-commit: " in patch  # the blank line that made '' a line type
    out = tmp_path / "r.html"
    result = mmreview("check", "-", "-f", "html", "-o", str(out), input=patch)
    assert result.returncode == 1 and result.stderr == b"", result.stderr
    page = out.read_text()
    assert page.rstrip().endswith("</body></html>")
    assert 'data-rule="PMD_PRESENT_AS_EMPTY"' in page


def test_output_is_atomic(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text("the previous report\n")
    failed = mmreview("check", str(tmp_path / "missing.patch"), "-f", "json", "-o", str(report))
    assert failed.returncode == 2
    assert report.read_text() == "the previous report\n"
    written = mmreview("check", str(EXAMPLE), "-f", "json", "-o", str(report))
    assert written.returncode == 1 and json.loads(report.read_text())["findings"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    nowhere = mmreview("check", str(EXAMPLE), "-o", str(tmp_path / "no" / "such" / "dir.txt"))
    assert_one_line_error(nowhere, "--output", "no such file or directory")
    assert_one_line_error(mmreview("check", str(EXAMPLE), "-o", str(tmp_path)), "is a directory")


def test_a_reporter_failing_on_one_patch_leaves_only_that_patch_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = review(read_series([str(EXAMPLES / "demo-cleanups-v2.mbox")]), all_rules())
    original = html_report._patch_section

    def fails_on_patch_3(patch, findings):  # the shape of the '' KeyError bug
        if patch.index == 3:
            raise KeyError("")
        return original(patch, findings)

    monkeypatch.setattr(html_report, "_patch_section", fails_on_patch_3)
    page = render_report(result, "html")
    assert 'id="patch-2"' in page and 'id="patch-3"' not in page
    assert 'data-rule="PMD_PRESENT_AS_EMPTY"' in page
    assert result.errors == [
        'patch 3/3 ("mm/demo: drop the redundant uffd-wp re-check in demo_retract_one()"):'
        " the html report cannot show it (KeyError: ''); left out of the report"
    ]


def test_html_links_references_and_keeps_outside_findings_apart() -> None:
    result = review(read_series([str(EXAMPLE)]), all_rules())
    flagged = result.findings[0]
    # A finding on a line no hunk shows (a rule may point at one).
    outside = Finding(
        path="mm/fault.c",
        line=70,
        column=2,
        rule="PMD_PRESENT_AS_EMPTY",
        severity=Severity.WARNING,
        message="also see commit a365ac09d334 and https://lore.kernel.org/r/x@y",
        function="demo_other",
        source_line="\tif (!pmd_present(*pmd))",
        patch=PatchRef(2, 3, flagged.patch.subject if flagged.patch else ""),
    )
    result.findings.append(outside)
    page = render_report(result, "html")
    assert '<a href="https://git.kernel.org/torvalds/c/a365ac09d334">a365ac09d334</a>' in page
    assert '<a href="https://lore.kernel.org/r/x@y">https://lore.kernel.org/r/x@y</a>' in page
    assert (
        '<a href="https://lore.kernel.org/all/20171103075231.25416-1-ying.huang@intel.com/">'
        in page
    )
    diff_table, _, rest = page.partition('<h4 class="outside">mm/fault.c: outside the patch')
    assert rest, "no block for findings outside the hunks"
    # The outside finding is in its own table, after the diff's.
    assert "demo_other" not in diff_table and "demo_other" in rest
    assert 'data-line="34"' in diff_table


# -- a rule that fails: a note naming the rule and the patch ------------------


class _Exploding(FunctionRule):
    id = "EXPLODING"
    severity = Severity.ERROR
    summary = "raises on every function"

    def check(self, change):  # type: ignore[override]
        raise ZeroDivisionError("division by zero")
        yield


def test_a_rule_that_fails_is_one_note(capsys: pytest.CaptureFixture[str]) -> None:
    rules = [*all_rules(), _Exploding()]
    result = review(read_series([str(EXAMPLES / "demo-cleanups-v2.mbox")]), rules)
    notes = [n for n in result.notes if "EXPLODING" in n]
    assert notes == [
        f'patch {n}/3 ("{t}"): rule EXPLODING failed (ZeroDivisionError: division by zero);'
        " its findings on this patch may be missing (--debug shows the traceback)"
        for n, t in [
            (1, "mm/demo: rename the counter in demo_count_present()"),
            (2, "mm/demo: treat a non-present PMD as empty in demo_must_wait()"),
            (3, "mm/demo: drop the redundant uffd-wp re-check in demo_retract_one()"),
        ]
    ]
    # The other rules' findings are all there.
    assert {f.rule for f in result.findings} == {
        "PMD_PRESENT_AS_EMPTY",
        "COLLAPSE_WITHOUT_UFFD_CHECK",
    }
    assert "Traceback" not in capsys.readouterr().err


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("MMREVIEW_DEBUG", "1")
    review(read_series([str(EXAMPLE)]), [*all_rules(), _Exploding()])
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: division by zero" in err


def test_an_internal_error_is_one_line_and_debug_shows_it(tmp_path: Path) -> None:
    # A real bug made on purpose: the HTML reporter's module replaced by one
    # that cannot render anything (via PYTHONPATH, the CLI itself untouched).
    shadow = tmp_path / "shadow" / "analyzer" / "reporters"
    shadow.mkdir(parents=True)
    program = (
        "import sys, runpy\n"
        "import analyzer.reporters.html as h\n"
        "def broken(review, out): raise RuntimeError('renderer broke')\n"
        "h.render = broken\n"
        "sys.argv[0] = 'mmreview'\n"
        "runpy.run_module('analyzer.cli', run_name='__main__')\n"
    )
    for debug in ([], ["--debug"]):
        result = subprocess.run(
            [sys.executable, "-c", program, "check", str(EXAMPLE), "-f", "html", *debug],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
        )
        assert result.returncode == 2 and result.stdout == b""
        said = lines(result)
        assert said[-1] == (
            "mmreview: error: --format html: internal error (RuntimeError: renderer broke);"
            " no report written" + ("" if debug else " (--debug shows the traceback)")
        )
        assert ("Traceback" in result.stderr.decode()) == bool(debug)


# -- bounded work ---------------------------------------------------------------


def test_limits_each_say_what_and_how_much() -> None:
    small = Limits(
        input_bytes=4000,
        messages=2,
        files_per_patch=1,
        hunk_lines=3,
        line_bytes=80,
        mime_multiparts=2,
    )
    two_files = (
        "diff --git a/mm/a.c b/mm/a.c\n--- a/mm/a.c\n+++ b/mm/a.c\n@@ -1 +1 @@\n-a\n+b\n"
        "diff --git a/mm/b.c b/mm/b.c\n--- a/mm/b.c\n+++ b/mm/b.c\n@@ -1 +1 @@\n-a\n+b\n"
    )
    cases = {
        "x" * 5000 + "\ndiff --git a/a b/a\n": "larger than 4 KiB (the input size limit)",
        two_files: "touches 2 files, more than the limit of 1",
        two_files.split("diff --git a/mm/b.c")[0]
        .replace("-a\n+b\n", "-a\n-b\n-c\n+d\n+e\n+f\n")
        .replace("@@ -1 +1 @@", "@@ -1,3 +1,3 @@"): "a hunk of 6 lines, more than the limit of 3",
        two_files.replace("@@ -1 +1 @@", "@@ -1 +1,4 @@", 1): "a hunk header claims 4 lines",
        two_files.replace("+b\n", "+" + "b" * 100 + "\n", 1): (
            "a line of 101 bytes, longer than the limit of 80 bytes"
        ),
        "diff --git a/a b/a\n@@ -1,99 +1,99 @@\n": "a hunk header claims 99 lines",
    }
    for text, wanted in cases.items():
        try:
            found = read_series(["-"], stdin=text.encode(), limits=small)
        except InputError as err:
            said = str(err)
        else:
            said = found.patches[0].error or ""
        assert wanted in said, (wanted, said)
    mbox = b"".join(
        b"From x Mon Sep 17 00:00:00 2001\nSubject: [PATCH] %d\n\n" % n for n in range(3)
    )
    with pytest.raises(InputError, match="3 messages, more than the limit of 2"):
        read_series(["-"], stdin=mbox, limits=small)
    nested = (
        b"From: a@b\nSubject: [PATCH] x\nMIME-Version: 1.0\n"
        + b'Content-Type: multipart/mixed; boundary="a"\n\n--a\n' * 3
    )
    only = read_series(["-"], stdin=nested, limits=small).patches[0]
    assert (
        only.error == "<stdin>: MIME structure too deep or too large (3 multipart parts, limit 2)"
    )


def test_a_gzip_bomb_is_not_unpacked() -> None:
    bomb = gzip.compress(b"diff --git a/a b/a\n" + b"\0" * (64 << 20))
    started = time.monotonic()
    with pytest.raises(InputError, match="unpacks to more than 8 MiB"):
        read_series(["-"], stdin=bomb)
    assert time.monotonic() - started < 10


def test_a_slow_patch_costs_its_budget_and_the_series_goes_on() -> None:
    # Twenty long functions, each under MAX_FUNCTION_LINES.
    functions = "".join(
        f"+static int demo_walk{f}(pmd_t *pmd)\n+{{\n"
        + "".join(f"+\tif (pmd_none(*pmd{n % 7}))\n+\t\treturn {n};\n" for n in range(1400))
        + "+\treturn 0;\n+}\n"
        for f in range(20)
    )
    huge = (
        "diff --git a/mm/demo.c b/mm/demo.c\n--- a/mm/demo.c\n+++ b/mm/demo.c\n"
        f"@@ -10,0 +11,{functions.count(chr(10))} @@\n{functions}"
    )
    mbox = (
        f"From x Mon Sep 17 00:00:00 2001\nSubject: [PATCH 1/2] mm/demo: huge\n\n---\n{huge}\n"
        + "From y Mon Sep 17 00:00:00 2001\nSubject: [PATCH 2/2] mm/demo: swap\n\n"
        + EXAMPLE.read_text().split("\n\n", 1)[1]
    )
    started = time.monotonic()
    result = review(read_series(["-"], stdin=mbox.encode()), all_rules(), patch_seconds=1.0)
    took = time.monotonic() - started
    assert result.errors == [
        'patch 1/2 ("mm/demo: huge"): not fully reviewed: it took longer than its time budget'
        " of 1 s; findings so far are reported"
    ]
    assert result.unfinished == {1: "it took longer than its time budget of 1 s"}
    assert [(f.rule, f.patch and f.patch.index) for f in result.findings] == [
        ("PMD_PRESENT_AS_EMPTY", 2)
    ]
    assert took < 6, took


def test_reading_a_diff_spends_the_patch_budget() -> None:
    many = "".join(
        f"diff --git a/mm/f{n}.c b/mm/f{n}.c\n--- a/mm/f{n}.c\n+++ b/mm/f{n}.c\n"
        "@@ -1,3 +1,3 @@\n a\n-b\n+c\n d\n"
        for n in range(20000)
    )
    slow = read_series(["-"], stdin=many.encode(), limits=Limits(seconds_per_patch=0.05))
    assert slow.patches[0].error == (
        "<stdin>: not reviewed: reading its diff took longer than the time budget of 0.05 s"
    )
    whole = read_series(["-"], stdin=many.encode())
    assert len(whole.patches[0].files) == 20000 and whole.patches[0].read_seconds > 0


def test_the_bot_keeps_the_budget_and_says_so_in_its_check(minitree: Tree, tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(
        f'state = "{tmp_path}/state.sqlite3"\noutbox = "{tmp_path}/outbox"\n'
        f'[tree]\npath = "{minitree.path}"\n[[archive]]\npath = "{tmp_path}/inbox"\n'
        '[policy]\nfrom = "bot <bot@example.org>"\n'
        '[patchwork]\nurl = "http://127.0.0.1:9"\nproject = "linux-mm"\n'
        "[limits]\nseconds_per_patch = 0.000001\n"
    )
    bot = load_bot_config(config)
    assert bot.limits.seconds_per_patch == 0.000001
    mail = swap_patch(minitree).replace(b"\nFrom: ", b"\nMessage-ID: <1@example.com>\nFrom: ", 1)
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    # The budget runs out while the mail's diff is read: not reviewed.
    result = Reviewer(bot).review([Mail("<1@example.com>", mail)])
    assert "reading its diff took longer than the time budget" in result.errors[0]
    checks = [
        json.loads(o.payload) for o in plan(result, "key", bot, lambda r: []) if o.kind == "check"
    ]
    assert [c["state"] for c in checks] == ["warning"]
    assert checks[0]["description"].startswith("not reviewed: ")
    # It runs out while the patch is reviewed: not fully reviewed.
    series_read = read_series(["-"], stdin=mail)
    result = review(
        series_read, all_rules(), tree=KernelTree(str(minitree.path)), patch_seconds=1e-6
    )
    assert list(result.unfinished) == [1] and "not fully reviewed" in result.errors[0]
    checks = [
        json.loads(o.payload) for o in plan(result, "key", bot, lambda r: []) if o.kind == "check"
    ]
    assert [c["state"] for c in checks] == ["warning"]
    assert checks[0]["description"].startswith("not fully reviewed: it took longer")


def test_function_at_is_an_interval_lookup() -> None:
    # Nested and overlapping definitions (recovered functions overlap) and
    # a thousand of them; every row answered as a scan of all would.
    source = "".join(f"static int f{n}(void)\n{{\n\treturn {n};\n}}\n\n" for n in range(1000))
    parsed = parsing.parse(Image.of(source.encode()))
    assert len(parsed.functions) == 1000

    def scanned(row: int):
        best = None
        for function in parsed.functions:
            if function.contains_row(row) and (
                best is None or function.start_row >= best.start_row
            ):
                best = function
        return best

    rows = range(source.count("\n") + 2)
    assert all(parsed.function_at(r) is scanned(r) for r in rows)
    started = time.monotonic()
    for _ in range(20):
        for row in rows:
            parsed.function_at(row)
    assert time.monotonic() - started < 2  # 100,000 lookups; the scan took minutes


def test_parse_cache_is_bounded_by_bytes() -> None:
    for n in range(60):
        parsing.parse(Image.of(b"int v%d;\n" % n + b"/* padding */\n" * 8000))
    assert parsing._cached_bytes <= parsing.CACHE_BYTES
    assert sum(len(p.image.text) for p in parsing._cache.values()) == parsing._cached_bytes
    big = Image.of(b"int big;\n" + b"\n" * (parsing.CACHE_BYTES + 1))
    parsing.parse(big)
    assert big.blob_id not in parsing._cache
    over = parsing.parse(Image.of(b"\n" * (parsing.MAX_PARSE_BYTES + 1)))
    assert (
        over.functions == [] and over.not_parsed == "4.0 MiB of text, over the 4.0 MiB parse limit"
    )


# -- with the real 6.12 tree ---------------------------------------------------------


def test_real_big_patches_pass_the_limits_and_memory_stays_bounded(
    kernel_tree: Path, tmp_path: Path
) -> None:
    """A 2,000-line change of mm/memory.c and a tree-wide patch of 2,002
    files are reviewed whole; a 500-patch mbox stays far under 500 MiB."""
    from bench.fuzz import big_real_patches, many_patch_mbox

    made = big_real_patches(kernel_tree, tmp_path)
    for name in ("memory-2000", "treewide-include"):
        series_read = read_series([str(made[name])])
        assert series_read.errors == [] and all(p.error is None for p in series_read.patches), name
        result = review(
            series_read, all_rules(), tree=KernelTree(str(kernel_tree)), patch_seconds=120
        )
        assert result.errors == [], (name, result.errors)
    mbox = many_patch_mbox(kernel_tree, tmp_path, 500)
    # Through GNU time: a child of pytest would inherit pytest's RSS as its
    # high-water mark.
    run = subprocess.run(
        [
            "/usr/bin/time",
            "-f",
            "%M",
            sys.executable,
            "-m",
            "analyzer.cli",
            "check",
            str(mbox),
            "--tree",
            str(kernel_tree),
            "-q",
            "-f",
            "json",
            "--time-budget",
            "0",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    assert run.returncode in (0, 1), run.stderr[-500:]
    peak_kib = int(re.findall(rb"^(\d+)$", run.stderr, re.M)[-1])
    report = json.loads(run.stdout)
    assert len(report["patches"]) == 500 and report["errors"] == []
    assert peak_kib < 500 * 1024, peak_kib


# -- the tree for the tests ----------------------------------------------------------


def test_fetch_kernel_skips_where_apt_cannot_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every tool fetch-kernel needs except apt-get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (
        "bash",
        "git",
        "tar",
        "xz",
        "dpkg-deb",
        "dpkg",
        "mktemp",
        "dirname",
        "ls",
        "mkdir",
        "rm",
        "cat",
        "grep",
        "sed",
        "awk",
        "head",
        "tail",
        "flock",
        "mv",
        "chmod",
        "stat",
        "find",
        "wc",
        "nproc",
        "dd",
        "basename",
        "env",
        "pwd",
    ):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    environ = {**os.environ, "PATH": str(bin_dir)}
    environ.pop("MMREVIEW_KERNEL_DEB", None)
    log = tmp_path / "progress.log"
    with open(log, "w") as terminal:
        code, _, stderr = run_fetch_kernel(environ, terminal, cache=tmp_path / "cache")
    assert code == FETCH_KERNEL_NO_APT
    assert stderr.strip().splitlines()[-1] == (
        "fetch-kernel: could not download linux-source-6.12:"
        " apt-get is not available (set MMREVIEW_KERNEL_DEB to a .deb)"
    )
    assert log.read_text() == stderr  # relayed as it came
    # Off CI the missing apt-get is a skip; kernel_tree_or_skip reads CI from
    # this process's environment, not the child's.
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="cannot be had here: fetch-kernel: could not"):
        kernel_tree_or_skip(code, "", stderr)
    with pytest.raises(pytest.fail.Exception, match="corpus/fetch-kernel failed"):
        kernel_tree_or_skip(1, "", "fetch-kernel: could not unpack x: disk full\n")


def test_fetch_kernel_progress_one_line_per_step(tmp_path: Path) -> None:
    """From a small .deb of the same shape (MMREVIEW_KERNEL_DEB), through
    every step: a line each when stderr is not a terminal, a rich bar each
    when asked for."""
    deb = fake_linux_source_deb(tmp_path)
    environ = {**os.environ, "MMREVIEW_KERNEL_DEB": str(deb)}
    with open(tmp_path / "lines.log", "w") as terminal:
        code, stdout, stderr = run_fetch_kernel(environ, terminal, cache=tmp_path / "c1")
    assert code == 0, stderr
    steps = [line for line in stderr.splitlines() if re.match(r"fetch-kernel: \[\d/4\]", line)]
    assert [s.split("]")[0] for s in steps] == [f"fetch-kernel: [{n}/4" for n in range(1, 5)]
    assert "about 2.2 GB" in steps[1] and "hashing 3 files" in steps[2]
    assert Path(stdout.strip()) == (tmp_path / "c1" / "linux-6.12").resolve()
    environ["MMREVIEW_PROGRESS"] = "bar"
    bar = subprocess.run(
        [str(ROOT / "corpus" / "fetch-kernel"), str(tmp_path / "c2")],
        env={**environ, "MMREVIEW_PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert bar.returncode == 0, bar.stderr
    assert "━" in bar.stderr and "[4/4] committing the tree" in bar.stderr
    assert not re.search(r"fetch-kernel: \[\d/4\]", bar.stderr)


def fake_linux_source_deb(root: Path) -> Path:
    source = root / "src" / "linux-source-6.12"
    for path, text in {
        "Makefile": "all:\n",
        "mm/memory.c": "int demo;\n",
        "include/linux/mm.h": "/* demo */\n",
    }.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(text)
    package = root / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "usr" / "src").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        "Package: linux-source-6.12\nVersion: 6.12.0-0test\nArchitecture: all\n"
        "Maintainer: Jane Dev <jane@example.com>\nDescription: a test package\n"
    )
    subprocess.run(
        [
            "tar",
            "-C",
            str(source.parent),
            "-cJf",
            str(package / "usr/src/linux-source-6.12.tar.xz"),
            "linux-source-6.12",
        ],
        check=True,
    )
    deb = root / "linux-source-6.12_6.12.0-0test_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(package), str(deb)], check=True, capture_output=True)
    return deb


def test_a_cancelled_parse_does_not_leak_into_the_next() -> None:
    """tree-sitter resumes a halted parse on the parser's next call unless
    it is reset: the next file would be read as the rest of the last."""
    source = "".join(f"static int g{n}(void)\n{{\n\treturn {n};\n}}\n\n" for n in range(200))
    with pytest.raises(budget.BudgetExceeded), budget.patch_budget(0.0):
        parsing.parse(Image.of(("/* cancelled */\n" + source).encode()))
    assert len(parsing.parse(Image.of(source.encode())).functions) == 200


def test_a_diff_decoded_in_a_wrong_charset_still_goes_to_git() -> None:
    """Escaped bytes go back as they were read; a surrogate no byte escapes
    to (a mail decoded as the wrong charset) is replaced, not a crash."""
    from analyzer.tree import _patch_bytes

    assert _patch_bytes("+\tx = 1;\udc80\n") == b"+\tx = 1;\x80\n"
    assert _patch_bytes("+\tx = 1;\udb7e\n") == b"+\tx = 1;?\n"


def test_a_function_too_long_to_follow_is_said_and_the_rest_reviewed() -> None:
    """Path states grow with a function's length (a 50,000-line one took
    700 MiB): past MAX_FUNCTION_LINES a function is named in a note, not
    reviewed, and the patch's other functions are."""
    from analyzer.engine import MAX_FUNCTION_LINES

    body = "".join(f"+\tif (pmd_none(*pmd))\n+\t\treturn {n};\n" for n in range(MAX_FUNCTION_LINES))
    long_function = f"+static int demo_long(pmd_t *pmd)\n+{{\n{body}+\treturn 0;\n+}}\n"
    added = long_function.count("\n")
    patch = (
        "diff --git a/mm/demo.c b/mm/demo.c\n"
        "--- a/mm/demo.c\n+++ b/mm/demo.c\n"
        "@@ -1,7 +1,7 @@ static bool demo_must_wait(pmd_t *pmdp)\n"
        " {\n \tpmd_t _pmd = pmdp_get_lockless(pmdp);\n \n"
        "-\tif (pmd_none(_pmd))\n+\tif (!pmd_present(_pmd))\n"
        " \t\treturn true;\n \treturn false;\n }\n"
        f"@@ -20,0 +21,{added} @@\n{long_function}"
    ).encode()
    result = mmreview("check", "-", "-f", "checkpatch", input=patch)
    assert result.returncode == 1, result.stderr
    assert b"PMD_PRESENT_AS_EMPTY" in result.stdout and b"demo_must_wait" in result.stdout
    assert b"demo_long" not in result.stdout
    note = [line for line in result.stderr.decode().splitlines() if "demo_long()" in line]
    assert len(note) == 1 and "not reviewed" in note[0] and "mm/demo.c" in note[0], note


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=60))
def test_a_message_is_one_line_whatever_it_quotes(text: str) -> None:
    """What an error quotes from the input (a path, a subject) cannot
    break the line: no control character or line separator is left."""
    shown = printable(f"mm/{text}.c")
    assert len(shown.splitlines()) == 1
    assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in shown)


def test_a_diff_path_with_a_next_line_character_is_one_line_of_error(
    minitree: Tree, tmp_path: Path
) -> None:
    # U+0085 (NEL) ends a line for str.splitlines() and for some terminals;
    # a fuzzed diff path carried one.
    patch = swap_patch(minitree).decode().replace("mm/fault.c", "mm/fail\u0085slab.c")
    path = tmp_path / "nel.patch"
    path.write_text(patch)
    result = mmreview("check", str(path))
    said = lines(result)
    assert len(said) == 1 and "\\x85" in said[0] and "control character" in said[0], said
