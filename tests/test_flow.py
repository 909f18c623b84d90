"""The flow layer on small kernel-style functions: paths, values, locks,
page-table entries, callee summaries, declared types and checks."""

from __future__ import annotations

import pytest

from analyzer import syntax
from analyzer.flow import FunctionFlow, flow_of
from analyzer.flow import events as ev
from analyzer.flow.cfg import BRANCH
from analyzer.flow.entries import HUGE, MIGRATION, NONE, TABLE
from analyzer.flow.guards import Vouching, argument_places, vouched
from analyzer.flow.nullness import MAY_FAIL, risky_uses
from analyzer.flow.values import NULL, PTR, Analysis
from analyzer.images import Image
from analyzer.parsing import parse
from analyzer.rule import ReviewContext

MAPS = {"pte_offset_map": MAY_FAIL, "pte_offset_map_lock": MAY_FAIL}
ACCESSORS = __import__("re").compile(r"ptep_\w+|pte_unmap(_unlock)?|set_pte_at")


def flows(source: str, headers: dict[str, str] | None = None) -> dict[str, FunctionFlow]:
    files = {path: text.encode() for path, text in (headers or {}).items()}
    context = ReviewContext(files.get) if headers is not None else ReviewContext(None)
    parsed = parse(Image.of(source.encode()))
    return {f.name: flow_of(f, parsed, context, "mm/demo.c") for f in parsed.functions}


def call(flow: FunctionFlow, name: str, occurrence: int = 0):
    return flow.calls(name)[occurrence]


def unchecked(flow: FunctionFlow) -> list[str]:
    analysis = flow.nullness(MAPS)
    return [syntax.text(u.node) for u in risky_uses(analysis, flow.dereferences(ACCESSORS))]


# -- paths --------------------------------------------------------------------------


def test_or_chain_lets_the_null_side_reach_the_label() -> None:
    (flow,) = flows(
        """
int f(struct mm_struct *mm, pmd_t *pmd, unsigned long addr)
{
	spinlock_t *ptl;
	pte_t *ptep = pte_offset_map_lock(mm, pmd, addr, &ptl);

	if (!ptep || !pte_present(ptep_get(ptep)))
		goto out;
	set_pte_at(mm, addr, ptep, x);
out:
	pte_unmap_unlock(ptep, ptl);
	return 0;
}
"""
    ).values()
    # ptep_get() runs only where ptep is not NULL; the label is reached with NULL.
    assert unchecked(flow) == ["pte_unmap_unlock(ptep, ptl)"]


def test_loop_condition_test_does_not_cover_the_use_after_the_loop() -> None:
    (flow,) = flows(
        """
void f(pmd_t *pmd, unsigned long addr, unsigned long end)
{
	pte_t *pte = pte_offset_map(pmd, addr);

	for (; pte && addr < end; pte++, addr += PAGE_SIZE)
		use(ptep_get(pte));
	pte_unmap(pte);
}
"""
    ).values()
    assert unchecked(flow) == ["pte_unmap(pte)"]


@pytest.mark.parametrize(
    ("test", "checked"),
    [
        ("VM_WARN_ON_ONCE(!pte);", False),  # a statement: nothing bails out
        ("if (WARN_ON_ONCE(!pte))\n\t\treturn 0;", True),  # a condition
        ("BUG_ON(!pte);", True),  # the NULL path ends
        ("VM_BUG_ON(!pte);", False),  # compiled out without CONFIG_DEBUG_VM
        ("if (unlikely(pte == NULL))\n\t\treturn 0;", True),
    ],
)
def test_warnings_are_branches_only_in_a_condition(test: str, checked: bool) -> None:
    (flow,) = flows(
        f"""
int f(pmd_t *pmd, unsigned long addr)
{{
	pte_t *pte = pte_offset_map(pmd, addr);

	{test}
	return pte_none(ptep_get(pte));
}}
"""
    ).values()
    assert (unchecked(flow) == []) is checked


