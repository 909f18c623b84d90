"""Definitions read out of a header alone are the ones a whole parse finds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analyzer import headers, syntax
from analyzer.headers import DEFINITIONS, HeaderDefinitions
from analyzer.images import Image, git_blob_id
from analyzer.parsing import parse

HEADER = b"""/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _DEMO_H
#define _DEMO_H

struct demo { int a; };

static inline int demo_one(int x) { return x + 1; }

static __always_inline unsigned long
demo_two(struct demo *d,
		unsigned long mask)
{
	/* a brace in a comment: { */
	const char *s = "}";
	char c = '{';

	if (d->a) {
		return demo_one(d->a) & mask;
	}
	return s[0] + c;
}

static inline bool demo_split(int x)
{
#ifdef CONFIG_DEMO
	if (x) {
#else
	if (!x) {
#endif
		return true;
	}
	return false;
}

#define demo_macro(x) { (x) }

#endif
"""


def of_text(text: bytes) -> HeaderDefinitions:
    return HeaderDefinitions(git_blob_id(text), lambda: text)


def whole(name: str) -> str:
    function = next(f for f in parse(Image.of(HEADER)).functions if f.name == name)
    return syntax.text(function.node)


@pytest.mark.parametrize("name", ["demo_one", "demo_two", "demo_split"])
def test_a_definition_alone_is_the_whole_parse_one(name: str) -> None:
    found = of_text(HEADER).function(name)
    assert found is not None
    function, _ = found
    assert syntax.text(function.node) == whole(name)
    # Rows are the header's own: a finding or a message can cite them.
    row = HEADER[: HEADER.index(name.encode() + b"(")].count(b"\n")
    declarator = function.node.child_by_field_name("declarator")
    assert declarator is not None and declarator.start_point.row == row
    assert function.image.blob_id == Image.of(HEADER).blob_id


def test_only_a_clean_definition_is_read_alone() -> None:
    definitions = of_text(HEADER)
    _, alone = definitions.function("demo_two") or (None, None)
    assert alone is not None and DEFINITIONS in alone.memo  # parsed alone
    # Braces unbalanced by #ifdef branches: the header is parsed whole.
    _, split = definitions.function("demo_split") or (None, None)
    assert split is not None and DEFINITIONS not in split.memo
    assert definitions.function("demo_macro") is None
    assert definitions.function("demo_absent") is None


def test_every_definition_of_a_real_header(kernel_tree: Path) -> None:
    """Every function of the real include/linux/mm.h, read alone or whole,
    is the function a parse of the whole header finds."""
    text = (kernel_tree / "include/linux/mm.h").read_bytes()
    definitions = of_text(text)
    first = {}
    for function in parse(Image.of(text)).functions:
        first.setdefault(function.name, syntax.text(function.node))
    alone = 0
    for name, body in first.items():
        if not definitions.defines(name):
            continue
        found = definitions.function(name)
        assert found is not None, name
        assert syntax.text(found[0].node) == body, name
        alone += DEFINITIONS in found[1].memo
    assert alone > 0.9 * len(first)


@pytest.mark.parametrize(
    "garbage",
    [b"x(" * 50_000, b"f(int a)\n{" * 5_000, b"static int f(void)\n{\n" + b"{" * 70_000],
)
def test_a_garbage_header_defines_nothing_it_cannot_show(garbage: bytes) -> None:
    """A patch can make a header anything: no definition is made up, and
    an unclosed body is not read past MAX_DEFINITION_BYTES."""
    definitions = of_text(garbage)
    assert not definitions.defines("x")
    found = definitions.function("f")
    assert found is None or DEFINITIONS not in found[1].memo


def _heads_by_trying_every_word(text: bytes) -> dict[str, list[int]]:
    """The plain reading of what a head is: every word where
    _DEFINITION_RE matches, on a line starting in column 0 and not with #."""
    heads: dict[str, list[int]] = {}
    at = 0
    while (match := headers._DEFINITION_RE.search(text, at)) is not None:
        at = match.end(1)
        line = text.rfind(b"\n", 0, match.start(1)) + 1
        if text[line : line + 1] not in (b" ", b"\t", b"#"):
            heads.setdefault(match.group(1).decode(), []).append(match.start(1))
    return heads


_C_PIECES = [b"f", b"int", b"demo", b"x", b"(", b")", b"{", b"}", b";", b"\n", b" ", b"\t"]
_C_PIECES += [b"#", b",", b"*", b"/*", b"*/", b"a" * 300, b"static inline "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_C_PIECES), max_size=120))
@example([b"f(", b"a" * 300, b"a" * 212, b") {"])
@example([b"f(", b"a" * 300, b"a" * 213, b") {"])
@example([b"int f(x)", b"\n", b" g(y) {", b"\n", b"#h(z) {"])
def test_the_head_scan_finds_what_trying_every_word_finds(pieces: list[bytes]) -> None:
    text = b"".join(pieces)
    assert headers._definition_heads(text) == _heads_by_trying_every_word(text)


def test_the_head_scan_of_the_demo_header() -> None:
    heads = headers._definition_heads(HEADER)
    assert sorted(heads) == ["demo_one", "demo_split", "demo_two"]
    assert heads == _heads_by_trying_every_word(HEADER)


def test_heads_kept_on_disk_are_the_heads_and_a_bad_entry_is_scanned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    scanned = headers._definition_heads(HEADER)
    assert headers._heads_of(of_text(HEADER)) == scanned
    assert list(tmp_path.glob("definition-heads-*/*.json"))
    assert headers._heads_of(of_text(HEADER)) == scanned  # read back
    for bad in ('{"demo_one": "x"}', "[1, 2]", "{", '{"demo_one": [1.5]}'):
        for entry in tmp_path.glob("definition-heads-*/*.json"):
            entry.write_text(bad)
        assert headers._heads_of(of_text(HEADER)) == scanned


