// SPDX-License-Identifier: GPL-2.0
/*
 * A small, kernel-style fault path used by mm-review's tests.  Written for
 * mm-review; it compiles in nobody's kernel.
 */
#include <linux/mm.h>
#include <linux/pgtable.h>

struct demo_ctx {
	struct mm_struct *mm;
	unsigned long flags;
};

static bool demo_must_wait(struct demo_ctx *ctx, unsigned long address,
			   unsigned long reason)
{
	struct mm_struct *mm = ctx->mm;
	pgd_t *pgd;
	pud_t *pud;
	pmd_t *pmd, _pmd;
	bool ret = true;

	mmap_assert_locked(mm);

	pgd = pgd_offset(mm, address);
	if (!pgd_present(*pgd))
		goto out;
	pud = pud_offset(pgd, address);
	if (!pud_present(*pud))
		goto out;
	pmd = pmd_offset(pud, address);
again:
	_pmd = pmdp_get_lockless(pmd);
	if (pmd_none(_pmd))
		goto out;

	ret = false;
	if (!pmd_present(_pmd))
		goto out;

	if (pmd_trans_huge(_pmd)) {
		if (!pmd_write(_pmd) && (reason & VM_UFFD_WP))
			ret = true;
		goto out;
	}
out:
	return ret;
}

int demo_handle_fault(struct demo_ctx *ctx, unsigned long address,
		      unsigned long reason)
{
	if (demo_must_wait(ctx, address, reason))
		return VM_FAULT_RETRY;
	return 0;
}

static int demo_count_present(struct mm_struct *mm, pmd_t *pmd,
			      unsigned long start, unsigned long end)
{
	unsigned long addr;
	int present = 0;

	for (addr = start; addr < end; addr += PMD_SIZE, pmd++) {
		pmd_t val = pmdp_get_lockless(pmd);

		if (pmd_none(val))
			continue;
		if (is_pmd_migration_entry(val)) {
			pmd_migration_entry_wait(mm, pmd);
			continue;
		}
		if (!pmd_present(val))
			continue;
		present++;
	}
	return present;
}