def test_bug_paths_end_in_abort_not_exit() -> None:
    (flow,) = flows("void f(int x)\n{\n\tif (x)\n\t\tBUG();\n\tg();\n}\n").values()
    abort = flow.graph.abort
    assert abort.preds and not any(e.source.kind == BRANCH for e in abort.preds)
    assert all(e.target is not flow.graph.exit for p in [abort] for e in p.succs)


def test_switch_falls_through_and_break_leaves() -> None:
    (flow,) = flows(
        """
int f(int kind, pmd_t *pmd, unsigned long addr)
{
	pte_t *pte = NULL;

	switch (kind) {
	case 1:
		pte = pte_offset_map(pmd, addr);
	case 2:
		return pte_none(ptep_get(pte));
	default:
		break;
	}
	return 0;
}
"""
    ).values()
    assert unchecked(flow) == ["ptep_get(pte)"]


def test_constants_tie_a_result_to_the_path_that_set_it() -> None:
    (flow,) = flows(
        """
int f(struct mm_struct *mm, pmd_t *pmd, unsigned long addr)
{
	pmd_t _pmd = pmdp_collapse_flush(vma, addr, pmd);
	spinlock_t *ptl;
	pte_t *pte = pte_offset_map_lock(mm, &_pmd, addr, &ptl);
	int result;

	if (pte)
		result = isolate(pte);
	else
		result = SCAN_PMD_NULL;
	if (result != SCAN_SUCCEED)
		goto out;
	result = copy(pte);
	pte_unmap_unlock(pte, ptl);
out:
	return result;
}
"""
    ).values()
    assert unchecked(flow) == []


def test_compound_assignment_keeps_the_alias() -> None:
    (flow,) = flows(
        """
int f(struct mm_struct *mm, pmd_t *pmd, unsigned long addr, unsigned long end)
{
	spinlock_t *ptl;
	pte_t *start_pte, *pte;
	int nr = 1;

	start_pte = pte = pte_offset_map_lock(mm, pmd, addr, &ptl);
	if (!start_pte)
		return 0;
	for (; addr < end; pte += nr, addr += nr * PAGE_SIZE)
		use(ptep_get(pte));
	pte_unmap_unlock(start_pte, ptl);
	return 0;
}
"""
    ).values()
    assert unchecked(flow) == []


def test_iterator_macros_are_loops() -> None:
    (flow,) = flows(
        """
void f(struct list_head *head)
{
	struct folio *folio;

	list_for_each_entry(folio, head, lru) {
		if (bad(folio))
			break;
		put(folio);
	}
	done();
}
"""
    ).values()
    kinds = {p.kind for p in flow.graph.reverse_postorder()}
    assert "iterate" in kinds
    put = flow.point(call(flow, "put"))
    assert put is not None and flow.some_path_avoids(put, put, lambda p: False)


def test_a_comment_after_a_label_does_not_hide_the_statement() -> None:
    (flow,) = flows(
        """
int f(pmd_t *pmd, unsigned long addr)
{
	pte_t *pte;
again:
	/* read it again */
	pte = pte_offset_map(pmd, addr);
	if (!pte)
		goto again;
	return pte_none(ptep_get(pte));
}
"""
    ).values()
    assert flow.point(call(flow, "pte_offset_map")) is not None
    assert unchecked(flow) == []


# -- locks --------------------------------------------------------------------------


def test_pte_lock_is_held_exactly_where_the_map_did_not_fail() -> None:
    (flow,) = flows(
        """
int f(struct mm_struct *mm, pmd_t *pmd, unsigned long addr)
{
	spinlock_t *ptl;
	pte_t *pte = pte_offset_map_lock(mm, pmd, addr, &ptl);

	if (!pte)
		return fail();
	work(pte);
	pte_unmap_unlock(pte, ptl);
	return done();
}
"""
    ).values()
    assert flow.locks_at(call(flow, "fail")) == {}
    assert flow.locks_at(call(flow, "work")) == {"spin:ptl": frozenset({"held"})}
    assert flow.locks_at(call(flow, "done")) == {}