def test_a_header_is_read_only_for_a_definition_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heads on disk say which header to read: the others are not read, and
    the one holding the definition is read once."""
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    reads: list[bytes] = []

    def reading(text: bytes) -> HeaderDefinitions:
        def read() -> bytes:
            reads.append(text)
            return text

        return HeaderDefinitions(git_blob_id(text), read)

    other = b"static inline int demo_other(void)\n{\n\treturn 0;\n}\n"
    for text in (HEADER, other):
        headers._heads_of(reading(text))  # a first run scans, and keeps the heads
    reads.clear()
    first, second = reading(HEADER), reading(other)
    assert not second.defines("demo_two") and first.defines("demo_two")
    assert reads == []
    found = first.function("demo_two")
    assert found is not None and syntax.text(found[0].node) == whole("demo_two")
    assert first.function("demo_one") is not None
    assert reads == [HEADER]


def test_a_blob_the_tree_cannot_give_defines_nothing_and_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    missing = HeaderDefinitions(git_blob_id(HEADER), lambda: None)
    assert not missing.defines("demo_two") and missing.function("demo_two") is None
    assert not list(tmp_path.glob("definition-heads-*/*.json"))
    assert of_text(HEADER).defines("demo_two")


def test_a_kept_header_does_not_keep_the_review_context_that_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers are kept across patches; the patch whose review read one is
    not: its context (and every analysis made in it) goes with the patch."""
    import gc
    import weakref

    from analyzer.flow.summaries import Summaries
    from analyzer.rule import ReviewContext

    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    source = (
        b"#include <linux/demo.h>\n\nint user(struct demo *d)\n{\n\treturn demo_two(d, 1);\n}\n"
    )
    files = {"include/linux/demo.h": HEADER, "mm/user.c": source}

    def contexts() -> list[weakref.ref[ReviewContext]]:
        made = []
        for _ in range(2):  # two patches: the second finds the header kept
            context = ReviewContext(files.get, lambda path: git_blob_id(files[path]))
            found = Summaries(context, parse(Image.of(source)), "mm/user.c").located("demo_two")
            assert found is not None and found[2] == "include/linux/demo.h"
            made.append(weakref.ref(context))
        return made

    made = contexts()
    gc.collect()
    assert headers._by_blob.get(git_blob_id(HEADER)) is not None
    assert [ref() for ref in made] == [None, None]


def test_what_is_asked_of_a_definition_is_kept_and_read_back_without_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer about a definition comes from its parse once; later runs
    read it back by blob id, and the header's text is not read for it.  An
    entry that does not pass the asker's check is computed again."""
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    asked: list[str] = []

    def callees(function) -> list[str]:
        asked.append(function.name)
        return sorted(syntax.call_name(c) or "" for c in syntax.calls(function.body))

    def names(known: object) -> bool:
        return isinstance(known, list) and all(type(n) is str for n in known)

    parsed = of_text(HEADER)
    assert parsed.kept("demo_two", "calls", callees, names) == [["demo_one"]]
    assert parsed.kept("demo_one", "calls", callees, names) == [[]]
    assert parsed.kept("demo_nothing", "calls", callees, names) is None
    assert asked == ["demo_two", "demo_one"]
    reads: list[bytes] = []

    def read() -> bytes:
        reads.append(HEADER)
        return HEADER

    kept = HeaderDefinitions(git_blob_id(HEADER), read)
    headers._heads_of(kept)
    reads.clear()
    assert kept.kept("demo_two", "calls", callees, names) == [["demo_one"]]
    assert kept.kept("demo_nothing", "calls", callees, names) is None
    assert reads == [] and asked == ["demo_two", "demo_one"]
    for bad in ('{"calls": {"demo_two": "demo_one"}}', '{"calls": {"demo_two": [[1]]}}', "[]", "{"):
        for entry in tmp_path.glob("definition-facts-*/*.json"):
            entry.write_text(bad)
        asked.clear()
        assert of_text(HEADER).kept("demo_two", "calls", callees, names) == [["demo_one"]]
        assert asked == ["demo_two"]


def test_a_header_callee_calls_what_its_definition_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Summaries.calls() of a header function, kept or not, is what the
    located definition calls; a name the file defines itself comes first."""
    from analyzer.flow.summaries import Summaries, _calls_of
    from analyzer.rule import ReviewContext

    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    source = (
        b"#include <linux/demo.h>\n\nstatic int demo_one(int x)\n{\n\treturn mine(x);\n}\n\n"
        b"int user(struct demo *d)\n{\n\treturn demo_two(d, 1);\n}\n"
    )
    files = {"include/linux/demo.h": HEADER, "mm/user.c": source}
    reads: list[str] = []

    def read(path: str) -> bytes | None:
        reads.append(path)
        return files.get(path)

    for run in range(2):  # the second run reads the kept callees
        headers._by_blob.clear()
        reads.clear()
        context = ReviewContext(read, lambda path: git_blob_id(files[path]))
        summaries = Summaries(context, parse(Image.of(source)), "mm/user.c")
        assert summaries.calls("demo_two") == frozenset({"demo_one"})
        assert summaries.calls("demo_one") == frozenset({"mine"})
        assert summaries.calls("demo_absent") is None
        assert reads == (["include/linux/demo.h"] if run == 0 else [])
        located = Summaries(context, parse(Image.of(source)), "mm/user.c").located("demo_two")
        assert located is not None and _calls_of(located[0]) == summaries.calls("demo_two")
    assert list(tmp_path.glob("definition-facts-*/*.json"))
