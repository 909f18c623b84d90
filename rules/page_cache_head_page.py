"""The head page of a page-cache folio used as the page of an index.

## What it does
Follows a folio that comes from the page cache or shmem for a given index
(`filemap_get_folio()`, `__filemap_get_folio()`, `filemap_lock_folio()`,
`read_mapping_folio()`, `shmem_get_folio()`, ...) along paths, through
the names it is copied to, to where its head page (`&folio->page`,
`folio_page(folio, 0)`) is mapped, read, checked for poison, handed back as
`vmf->page` or returned, directly or through a `struct page *` local, and
flags it unless every path there has asked whether the folio is large
(`folio_test_large()`, `folio_nr_pages()`, ...) or the index is 0.  On a
path where the lookup returned an error pointer (`if (IS_ERR(folio))`),
converting it is left alone.

## Why is this bad?
The page cache holds large folios: shmem with huge pages, and every file
system that enables large folios.  The folio found for `index` then starts
at `folio->index`, which may be far below `index`, and its head page holds
other data.  Mapping the head page maps the wrong 4 KiB of the file into
the process (or reads, or poison-checks, the wrong one).  This came up when
UFFDIO_CONTINUE met a shmem THP: the answer was to map exactly the subpage
of the faulting offset, as mfill_atomic_pte_continue() does with
`folio_file_page(folio, pgoff)`.

## Example
```c
        ret = shmem_get_folio(inode, pgoff, 0, &folio, SGP_NOALLOC);
        ...
        page = &folio->page;			/* the folio may be a THP */
        ret = mfill_atomic_install_pte(dst_pmd, dst_vma, dst_addr, page, false, flags);
```

## Use instead
```c
        ret = shmem_get_folio(inode, pgoff, 0, &folio, SGP_NOALLOC);
        ...
        page = folio_file_page(folio, pgoff);	/* the subpage of pgoff */
        if (PageHWPoison(page))
                goto out_release;
        ret = mfill_atomic_install_pte(dst_pmd, dst_vma, dst_addr, page, false, flags);
```

## Known problems
A head page stored in a local is followed to its uses in text order, until
the local is assigned again; a folio that arrives as a parameter is not
known to come from the page cache.

## References
- Thread "Re: [PATCH 1/3] userfaultfd/selftests: fix feature support detection"
  (mcontinue_atomic_pte() and shmem_getpage() returning a THP): Peter Xu
  <YUtoyNic4Jxfv9f7@t490s>, Axel Rasmussen
  <CAJHvVcg6PRCK_JcYEhRqq2vPyypnc+ySOtLhtFf5GrcQjimsJQ@mail.gmail.com>,
  in https://lore.kernel.org/all/20210922175156.130228-1-peterx@redhat.com/
- "userfaultfd: convert mcontinue_atomic_pte() to use a folio" (Matthew Wilcox,
  v6.1) and a734991ccaec ("mm: userfaultfd: rename functions for clarity +
  consistency"): mfill_atomic_pte_continue() maps `folio_file_page(folio, pgoff)`
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow
from analyzer.flow.cfg import Point
from analyzer.flow.nullness import MAY_EITHER, Nullness
from analyzer.flow.values import ERR, NULL, Analysis
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# Page-cache lookups of one index; the index is the second argument of all
# of them.  shmem_get_folio*() hand the folio back through `&folio`.
GETTERS = frozenset(
    {
        "filemap_get_folio",
        "__filemap_get_folio",
        "filemap_lock_folio",
        "filemap_grab_folio",
        "read_mapping_folio",
        "read_cache_folio",
        "mapping_read_folio_gfp",
        "do_read_cache_folio",
        "shmem_read_folio",
        "shmem_read_folio_gfp",
        "shmem_get_folio",
        "shmem_get_folio_gfp",
    }
)
INDEX_ARGUMENT = 1
# The ones that hand the folio back through a pointer argument.
OUT_GETTERS = frozenset({"shmem_get_folio", "shmem_get_folio_gfp"})
# Where the page stands for the data at the index.
MAPPING_SINKS = frozenset(
    {
        "mfill_atomic_install_pte",
        "mk_pte",
        "set_pte_range",
        "vm_insert_page",
        "vmf_insert_page",
        "insert_page",
        "folio_add_file_rmap_pte",
        "folio_add_file_rmap_ptes",
        "page_add_file_rmap",
    }
)
DATA_SINKS = frozenset(
    {
        "PageHWPoison",
        "is_page_hwpoison",
        "kmap",
        "kmap_local_page",
        "kmap_atomic",
        "copy_page_to_iter",
        "copy_page_from_iter",
        "copy_page_from_iter_atomic",
        "copy_highpage",
        "copy_user_highpage",
        "clear_highpage",
        "clear_user_highpage",
        "memcpy_from_page",
        "memcpy_to_page",
        "zero_user",
        "zero_user_segment",
        "zero_user_segments",
        "page_address",
        "lowmem_page_address",
        "set_page_dirty",
        "set_page_dirty_lock",
    }
)
SIZE_CHECKS = frozenset(
    {
        "folio_test_large",
        "folio_nr_pages",
        "folio_order",
        "folio_size",
        "folio_test_pmd_mappable",
        "folio_large_nr_pages",
    }
)
HEAD_FIELD_RE = regex(r"&\s*(\w+)\s*->\s*page")


class PageCacheHeadPage(FunctionRule):
    id = "PAGE_CACHE_HEAD_PAGE"
    severity = Severity.WARNING
    summary = "head page of a page-cache folio used for an index: use folio_file_page()"
    paths = ()
    # Wherever a page-cache lookup of one index is made.
    api = r"\b(?:_*filemap_|read_mapping_|read_cache_|mapping_read_|do_read_cache_|shmem_)\w*folio"

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        body = flow.function.body
        if body is None or not flow.calls(GETTERS):
            return
        analysis = flow.analysis(_Folios(), "page-cache-folios")
        if not analysis.complete:
            return
        for head, folio in _head_pages(body):
            getter = _getter(flow, analysis, head, folio)
            if getter is None:
                continue
            arguments = syntax.arguments(getter)
            if len(arguments) <= INDEX_ARGUMENT:
                continue
            index = syntax.text(arguments[INDEX_ARGUMENT])
            if (
                index == "0"
                or _only_errors(analysis, head, folio)
                or _size_checked(flow, folio, head)
            ):
                continue
            sink = _sink(flow, head)
            if sink is None:
                continue
            name = syntax.call_name(getter)
            yield change.finding(
                head,
                f"{name}() may return a large folio: '{syntax.text(head)}' is its first page, "
                f"not the page of index '{index}' ({sink}); use folio_file_page({folio}, "
                f"{index}), or check folio_test_large() where a small folio is assumed",
                Confidence.MEDIUM if "HWPoison" in sink else Confidence.HIGH,
            )


class _Folios(Nullness):
    """Folios from the page cache, and the error pointers some return."""

    def __init__(self) -> None:
        super().__init__({name: MAY_EITHER for name in GETTERS})
        self.out_parameters = {name: MAY_EITHER for name in OUT_GETTERS}


def _getter(flow: FunctionFlow, analysis: Analysis, head: Node, folio: str) -> Node | None:
    """The page-cache lookup the folio at `head` comes from, on some path."""
    for state, _results in analysis.before_each(head):
        for value in state.places.get(folio, ()):
            site = analysis.site(value)
            if (
                site is not None
                and site.type == "call_expression"
                and syntax.call_name(site) in GETTERS
            ):
                return site
    return None


def _only_errors(analysis: Analysis, head: Node, folio: str) -> bool:
    """Inside `if (IS_ERR(folio))`: an error pointer changing type."""
    kinds = analysis.place_kinds_at(head, folio)
    return kinds is not None and bool(kinds) and kinds <= {ERR, NULL}


def _size_checked(flow: FunctionFlow, folio: str, use: Node) -> bool:
    """Does every path to `use` ask whether the folio is large?"""
    target = flow.point(use)
    if target is None:
        return False

    def asks(point: Point) -> bool:
        if point.node is None:
            return False
        return any(
            (arguments := syntax.arguments(call)) and syntax.text(arguments[0]) == folio
            for call in syntax.calls(point.node, SIZE_CHECKS)
        )

    return flow.every_path(None, target, passes=asks)


def _head_pages(body: Node) -> Iterator[tuple[Node, str]]:
    """(expression, folio variable) for `&folio->page` and `folio_page(folio, 0)`."""
    for node in syntax.walk(body):
        if node.type == "pointer_expression" and (
            match := HEAD_FIELD_RE.fullmatch(syntax.text(node))
        ):
            yield node, match.group(1)
        elif node.type == "call_expression" and syntax.call_name(node) == "folio_page":
            arguments = syntax.arguments(node)
            if (
                len(arguments) == 2
                and arguments[0].type == "identifier"
                and syntax.text(arguments[1]) == "0"
            ):
                yield node, syntax.text(arguments[0])


def _sink(flow: FunctionFlow, head: Node) -> str | None:
    """How the head page is used for the index's data, directly or through
    a `struct page *` local it is stored in (the strongest use, mapping
    first); None when it is not."""
    direct = _direct_sink(head)
    if direct is not None:
        return direct
    store = flow.store_of(head)
    if store is None:
        return None
    found = [sink for use in flow.uses_of(store) if (sink := _direct_sink(use)) is not None]
    return min(found, key=_strength, default=None)


def _strength(sink: str) -> int:
    """Lower is stronger: mapping it, handing it back, reading or writing
    its data, and last checking it for poison."""
    for rank, prefix in enumerate(("mapped", "handed", "returned", "passed to copy", "passed")):
        if sink.startswith(prefix):
            return rank
    return 9


def _direct_sink(node: Node) -> str | None:
    parent = syntax.unparenthesized_parent(node)
    if parent is None:
        return None
    if parent.type == "argument_list" and parent.parent is not None:
        name = syntax.call_name(parent.parent)
        if name in MAPPING_SINKS:
            return f"mapped by {name}()"
        if name in DATA_SINKS:
            return f"passed to {name}()"
        return None
    if parent.type == "return_statement":
        return "returned"
    if parent.type == "assignment_expression" and parent.child_by_field_name("right") == node:
        left = parent.child_by_field_name("left")
        if left is not None and (
            (left.type == "field_expression" and syntax.text(left.child_by_field_name("field")))
            == "page"
            or (left.type == "pointer_expression" and syntax.text(left).startswith("*"))
        ):
            return f"handed back in {syntax.text(left)}"
    return None


RULE = PageCacheHeadPage