def test_guard_holds_to_the_end_of_its_block() -> None:
    (flow,) = flows(
        """
void f(struct demo *d)
{
	{
		guard(spinlock)(&d->lock);
		inside();
	}
	scoped_guard(spinlock, &d->other) {
		in_scope();
	}
	scoped_guard(rcu) {
		in_rcu();
	}
	outside();
}
"""
    ).values()
    assert flow.locks_at(call(flow, "inside")) == {"spin:d->lock": frozenset({"held"})}
    assert flow.locks_at(call(flow, "in_scope")) == {"spin:d->other": frozenset({"held"})}
    # `scoped_guard(rcu) {` reads as a nested definition: its block is still walked.
    assert flow.point(call(flow, "in_rcu")) is not None
    assert flow.locks_at(call(flow, "outside")) == {}


def test_trylock_and_helpers_that_take_a_lock() -> None:
    found = flows(
        """
static void demo_lock(struct xa_state *xas)
{
	xas_lock_irq(xas);
}

void f(struct xa_state *xas, spinlock_t *l)
{
	if (spin_trylock(l))
		locked();
	demo_lock(xas);
	xa_locked();
}
"""
    )
    flow = found["f"]
    assert flow.locks_at(call(flow, "locked")) == {"spin:l": frozenset({"held"})}
    assert flow.locks_at(call(flow, "xa_locked"))["spin:xas"] == frozenset({"held"})


# -- page-table entries ---------------------------------------------------------------


def entry_kinds(flow: FunctionFlow, at: str, place: str) -> frozenset[str]:
    kinds = flow.entries().place_kinds_at(call(flow, at), place)
    assert kinds is not None
    return kinds & {NONE, TABLE, HUGE, MIGRATION, "devmap"}


def test_entry_kinds_narrow_on_each_edge() -> None:
    (flow,) = flows(
        """
int f(pmd_t *pmd)
{
	pmd_t val = pmdp_get_lockless(pmd);

	if (pmd_none(val) || pmd_trans_huge(val))
		return 0;
	before_present();
	if (!pmd_present(val))
		return wait_for(pmd);
	return walk(pmd);
}
"""
    ).values()
    assert entry_kinds(flow, "before_present", "*pmd") == {TABLE, MIGRATION, "devmap"}
    assert entry_kinds(flow, "wait_for", "*pmd") == {MIGRATION}
    assert entry_kinds(flow, "walk", "*pmd") == {TABLE, "devmap"}


def test_split_and_failing_map_tell_what_the_pmd_is() -> None:
    (flow,) = flows(
        """
int f(struct vm_area_struct *vma, pmd_t *pmd, unsigned long addr)
{
	pte_t *pte;

	split_huge_pmd(vma, pmd, addr);
	after_split();
	pte = pte_offset_map(pmd, addr);
	if (!pte)
		return gone();
	return mapped(pte);
}
"""
    ).values()
    assert entry_kinds(flow, "after_split", "*pmd") == {NONE, TABLE}
    assert entry_kinds(flow, "mapped", "*pmd") == {TABLE}
    assert entry_kinds(flow, "gone", "*pmd") == {NONE}


# -- callees --------------------------------------------------------------------------


def test_a_helper_that_tests_the_pointer_tests_it_where_it_is_called() -> None:
    found = flows(
        """
static bool table_gone(struct vm_fault *vmf)
{
	return !vmf->pte;
}

static bool changed(struct vm_fault *vmf)
{
	return !pte_same(ptep_get(vmf->pte), vmf->orig_pte);
}

int checked(struct vm_fault *vmf)
{
	vmf->pte = pte_offset_map_lock(mm, vmf->pmd, vmf->address, &vmf->ptl);
	if (table_gone(vmf))
		return 0;
	return changed(vmf);
}

int unchecked(struct vm_fault *vmf)
{
	vmf->pte = pte_offset_map_lock(mm, vmf->pmd, vmf->address, &vmf->ptl);
	return changed(vmf);
}
"""
    )
    assert "->pte" in found["changed"].summaries.of("changed").dereferenced(0)
    assert unchecked(found["checked"]) == []
    assert unchecked(found["unchecked"]) == ["changed(vmf)"]


