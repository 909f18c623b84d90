"""What the function as it was did on every path and no longer does
(analyzer/flow/regress.py), and the entry kinds constructors give."""

from __future__ import annotations

import re

from analyzer import syntax
from analyzer.flow import FunctionFlow, flow_of
from analyzer.flow.entries import MARKER, MIGRATION, SWAP, constructed_kinds
from analyzer.flow.regress import (
    calls_reaching,
    every_path_passes,
    lost_on_every_path,
    matching_node,
)
from analyzer.images import Image
from analyzer.parsing import parse
from analyzer.rule import ReviewContext

ASKS = re.compile(r"userfaultfd_wp")


def flows(source: str) -> dict[str, FunctionFlow]:
    parsed = parse(Image.of(source.encode()))
    context = ReviewContext(None)
    return {f.name: flow_of(f, parsed, context, "mm/demo.c") for f in parsed.functions}


BEFORE = """
static bool dst_wp(struct vm_area_struct *vma)
{
	return userfaultfd_wp(vma);
}

void copy(struct vm_area_struct *dst_vma, pte_t *src, pte_t *dst, pte_t pte)
{
	if (!userfaultfd_wp(dst_vma))
		pte = pte_clear_uffd_wp(pte);
	set_pte_at(mm, addr, dst, pte);
	set_pte_at(mm, addr, src, pte);
}
"""


def test_a_check_on_every_path_lost_on_one() -> None:
    before = flows(BEFORE)["copy"]
    after = flows(BEFORE.replace("if (!userfaultfd_wp(dst_vma))", "if (flag)"))["copy"]

    def works(flow: FunctionFlow) -> list:
        return flow.calls("set_pte_at")

    lost = list(lost_on_every_path(before, after, works, calls_reaching(ASKS)))
    # Both writes were reached only through the question; both lose it.
    assert [syntax.text(node) for node, _ in lost] == [
        "set_pte_at(mm, addr, dst, pte)",
        "set_pte_at(mm, addr, src, pte)",
    ]


def test_a_check_kept_or_moved_into_a_helper_of_the_file_is_not_lost() -> None:
    before = flows(BEFORE)["copy"]
    same = flows(BEFORE.replace("\tset_pte_at(mm, addr, src, pte);\n", ""))["copy"]
    helper = flows(BEFORE.replace("!userfaultfd_wp(dst_vma)", "!dst_wp(dst_vma)"))["copy"]
    for after in (same, helper):
        lost = list(
            lost_on_every_path(before, after, lambda f: f.calls("set_pte_at"), calls_reaching(ASKS))
        )
        assert lost == []


def test_one_path_around_the_check_fails_every_path() -> None:
    flow = flows(
        """
void f(struct vm_area_struct *vma, int fast)
{
	if (fast)
		goto write;
	userfaultfd_wp(vma);
write:
	set_pte_at(mm, addr, dst, pte);
}
"""
    )["f"]
    (write,) = flow.calls("set_pte_at")
    assert not every_path_passes(flow, write, calls_reaching(ASKS)(flow))
    (check,) = flow.calls("userfaultfd_wp")
    assert every_path_passes(flow, check, calls_reaching(ASKS)(flow))


def test_nodes_match_by_callee_arguments_and_occurrence() -> None:
    before = flows("void f(void) { a(x); b(y); a(x); }")["f"]
    after = flows("void f(void) { b(y); a(x); c(); a(x); }")["f"]
    old, new = before.calls("a"), after.calls("a")
    assert matching_node(old, new, new[1]) == old[1]
    # Arguments changed: the callee's occurrence decides when counts agree.
    renamed = flows("void f(void) { a(z); b(y); a(x); }")["f"].calls("a")
    assert matching_node(old, renamed, renamed[0]) == old[0]
    assert matching_node(old, new, flows("void f(void) { d(); }")["f"].calls("d")[0]) is None


def test_swap_form_constructors_keep_their_kind() -> None:
    assert constructed_kinds("swp_entry_to_pte") == {MIGRATION, SWAP, MARKER, "device"}
    assert constructed_kinds("make_pte_marker") == {MARKER}
    assert constructed_kinds("pte_swp_mkuffd_wp") == constructed_kinds("swp_entry_to_pte")
    assert constructed_kinds("pte_mkuffd_wp") is None
    flow = flows(
        """
void f(pte_t *ptep, swp_entry_t swp, int cow)
{
	pte_t entry = ptep_get(ptep);

	if (is_swap_pte(entry)) {
		if (cow)
			entry = swp_entry_to_pte(swp);
		use(entry);
	}
}
"""
    )["f"]
    (use,) = flow.calls("use")
    kinds = flow.entries().kinds_at(use, syntax.arguments(use)[0])
    assert kinds is not None and "present" not in kinds and MIGRATION in kinds
