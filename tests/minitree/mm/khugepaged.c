// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel-style collapse paths for mm-review's tests (written for mm-review).
 */
#include <linux/mm.h>
#include <linux/userfaultfd_k.h>

enum scan_result {
	SCAN_SUCCEED,
	SCAN_FAIL,
	SCAN_PTE_UFFD_WP,
	SCAN_VMA_CHECK,
};

static void demo_retract_one(struct vm_area_struct *vma, pmd_t *pmd,
			     unsigned long addr)
{
	struct mm_struct *mm = vma->vm_mm;
	spinlock_t *pml, *ptl;
	pmd_t pgt_pmd;

	if (READ_ONCE(vma->anon_vma))
		return;
	if (userfaultfd_wp(vma))
		return;

	pml = pmd_lock(mm, pmd);
	ptl = pte_lockptr(mm, pmd);
	if (ptl != pml)
		spin_lock_nested(ptl, SINGLE_DEPTH_NESTING);

	if (unlikely(vma->anon_vma || userfaultfd_wp(vma))) {
		if (ptl != pml)
			spin_unlock(ptl);
		spin_unlock(pml);
		return;
	}
	pgt_pmd = pmdp_collapse_flush(vma, addr, pmd);
	pmdp_get_lockless_sync();
	if (ptl != pml)
		spin_unlock(ptl);
	spin_unlock(pml);

	mm_dec_nr_ptes(mm);
	pte_free_defer(mm, pmd_pgtable(pgt_pmd));
}

static int demo_scan_pmd(struct vm_area_struct *vma, pte_t *pte,
			 unsigned long address)
{
	int i;

	for (i = 0; i < HPAGE_PMD_NR; i++, pte++) {
		pte_t pteval = ptep_get(pte);

		if (pte_none(pteval))
			continue;
		if (pte_uffd_wp(pteval))
			return SCAN_PTE_UFFD_WP;
	}
	return SCAN_SUCCEED;
}
