"""Kernel C to functions: the sanitizer, enclosing functions, recovery, caching."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tree_sitter import Node

from analyzer import parsing
from analyzer.images import Image
from analyzer.rule import Confidence

KERNEL_STYLE = b"""\
static __always_inline bool demo_inline(pmd_t pmd)
{
	return pmd_none(pmd);
}

static int __must_check demo_locked(struct mm_struct *mm) __must_hold(&mm->page_table_lock)
{
	struct page *page;
	struct list_head *head = &mm->demo_list;
	int nr = 0;

	list_for_each_entry(page, head, lru) {
		struct demo *d = container_of(page, struct demo, page);

		nr += d->count;
	}
	return nr;
}

SYSCALL_DEFINE3(demo_call, unsigned long, start, size_t, len, int, behavior)
{
	return demo_locked(current->mm) + len;
}

static void __init demo_init(void)
{
	int __maybe_unused unused;
#ifdef CONFIG_DEMO
	demo_setup();
#else
	demo_fallback();
#endif
}
"""


def rows_of(source: bytes) -> dict[str, tuple[int, int, Confidence]]:
    parsed = parsing.parse(Image.of(source))
    return {f.name: (f.start_row + 1, f.end_row + 1, f.confidence) for f in parsed.functions}


def test_sanitizer_preserves_every_offset() -> None:
    sanitized = parsing.sanitize(KERNEL_STYLE)
    assert len(sanitized) == len(KERNEL_STYLE)
    assert [i for i, c in enumerate(KERNEL_STYLE) if c == 10] == [
        i for i, c in enumerate(sanitized) if c == 10
    ]
    assert b"while" in sanitized and b"list_for_each_entry" not in sanitized
    assert b"long" in sanitized and b"SYSCALL_DEFINE3" not in sanitized


def test_kernel_idioms_find_their_functions() -> None:
    found = rows_of(KERNEL_STYLE)
    assert {name: (start, end) for name, (start, end, _) in found.items()} == {
        "demo_inline": (1, 4),
        "demo_locked": (6, 18),
        "demo_call": (20, 23),
        "demo_init": (25, 33),
    }
    assert all(conf is Confidence.HIGH for _, _, conf in found.values())


def test_macro_bodies_are_left_alone() -> None:
    source = b"#define demo_lock(p) __acquires(p) do { spin_lock(p); } while (0)\nint x;\n"
    assert parsing.sanitize(source) == source


def test_broken_conditional_structure_is_recovered_function_by_function() -> None:
    # Each #ifdef branch opens its own `if (...) {` and one `}` closes both:
    # the whole-file parse fails; the per-function re-parse does not.
    source = b"""\
static int before(void)
{
	return 0;
}

