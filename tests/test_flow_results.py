"""analyzer/flow/results.py: what failing kernel calls return, and its tracker."""

from __future__ import annotations

from analyzer import syntax
from analyzer.flow import flow_of
from analyzer.flow.nullness import MAY_ERR, MAY_FAIL, risky_uses
from analyzer.flow.results import Results, failure_kinds, never_fails
from analyzer.flow.values import ERR, NULL
from analyzer.images import Image
from analyzer.parsing import parse
from analyzer.rule import ReviewContext


def test_the_page_cache_lookups_changed_at_v6_3() -> None:
    assert failure_kinds((6, 1))["filemap_get_folio"] == MAY_FAIL
    assert failure_kinds((6, 3))["filemap_get_folio"] == MAY_ERR
    assert failure_kinds((6, 12))["__filemap_get_folio"] == MAY_ERR
    assert "filemap_get_folio" not in failure_kinds(None)  # no tree: not judged
    assert failure_kinds(None)["find_vma"] == MAY_FAIL
    assert failure_kinds(None)["memdup_user"] == MAY_ERR


def _calls(code: str) -> list:
    parsed = parse(Image.of(f"void f(void)\n{{\n{code}\n}}\n".encode()))
    return syntax.calls(parsed.functions[0].body)


def test_allocations_that_do_not_fail() -> None:
    first, second, third, fourth = _calls(
        "\ta = kmalloc(n, GFP_KERNEL | __GFP_NOFAIL);\n"
        "\tb = kmalloc(n, GFP_KERNEL);\n"
        "\tc = mempool_alloc(pool, GFP_NOIO);\n"
        "\td = mempool_alloc(pool, GFP_ATOMIC);\n"
    )
    assert never_fails(first) and not never_fails(second)
    assert never_fails(third) and not never_fails(fourth)


def test_the_tracker_follows_failures_along_paths() -> None:
    code = """\
int f(struct mm_struct *mm, struct address_space *mapping)
{
	struct vm_area_struct *vma = find_vma(mm, 0);
	struct folio *folio = filemap_get_folio(mapping, 0);
	struct page *page = alloc_page(GFP_KERNEL | __GFP_NOFAIL);

	page->flags = 0;
	if (!folio)
		return 0;
	folio->flags = 0;
	if (vma)
		vma->vm_flags = 0;
	return vma->vm_start;
}
"""
    parsed = parse(Image.of(code.encode()))
    function = parsed.functions[0]
    flow = flow_of(function, parsed, ReviewContext(), "mm/x.c")
    analysis = flow.analysis(Results(failure_kinds((6, 12))), "test-results")
    uses = list(risky_uses(analysis, lambda name, index: (), bad=frozenset({NULL, ERR})))
    found = {(syntax.text(u.node), tuple(sorted(u.kinds & {NULL, ERR}))) for u in uses}
    # page->flags is not there: __GFP_NOFAIL.
    assert found == {
        ("folio->flags", ("err",)),  # a NULL test lets the v6.3+ error through
        ("vma->vm_start", ("null",)),  # checked on one path only
    }
