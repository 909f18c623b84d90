/* SPDX-License-Identifier: GPL-2.0 */
/* Declarations shaped like the kernel's, for mm-review's tests. */
#ifndef _LINUX_PGTABLE_H
#define _LINUX_PGTABLE_H

static inline spinlock_t *pte_lockptr(struct mm_struct *mm, pmd_t *pmd);
static inline spinlock_t *ptep_lockptr(struct mm_struct *mm, pte_t *pte);
static inline spinlock_t *pmd_lockptr(struct mm_struct *mm, pmd_t *pmd);
pte_t *__pte_offset_map_lock(struct mm_struct *mm, pmd_t *pmd,
			     unsigned long addr, spinlock_t **ptlp);

#endif /* _LINUX_PGTABLE_H */