def test_summaries_say_what_a_helper_returns_and_calls() -> None:
    flow = flows(
        """
static pte_t *lookup(struct mm_struct *mm, pmd_t *pmd, unsigned long addr)
{
	if (!pmd)
		return NULL;
	return pte_offset_map(pmd, addr);
}

static int wrapper(int x)
{
	return inner(x);
}

int f(void) { return 0; }
"""
    )["f"]
    summary = flow.summaries.of("lookup")
    assert summary is not None and summary.returns == {NULL, PTR}
    assert flow.summaries.reaches("wrapper", {"inner"}, 1)
    assert not flow.summaries.reaches("wrapper", {"pte_offset_map"}, 3)
    assert flow.summaries.of("missing_function") is None


def test_helpers_are_found_in_included_headers() -> None:
    flow = flows(
        "#include <linux/demo.h>\nint f(pmd_t *pmd) { return demo_helper(pmd); }\n",
        {
            "include/linux/demo.h": "static inline int demo_helper(pmd_t *pmd)\n{\n\treturn pmd_none(*pmd);\n}\n"
        },
    )["f"]
    summary = flow.summaries.of("demo_helper")
    assert summary is not None and summary.predicate is not None


# -- types --------------------------------------------------------------------------


def test_types_through_casts_and_fields() -> None:
    (flow,) = flows(
        """
void f(struct vm_fault *vmf, pte_t *ptep)
{
	pmd_lockptr(mm, (pmd_t *)ptep);
	use(vmf->pmd);
}
"""
    ).values()
    cast = syntax.arguments(call(flow, "pmd_lockptr"))[1]
    assert flow.type_of(cast) == "pmd_t *"
    assert flow.type_of(cast, through_casts=True) == "pte_t *"
    assert flow.type_of(syntax.arguments(call(flow, "use"))[0]) == "pmd_t *"


def test_version_is_read_from_the_makefile() -> None:
    makefile = "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 170\n"
    flow = flows("void f(void) {}\n", {"Makefile": makefile})["f"]
    assert flow.version == (6, 1)
    assert flows("void f(void) {}\n")["f"].version is None


# -- checks -------------------------------------------------------------------------


def check_vouched(source: str, at: str) -> bool:
    flow = flows(source)["f"]
    names = frozenset({"userfaultfd_wp"})

    def vouches(node):  # type: ignore[no-untyped-def]
        return argument_places(node) if syntax.call_name(node) in names else []

    analysis = flow.analysis(
        Vouching(flow, vouches, True, lambda node, condition: False), "test-vouching"
    )
    assert isinstance(analysis, Analysis)
    return vouched(analysis, call(flow, at), "vma")


CHECKED = """
void f(struct vm_area_struct *vma, pmd_t *pmd, int install)
{
	%s
	collapse(pmd);
}
"""


@pytest.mark.parametrize(
    ("check", "made"),
    [
        ("if (userfaultfd_wp(vma)) return;", True),
        ("if (install && userfaultfd_wp(vma)) return;", False),  # narrowed
        ("VM_WARN_ON_ONCE(userfaultfd_wp(vma));", False),  # steers nothing
        ("if (userfaultfd_wp(vma)) return; vma = next(vma);", False),  # another VMA
        ("if (userfaultfd_wp(vma)) return; spin_lock(l);", False),  # made before the lock
        ("spin_lock(l); if (unlikely(userfaultfd_wp(vma))) goto out;", True),
    ],
)
def test_a_check_vouches_until_what_it_tested_changes(check: str, made: bool) -> None:
    assert check_vouched(CHECKED % check, "collapse") is made


