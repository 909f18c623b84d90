"""The kernel's control-flow and locking vocabulary, as data.

Tables a reviewer would recite: which calls never return, which macros only
pass a condition through, which take and drop which kind of lock.  Rules add
their own tables (what a call returns, what it tests); these are the ones
the flow layer itself needs to build paths and lock sets.
"""

from __future__ import annotations

from analyzer.patterns import regex
from analyzer.records import Record

# Configurations the lessons assume built: `#ifdef` blocks on them are taken.
ASSUMED_CONFIGS = frozenset(
    {
        "CONFIG_TRANSPARENT_HUGEPAGE",
        "CONFIG_PGTABLE_HAS_HUGE_LEAVES",
        "CONFIG_ARCH_ENABLE_THP_MIGRATION",
        "CONFIG_MIGRATION",
    }
)
# Calls after which the path ends (not in a return: nothing leaks on it).
NORETURN = frozenset(
    {
        "BUG",
        "panic",
        "unreachable",
        "__builtin_unreachable",
        "do_exit",
        "kthread_exit",
        "make_task_dead",
    }
)
# `BUG_ON(cond);` dies when cond holds.  VM_BUG_ON*() is compiled out without
# CONFIG_DEBUG_VM, so code after it may not rely on it: no branch.
ASSERT_CRASH = frozenset({"BUG_ON"})
# Calls whose value is their first argument's truth: in a condition they are
# that condition (`if (WARN_ON_ONCE(!pte)) return;` leaves when pte is NULL).
TRANSPARENT_TESTS = frozenset(
    {
        "likely",
        "unlikely",
        "WARN_ON",
        "WARN_ON_ONCE",
        "WARN",
        "WARN_ONCE",
        "WARN_ON_SMP",
        "VM_WARN_ON",
        "VM_WARN_ON_ONCE",
        "VM_WARN_ONCE",
        "data_race",
    }
)
# Assertions used as statements: they test, but nothing bails out.
ASSERTIONS = regex(r"(?:VM_)?(?:BUG|WARN)(?:_ON)?(?:_ONCE)?(?:_[A-Z]+)*|BUILD_BUG_ON\w*")
# `NAME(...) { ... }` blocks that run once holding a lock.
SCOPED_GUARDS = frozenset({"scoped_guard", "scoped_cond_guard"})
# `NAME(...) { ... }` blocks that iterate (the ones the sanitizer does not
# already turn into `while`).
LOOP_MACRO = regex(r"for_?each|_foreach")


class LockCall(Record):
    """How a call takes or drops a lock: which argument names it (or -1: the
    lock is what the call returns), which class of lock, whether it is taken
    only when the call's result is true / non-NULL, and whether it is
    released."""

    lock_class: str
    argument: int
    release: bool = False
    # Taken only when the result is non-NULL / true (trylocks, lookups).
    conditional: bool = False
    # The name is fixed (rcu, preemption) rather than read from an argument.
    fixed: str | None = None
    # A lock that is not a spinlock: sleeping under it is allowed.
    sleepable: bool = False


def _spin(argument: int = 0, release: bool = False, conditional: bool = False) -> LockCall:
    return LockCall("spin", argument, release, conditional)