static int tricky(int x)
{
#ifdef CONFIG_A
	if (x > 1) {
#else
	if (x > 2) {
#endif
		x++;
	}
	return x;
}

static int after(void)
{
	return 1;
}
"""
    found = rows_of(source)
    assert found["before"][:2] == (1, 4)
    assert found["tricky"][:2] == (6, 16)
    assert found["after"][:2] == (18, 21)


def test_parse_is_cached_by_blob_id() -> None:
    image = Image.of(KERNEL_STYLE)
    assert parsing.parse(image) is parsing.parse(Image.of(bytes(KERNEL_STYLE)))


def test_function_at_prefers_the_innermost_definition() -> None:
    parsed = parsing.parse(Image.of(KERNEL_STYLE))
    assert parsed.function_at(14).name == "demo_locked"
    assert parsed.function_at(3).name == "demo_inline"  # rows are 0-based
    assert parsed.function_at(4) is None


@pytest.mark.parametrize("annotation", [b"__user", b"__rcu", b"__percpu", b"noinline_for_stack"])
def test_annotations_do_not_produce_errors(annotation: bytes) -> None:
    source = (
        b"static int " + annotation + b" demo(int " + annotation + b" *p)\n{\n\treturn *p;\n}\n"
    )
    parsed = parsing.parse(Image.of(source))
    assert [f.name for f in parsed.functions] == ["demo"]
    assert not parsed.tree.root_node.has_error


def test_parsing_a_big_file_again_and_again_keeps_nothing_of_its_text() -> None:
    """A file over the plain-parse size is read through a callback, and
    py-tree-sitter keeps every chunk such a callback returns: each parse
    of a 200 KB file kept its 200 KB."""
    import gc
    import tracemalloc

    from analyzer import parsing

    body = b"".join(
        b"static int f%d(int x)\n{\n\tif (x > %d)\n\t\treturn x;\n\treturn 0;\n}\n\n" % (i, i)
        for i in range(4000)
    )
    assert len(body) > 3 * parsing._PLAIN_PARSE_BYTES
    parser = parsing._parser()
    parsing._parse_text(parser, body)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10):
            tree = parsing._parse_text(parser, body)
            assert tree.root_node.named_child_count == 4000
            del tree
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < len(body), f"{kept:,} bytes kept by ten parses of {len(body):,}"


def _shape(node: Node) -> tuple[object, ...]:
    """A node as everything the engine reads of it: type, span, error
    state, and its children's shapes."""
    return (
        node.type,
        node.start_byte,
        node.end_byte,
        node.is_missing,
        node.has_error,
        tuple(_shape(child) for child in node.children),
    )


# Lines a patch adds: statements, a half-written one, braces that open or
# close a scope, a preprocessor line, a comment that opens and never closes.
_NEW_LINES = st.sampled_from(
    [
        b"\tspin_lock(ptl);",
        b"\tif (!pte)",
        b"\t\treturn -EAGAIN;",
        b"\tpte = pte_offset_map_lock(mm, pmd, addr, &ptl",
        b"{",
        b"}",
        b"#ifdef CONFIG_DEMO",
        b"#endif",
        b"/* not closed",
        b"static int added(void)",
        b"",
    ]
)


@st.composite
def _edited_versions(draw: st.DrawFn, size: int) -> tuple[bytes, bytes]:
    """A kernel-style file of about `size` bytes, and that file after
    replacing, inserting or deleting a few runs of lines."""
    copies = max(1, size // len(KERNEL_STYLE))
    lines = (KERNEL_STYLE * copies).split(b"\n")
    edited = list(lines)
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(edited)))
        removed = draw(st.integers(0, 3))
        edited[start : start + removed] = draw(st.lists(_NEW_LINES, max_size=3))
    return b"\n".join(lines), b"\n".join(edited)


@settings(max_examples=60)
@given(_edited_versions(size=2000))
def test_a_file_parsed_as_an_edit_of_another_is_the_file_parsed_afresh(
    versions: tuple[bytes, bytes],
) -> None:
    before, after = versions
    earlier = parsing._parse(Image.of(before))
    afresh = parsing._parse(Image.of(after))
    edited = parsing._parse(Image.of(after), like=earlier)
    assert _shape(edited.tree.root_node) == _shape(afresh.tree.root_node)
    assert [(f.name, f.start_row, f.end_row, f.confidence) for f in edited.functions] == [
        (f.name, f.start_row, f.end_row, f.confidence) for f in afresh.functions
    ]


@settings(max_examples=5)
@given(_edited_versions(size=parsing._PLAIN_PARSE_BYTES + 8192))
def test_a_big_file_parsed_as_an_edit_is_parsed_afresh_too(versions: tuple[bytes, bytes]) -> None:
    """Text over the plain-parse size goes through the cancellable parse."""
    before, after = versions
    earlier = parsing._parse(Image.of(before))
    edited = parsing._parse(Image.of(after), like=earlier)
    assert _shape(edited.tree.root_node) == _shape(parsing._parse(Image.of(after)).tree.root_node)


def test_the_grammar_loaded_on_its_own_is_tree_sitter_cs() -> None:
    import tree_sitter_c
    from tree_sitter import Language, Parser

    from analyzer.parsing import C_LANGUAGE

    source = b"static int f(pmd_t *pmd) { if (!pmd_present(*pmd)) return -EAGAIN; return 0; }\n"
    ours = Parser(C_LANGUAGE).parse(source).root_node
    theirs = Parser(Language(tree_sitter_c.language())).parse(source).root_node
    assert (C_LANGUAGE.name, C_LANGUAGE.abi_version) == (
        "c",
        Language(tree_sitter_c.language()).abi_version,
    )
    assert str(ours) == str(theirs)
