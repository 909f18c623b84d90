"""LOCK_HELPER_ARG_TYPE reads the helpers' declarations from the tree as the
patch leaves it: a tree that changes a signature is followed, with no change
to the rule."""

from __future__ import annotations

import json

from tests.conftest import Tree, mmreview

CALLER = """
static void demo_lock_table(struct mm_struct *mm, pmd_t *pmd, unsigned long addr)
{
	pte_t *pte = pte_offset_map(pmd, addr);
	spinlock_t *ptl;

	if (!pte)
		return;
	ptl = pte_lockptr(mm, pmd);
	spin_lock(ptl);
	spin_unlock(ptl);
	pte_unmap(pte);
}
"""
OLD_DECLARATION = "pte_lockptr(struct mm_struct *mm, pmd_t *pmd);"
NEW_DECLARATION = "pte_lockptr(struct mm_struct *mm, pte_t *pte);"


def _findings(tree: Tree, *args: str, context: int = 3) -> list[dict]:
    result = mmreview(
        "check",
        "-",
        *args,
        "--select",
        "LOCK_HELPER_ARG_TYPE",
        "-f",
        "json",
        input=tree.format_patch("-1", f"-U{context}"),
    )
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["findings"]


def _with_caller(tree: Tree) -> None:
    with open(tree.path / "mm/fault.c", "a") as handle:
        handle.write(CALLER)
    tree.commit("mm/demo: lock a page table")


def test_signature_change_is_followed(minitree: Tree) -> None:
    _with_caller(minitree)
    minitree.edit("include/linux/pgtable.h", OLD_DECLARATION, NEW_DECLARATION)
    minitree.edit("mm/fault.c", "ptl = pte_lockptr(mm, pmd);", "ptl = pte_lockptr(mm, pte);")
    minitree.commit("mm: pte_lockptr() takes the PTE pointer")

    assert _findings(minitree, "--tree", str(minitree.path)) == []
    # Without the tree only Linux 6.12's signature is known: the converted
    # caller looks wrong, and says how sure it is.  (The patch alone shows
    # the local's declaration only with more context lines.)
    assert _findings(minitree) == []
    [finding] = _findings(minitree, context=10)
    assert finding["source_line"].strip() == "ptl = pte_lockptr(mm, pte);"
    assert finding["confidence"] in ("LOW", "MEDIUM")
    assert "per Linux 6.12" in finding["message"]


def test_call_left_behind_by_a_signature_change_is_flagged(minitree: Tree) -> None:
    _with_caller(minitree)
    minitree.edit("include/linux/pgtable.h", OLD_DECLARATION, NEW_DECLARATION)
    minitree.edit("mm/fault.c", "spin_lock(ptl);", "spin_lock(ptl);\n\tptl = pte_lockptr(mm, pmd);")
    minitree.commit("mm: pte_lockptr() takes the PTE pointer, one caller forgotten")

    findings = _findings(minitree, "--tree", str(minitree.path))
    assert [(f["function"], f["confidence"]) for f in findings] == [("demo_lock_table", "HIGH")]
    assert "per include/linux/pgtable.h" in findings[0]["message"]
    assert "'pmd' is pmd_t *" in findings[0]["message"]
