"""What kernel functions return when they fail: NULL, an ERR_PTR(), or either.

A table a reviewer knows by heart (lookups return NULL when nothing is
there, allocators NULL when memory is short, `memdup_user()` and
`kthread_create()` an error pointer), with the changes of kernel versions
(`__filemap_get_folio()` and its wrappers return `ERR_PTR(-ENOENT)` instead
of NULL since v6.3), and a `Nullness` tracker that follows those results
along paths.  An allocation with `__GFP_NOFAIL` does not fail; one whose
mask cannot be read still may.

Functions of the tree under review are answered by their summaries
(`FunctionFlow.summaries`); the table is for the ones defined in other
`.c` files, which summaries cannot see.
"""

from __future__ import annotations

from collections.abc import Callable

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow import vocabulary
from analyzer.flow.nullness import MAY_EITHER, MAY_ERR, MAY_FAIL, Nullness
from analyzer.flow.sleeping import ALLOCATORS, DIRECT_RECLAIM, gfp_value
from analyzer.flow.values import Analysis, Kinds, State, Value

# Lookups that find nothing, and allocators, return NULL.
NULL_ON_FAILURE = frozenset(
    {
        # VMAs and vmalloc areas
        "find_vma",
        "vma_lookup",
        "find_vma_intersection",
        "find_extend_vma",
        "find_vm_area",
        "find_vmap_area",
        "get_vm_area",
        "get_vm_area_caller",
        "__get_vm_area_caller",
        # the page cache, xarrays, radix trees and idrs
        "find_get_page",
        "find_lock_page",
        "find_get_page_flags",
        "pagecache_get_page",
        "grab_cache_page_write_begin",
        "xa_load",
        "radix_tree_lookup",
        "idr_find",
        # memory and tasks
        "pfn_to_online_page",
        "get_task_mm",
        "find_get_task_by_vpid",
        "get_pid_task",
        "kobject_create_and_add",
        "kset_create_and_add",
        "alloc_workqueue",
        # allocators
        *ALLOCATORS,
        *vocabulary.VMALLOCS,
        "kmem_cache_create",
        "mempool_create",
        "alloc_percpu",
        "__alloc_percpu",
    }
)
# Calls that return an error pointer and never NULL.
ERR_ON_FAILURE = frozenset(
    {
        "memdup_user",
        "memdup_user_nul",
        "vmemdup_user",
        "strndup_user",
        "kthread_create",
        "kthread_run",
        "kthread_create_on_node",
        "filp_open",
        "file_open_root",
        "shmem_file_setup",
        "shmem_kernel_file_setup",
        "shmem_file_setup_with_mnt",
        "anon_inode_getfile",
        "shmem_read_folio",
        "shmem_read_mapping_page",
        "shmem_read_mapping_page_gfp",
        "read_cache_folio",
        "read_mapping_folio",
        "read_cache_page",
        "read_mapping_page",
        "mapping_read_folio_gfp",
    }
)
# Both.
EITHER_ON_FAILURE = frozenset({"follow_page", "get_user_page_vma_remote"})
# Calls whose failure value changed with a kernel version:
# (since, before it, from it on).
VERSIONED: dict[str, tuple[tuple[int, int], Kinds, Kinds]] = {
    # 66dabbb65d67 ("mm: return an ERR_PTR from __filemap_get_folio"), v6.3
    name: ((6, 3), MAY_FAIL, MAY_ERR)
    for name in (
        "__filemap_get_folio",
        "filemap_get_folio",
        "filemap_lock_folio",
        "filemap_grab_folio",
    )
}
# (The wrappers are static inlines of the tree, but their summaries cannot
# see through `__filemap_get_folio()`, which mm/filemap.c defines.)


def failure_kinds(version: tuple[int, int] | None) -> dict[str, Kinds]:
    """What each known call may return, in a tree of `version` (None: no
    tree; the version-dependent calls are then not known)."""
    table: dict[str, Kinds] = dict.fromkeys(NULL_ON_FAILURE, MAY_FAIL)
    table.update(dict.fromkeys(ERR_ON_FAILURE, MAY_ERR))
    table.update(dict.fromkeys(EITHER_ON_FAILURE, MAY_EITHER))
    if version is not None:
        for name, (since, before, after) in VERSIONED.items():
            table[name] = after if version >= since else before
    return table


def never_fails(call: Node) -> bool:
    """An allocation with `__GFP_NOFAIL`, or a `mempool_alloc()` that may
    sleep (it waits for an element instead of failing)."""
    name = syntax.call_name(call) or ""
    index = ALLOCATORS.get(name)
    if index is None:
        return False
    arguments = syntax.arguments(call)
    if index >= len(arguments):
        return False
    mask = gfp_value(arguments[index])
    if mask is None:
        return "__GFP_NOFAIL" in syntax.text(arguments[index])
    return "__GFP_NOFAIL" in mask or (name == "mempool_alloc" and DIRECT_RECLAIM in mask)


class Results(Nullness):
    """`Nullness` over the failure table, with allocations that cannot fail
    left out."""

    name = "results"

    def __init__(
        self,
        sources: dict[str, Kinds],
        returns: Callable[[str], Kinds | None] | None = None,
        predicates: Callable[[str], tuple[Node, list[str]] | None] | None = None,
    ) -> None:
        super().__init__(sources, returns, predicates)

    def call(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        if never_fails(call.node):
            return
        super().call(analysis, state, call, results)
