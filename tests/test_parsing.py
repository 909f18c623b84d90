"""Kernel C to functions: the sanitizer, enclosing functions, recovery, caching."""

from __future__ import annotations

import pytest

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
