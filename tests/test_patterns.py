"""A pattern compiled on first use, or taken from the table of kept
programs, is the pattern re.compile makes."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyzer import cache, patterns
from analyzer.patterns import regex
from analyzer.registry import all_rules
from tests.conftest import ROOT


def test_nothing_is_compiled_before_the_first_use(monkeypatch) -> None:
    compiled: list[object] = []
    real = patterns.compile_kept
    monkeypatch.setattr(patterns, "compile_kept", lambda *a: compiled.append(a) or real(*a))
    deferred = regex(rb"^\s*#\s*include\s*([<\"])", re.M)
    assert compiled == [] and deferred.pattern == rb"^\s*#\s*include\s*([<\"])"
    assert deferred.search(b'x\n #include "a.h"').group(1) == b'"'
    assert deferred.findall(b"#include <b.h>\n#include <c.h>") == [b"<", b"<"]
    assert deferred.groups == 1
    assert len(compiled) == 1  # once, however often it is used


@given(st.text(alphabet="ab_(){}; \n\tx", max_size=60))
def test_every_method_answers_as_the_compiled_pattern(text: str) -> None:
    source, flags = r"^\s*(\w+)\s*\(|[{};]", re.M
    deferred, compiled = regex(source, flags), re.compile(source, flags)
    assert [m.span() for m in deferred.finditer(text)] == [
        m.span() for m in compiled.finditer(text)
    ]
    assert deferred.findall(text) == compiled.findall(text)
    assert deferred.sub("-", text) == compiled.sub("-", text)
    assert deferred.split(text) == compiled.split(text)
    for method in ("search", "match", "fullmatch"):
        got, want = getattr(deferred, method)(text), getattr(compiled, method)(text)
        assert (got and got.span()) == (want and want.span())


def _defined() -> list[tuple[str | bytes, int]]:
    """Every pattern the engine and the rules define with regex()."""
    all_rules()
    for path in sorted((ROOT / "analyzer").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if "bot" not in name and "__main__" not in name:
            importlib.import_module(name.removesuffix(".__init__"))
    found = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith(("analyzer", "rules")):
            continue
        for value in vars(module).values():
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, patterns._Deferred):
                    found[(item.pattern, item._flags)] = None
    return list(found)


@pytest.fixture
def fresh_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(patterns, "_programs", None)
    monkeypatch.setattr(patterns, "_learned", False)
    return tmp_path


def _same(kept: re.Pattern, made: re.Pattern, samples: list[str | bytes]) -> None:
    assert (kept.pattern, kept.flags, kept.groups, kept.groupindex) == (
        made.pattern,
        made.flags,
        made.groups,
        made.groupindex,
    )
    for text in samples:
        if isinstance(text, type(made.pattern)):
            assert [m.group(0, *range(1, made.groups + 1)) for m in kept.finditer(text)] == [
                m.group(0, *range(1, made.groups + 1)) for m in made.finditer(text)
            ]


def test_the_kept_programs_are_the_ones_re_compile_makes(
    fresh_table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defined = _defined()
    assert len(defined) > 80  # the engine's and the rules' patterns
    code = (ROOT / "tests" / "fixtures").rglob("*.c")
    text = "\n".join(p.read_text(errors="replace") for p in sorted(code))[:200_000]
    samples = [text, text.encode(), "", b""]
    made = [re.compile(source, flags) for source, flags in defined]
    for source, flags in defined:
        patterns.compile_kept(source, flags)
    patterns.keep()
    # As the next process finds them: from the table, nothing parsed again.
    monkeypatch.setattr(patterns, "_programs", None)
    monkeypatch.setattr(patterns._parser, "parse", _never)
    for (source, flags), compiled in zip(defined, made, strict=True):
        _same(patterns.compile_kept(source, flags), compiled, samples)


def _never(*_args: object) -> None:
    raise AssertionError("compiled again")


def test_a_damaged_table_or_a_refused_program_is_compiled_again(fresh_table: Path) -> None:
    source = r"^(?P<tag>fixes:?)\s*(?P<sha>[0-9a-f]{5,40})\b"
    made = re.compile(source, re.I)
    cache.store_bytes(patterns._NAMESPACE, patterns._table_key(), b"\x00garbage")
    _same(patterns.compile_kept(source, re.I), made, ["Fixes: 0123456789ab (x)"])
    # An entry the engine refuses: a program that is not one.
    patterns._programs = {(source, int(re.I)): (int(re.I), [0, 1, 2], 2, {}, (None,))}
    _same(patterns.compile_kept(source, re.I), made, ["fixes: abcdef1"])


def test_a_later_process_takes_what_an_earlier_one_compiled(fresh_table: Path) -> None:
    env = {"MMREVIEW_CACHE_DIR": str(fresh_table), "PYTHONPATH": str(ROOT)}
    compile_it = (
        "import re, sys\n"
        "from analyzer import patterns\n"
        "if sys.argv[1] == 'again':\n"
        "    patterns._parser.parse = None  # compiling would fail\n"
        "p = patterns.regex(r'\\b(\\w+)_lockptr\\b', re.M)\n"
        "print(p.findall('pte_lockptr(mm, pmd) ptep_lockptr(mm, pte)'))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", compile_it, which],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        for which in ("first", "again")
    ]
    assert [r.stdout for r in runs] == ["['pte', 'ptep']\n"] * 2, runs[1].stderr


def test_what_start_up_compiles_is_kept_and_what_the_review_compiles_is_not(
    fresh_table: Path,
) -> None:
    env = {"MMREVIEW_CACHE_DIR": str(fresh_table), "PYTHONPATH": str(ROOT)}
    run_it = (
        "import re, sys\n"
        "from analyzer import patterns\n"
        "patterns.keep_while_starting()\n"
        "if sys.argv[1] == 'again':\n"
        "    patterns._parser.parse = None  # compiling would fail\n"
        "started = re.compile(r'^(\\w+):\\s*(.*)$', re.M)\n"
        "print(started.findall('Subject: mm: fix\\nTo: linux-mm'))\n"
        "if sys.argv[1] == 'third':\n"
        "    # A later start-up's new pattern: compiled, not kept.\n"
        "    print(re.compile(r'^Cc:\\s*(.*)$', re.M).findall('Cc: x'))\n"
        "patterns.started()\n"
        "if sys.argv[1] == 'first':\n"
        "    print(re.compile(r'\\bcollapse_huge_page\\b').search('collapse_huge_page(') is not None)\n"
        "patterns.keep()\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", run_it, which],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        for which in ("first", "again", "third")
    ]
    listed = "[('Subject', 'mm: fix'), ('To', 'linux-mm')]\n"
    assert [r.stdout for r in runs] == [listed + "True\n", listed, listed + "['x']\n"], [
        r.stderr for r in runs
    ]
    kept = patterns._read()
    assert (r"^(\w+):\s*(.*)$", int(re.M)) in kept
    assert (r"\bcollapse_huge_page\b", 0) not in kept
    assert (r"^Cc:\s*(.*)$", int(re.M)) not in kept
    assert re._compiler.compile is patterns._compile_as_usual  # in this process, untouched
