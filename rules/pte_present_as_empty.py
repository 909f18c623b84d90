"""`!pte_present()` used where "nothing is mapped" is meant.

## What it does
The PTE side of PMD_PRESENT_AS_EMPTY.  Flags, with high confidence, a patch
that replaces an emptiness test of a PTE value (`pte_none()`,
`pte_none_mostly()`, `huge_pte_none()`, `huge_pte_none_mostly()`) by a
presence test of the same polarity: `pte_none(x)` becoming `!pte_present(x)`,
or `!pte_none(x)` becoming `pte_present(x)`.  Silent where both agree: where
no path to the new test can bring a swap, migration or device entry or a
marker (an earlier exit or an else-if on `!pte_present()`, `is_swap_pte()`,
`is_pte_marker()`), where the old and the new condition hold for the same
kinds of entry, and for kernel page tables.

With medium confidence it also flags a waiting decision taken on
`!pte_present(x)` in a function deciding whether to wait, when the function
never asks whether that value is none.

## Why is this bad?
A non-present PTE is not necessarily empty: it may hold a swap entry, a
migration entry, a device-private entry, or a PTE marker (uffd-wp, poisoned,
guard).  Code that treats `!pte_present()` as "nothing mapped" waits for
userspace to fill a page that is only swapped out or being migrated, or
installs a new page over the entry and leaks or corrupts what it stood for
(swap slot references, uffd-wp protection).  The reverse swap,
`!pte_none()` becoming `pte_present()` in front of an install, lets the
install overwrite such an entry.

## Example
```c
        ptent = ptep_get(pte);
        if (!pte_present(ptent))	/* swap and migration entries too */
                ret = true;		/* ... wait for userspace */
```

## Use instead
```c
        ptent = ptep_get(pte);
        if (pte_none_mostly(ptent))	/* empty, or only a uffd-wp marker */
                ret = true;
```

## References
- a365ac09d334 ("mm, userfaultfd, THP: avoid waiting when PMD under THP migration"),
  https://lore.kernel.org/all/20171103075231.25416-1-ying.huang@intel.com/
  (the PMD form of the lesson; Andrea Arcangeli,
  https://lore.kernel.org/all/20171106203527.GB26645@redhat.com/)
- 24bf08c4376b ("mm/userfaultfd: fix uffd-wp handling for THP migration entries"):
  non-present entries carry state (uffd-wp) that must survive
"""

from __future__ import annotations

from analyzer.flow.entries import DEVICE, MARKER, MIGRATION, SWAP
from rules.pmd_present_as_empty import PmdPresentAsEmpty


class PtePresentAsEmpty(PmdPresentAsEmpty):
    id = "PTE_PRESENT_AS_EMPTY"
    summary = "!pte_present() is not pte_none(): swap, migration entries and markers are not empty"
    api = r"\b(?:huge_)?pte_(?:none|present)\w*\b"

    level = "PTE"
    none_tests = frozenset({"pte_none", "pte_none_mostly", "huge_pte_none", "huge_pte_none_mostly"})
    primary_none = "pte_none"
    present_test = "pte_present"
    not_empty = "a swap or migration entry (or a PTE marker)"
    not_empty_kinds = frozenset({SWAP, MIGRATION, DEVICE, MARKER})
    handle_hint = "handle swap entries and markers apart"


RULE = PtePresentAsEmpty