def test_places_are_spelled_one_way() -> None:
    (flow,) = flows("void f(struct vm_fault *vmf) { use((vmf->pte), *(pmd), &ptl); }\n").values()
    arguments = syntax.arguments(call(flow, "use"))
    assert [ev.place(a) for a in arguments[:2]] == ["vmf->pte", "*pmd"]
    assert ev.address_of(arguments[2]) == "ptl"


SNAPSHOT = """
void f(struct vm_fault *vmf)
{
	%s
	work(vmf->pte);
}
"""


def same_vouched(source: str) -> bool:
    flow = flows(source)["f"]

    def vouches(node):
        return argument_places(node) if syntax.call_name(node) == "pte_same" else []

    analysis = flow.analysis(Vouching(flow, vouches, True), "test-same")
    assert isinstance(analysis, Analysis)
    return vouched(analysis, call(flow, "work"), "vmf->orig_pte")


@pytest.mark.parametrize(
    ("code", "made"),
    [
        # No entry at all: nothing to re-validate on the NULL side.
        ("if (!vmf->pte || !pte_same(ptep_get(vmf->pte), vmf->orig_pte)) return;", True),
        # A path a NULL pointer rules out is no path.
        (
            "vmf->pte = NULL; if (c) { vmf->pte = pte_offset_map(vmf->pmd, a);"
            " if (!pte_same(ptep_get(vmf->pte), vmf->orig_pte)) return; }"
            " if (vmf->pte) work(vmf->pte); return;",
            True,
        ),
        # ...unless something handed the struct may have set it.
        (
            "vmf->pte = NULL; map(vmf); if (c) { if (!pte_same(ptep_get(vmf->pte),"
            " vmf->orig_pte)) return; }",
            False,
        ),
        ("if (c && !pte_same(ptep_get(vmf->pte), vmf->orig_pte)) return;", False),
    ],
)
def test_a_null_entry_pointer_needs_no_revalidation(code: str, made: bool) -> None:
    assert same_vouched(SNAPSHOT % code) is made


ANSWERS = """
int walk(pmd_t *pmd, unsigned long addr, unsigned long end)
{
	pte_t *pte = NULL;

	do {
		if (!pte) {
			pte = pte_offset_map(pmd, addr);
			if (!pte)
				break;
		}
		if (is_swap_pte(ptep_get(pte)))
			return -ENOMEM;
	} while (pte++, addr += PAGE_SIZE, addr != end);
	if (pte)
		pte_unmap(pte);
	return 0;
}

int settle(pmd_t *pmd, unsigned long addr, int retry)
{
	int ret;
	pte_t *pte = pte_offset_map(pmd, addr);

	if (!pte) {
		ret = retry ? -EAGAIN : 0;
		goto out;
	}
	ret = 0;
	pte_unmap(pte);
out:
	return ret;
}

void quiet(pmd_t *pmd, unsigned long addr)
{
	pte_t *pte = pte_offset_map(pmd, addr);

	if (!pte) {
		count_vm_event(THP_SPLIT_PMD);
		if (addr)
			return;
	}
	do_things(pte);
}
"""


def test_answers_after_follows_the_paths_out_of_a_branch() -> None:
    found = flows(ANSWERS)
    walk, settle, quiet = found["walk"], found["settle"], found["quiet"]
    # Three tests see the map's NULL.  The loop head's `if (!pte)`, on a
    # later round, maps again and may meet the `return -ENOMEM;`; the
    # `break` leaves the loop for the one `return 0;` after it, past
    # `if (pte)`.
    assert [walk.answers_after(e) for e in walk.null_tests(call(walk, "pte_offset_map"))] == [
        frozenset({"-ENOMEM", "0"}),
        frozenset({"0"}),
        frozenset({"0"}),
    ]
    # Set to what is not one constant on the way: unknown.
    assert [settle.answers_after(e) for e in settle.null_tests(call(settle, "pte_offset_map"))] == [
        None
    ]
    # A void function: `return;`, or on to the rest of the body and its end.
    assert [quiet.answers_after(e) for e in quiet.null_tests(call(quiet, "pte_offset_map"))] == [
        frozenset({""})
    ]