LOCK_CALLS: dict[str, LockCall] = {
    **{
        name: _spin()
        for name in (
            "spin_lock",
            "spin_lock_irq",
            "spin_lock_bh",
            "spin_lock_irqsave",
            "spin_lock_nested",
            "raw_spin_lock",
            "raw_spin_lock_irq",
            "raw_spin_lock_irqsave",
            "read_lock",
            "read_lock_irq",
            "read_lock_irqsave",
            "write_lock",
            "write_lock_irq",
            "write_lock_irqsave",
            "xa_lock",
            "xa_lock_irq",
            "xa_lock_irqsave",
            "xa_lock_bh",
            "xas_lock",
            "xas_lock_irq",
            "xas_lock_irqsave",
            "xas_lock_bh",
            "lock_page_lruvec_irq",
        )
    },
    **{
        name: _spin(release=True)
        for name in (
            "spin_unlock",
            "spin_unlock_irq",
            "spin_unlock_bh",
            "spin_unlock_irqrestore",
            "raw_spin_unlock",
            "raw_spin_unlock_irq",
            "raw_spin_unlock_irqrestore",
            "read_unlock",
            "read_unlock_irq",
            "read_unlock_irqrestore",
            "write_unlock",
            "write_unlock_irq",
            "write_unlock_irqrestore",
            "xa_unlock",
            "xa_unlock_irq",
            "xa_unlock_irqrestore",
            "xa_unlock_bh",
            "xas_unlock",
            "xas_unlock_irq",
            "xas_unlock_irqrestore",
            "xas_unlock_bh",
        )
    },
    **{name: _spin(conditional=True) for name in ("spin_trylock", "raw_spin_trylock")},
    # The page-table locks.
    "pmd_lock": _spin(-1),
    "pud_lock": _spin(-1),
    "huge_pte_lock": _spin(-1),
    "pmd_trans_huge_lock": _spin(-1, conditional=True),
    "pud_trans_huge_lock": _spin(-1, conditional=True),
    "pte_offset_map_lock": _spin(3, conditional=True),
    "__pte_offset_map_lock": _spin(3, conditional=True),
    "pte_alloc_map_lock": _spin(3, conditional=True),
    "pte_unmap_unlock": _spin(1, release=True),
    # Sleeping locks.
    **{
        name: LockCall("mutex", 0, sleepable=True)
        for name in ("mutex_lock", "mutex_lock_nested", "mutex_lock_killable")
    },
    "mutex_unlock": LockCall("mutex", 0, release=True, sleepable=True),
    "mutex_trylock": LockCall("mutex", 0, conditional=True, sleepable=True),
    **{
        name: LockCall("rwsem", 0, sleepable=True)
        for name in ("down_read", "down_write", "down_read_nested", "down_write_nested")
    },
    **{
        name: LockCall("rwsem", 0, release=True, sleepable=True) for name in ("up_read", "up_write")
    },
    **{
        name: LockCall("rwsem", 0, conditional=True, sleepable=True)
        for name in ("down_read_trylock", "down_write_trylock")
    },
    **{
        name: LockCall("mmap", 0, sleepable=True)
        for name in (
            "mmap_read_lock",
            "mmap_write_lock",
            "mmap_assert_locked",
            "mmap_assert_write_locked",
        )
    },
    **{
        name: LockCall("mmap", 0, release=True, sleepable=True)
        for name in ("mmap_read_unlock", "mmap_write_unlock")
    },
    **{
        name: LockCall("mmap", 0, conditional=True, sleepable=True)
        for name in ("mmap_read_trylock", "mmap_write_trylock")
    },
    "lock_vma_under_rcu": LockCall("vma", -1, conditional=True, sleepable=True),
    "vma_end_read": LockCall("vma", 0, release=True, sleepable=True),
    **{
        name: LockCall("i_mmap", 0, sleepable=True)
        for name in ("i_mmap_lock_read", "i_mmap_lock_write")
    },
    **{
        name: LockCall("i_mmap", 0, release=True, sleepable=True)
        for name in ("i_mmap_unlock_read", "i_mmap_unlock_write")
    },
    **{
        name: LockCall("folio", 0, sleepable=True)
        for name in ("folio_lock", "lock_page", "__folio_lock")
    },
    **{
        name: LockCall("folio", 0, release=True, sleepable=True)
        for name in ("folio_unlock", "unlock_page")
    },
    **{
        name: LockCall("folio", 0, conditional=True, sleepable=True)
        for name in ("folio_trylock", "trylock_page")
    },
    # Atomic sections with no lock object.
    "rcu_read_lock": LockCall("rcu", 0, fixed="rcu"),
    "rcu_read_unlock": LockCall("rcu", 0, release=True, fixed="rcu"),
    "preempt_disable": LockCall("preempt", 0, fixed="preempt"),
    "preempt_enable": LockCall("preempt", 0, release=True, fixed="preempt"),
    "local_irq_disable": LockCall("irq", 0, fixed="irq"),
    "local_irq_enable": LockCall("irq", 0, release=True, fixed="irq"),
    "local_irq_save": LockCall("irq", 0, fixed="irq"),
    "local_irq_restore": LockCall("irq", 0, release=True, fixed="irq"),
    "pagefault_disable": LockCall("pagefault", 0, fixed="pagefault"),
    "pagefault_enable": LockCall("pagefault", 0, release=True, fixed="pagefault"),
}
# guard(NAME)(args) / scoped_guard(NAME, args): which class NAME takes.
GUARD_CLASSES: dict[str, str] = {
    "spinlock": "spin",
    "spinlock_irq": "spin",
    "spinlock_irqsave": "spin",
    "raw_spinlock": "spin",
    "raw_spinlock_irq": "spin",
    "raw_spinlock_irqsave": "spin",
    "mutex": "mutex",
    "rwsem_read": "rwsem",
    "rwsem_write": "rwsem",
    "rcu": "rcu",
    "preempt": "preempt",
    "irq": "irq",
    "irqsave": "irq",
}
# Classes under which the CPU may not sleep.
ATOMIC_CLASSES = frozenset({"spin", "rcu", "preempt", "irq", "pagefault"})
# Lock classes under which sleeping is a bug.
NO_SLEEP_CLASSES = ATOMIC_CLASSES - {"pagefault"}


# vmalloc and its kin: they return NULL on failure and may always sleep.
VMALLOCS = frozenset(
    {
        "vmalloc",
        "vzalloc",
        "vmalloc_node",
        "vzalloc_node",
        "vmalloc_user",
        "vmalloc_32",
        "vmap",
        "vm_map_ram",
    }
)


# mm code, and the mm code that lives elsewhere: where the lifetime rules look.
MM_CODE = (
    "mm/*",
    "include/linux/*",
    "fs/userfaultfd.c",
    "fs/proc/task_mmu.c",
    "fs/dax.c",
    "kernel/fork.c",
    "kernel/events/uprobes.c",
)
