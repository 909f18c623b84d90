"""A folio, page, VMA or object used after the put, free or unlock that kept
it alive on that path.

## What it does
Follows, with the flow layer's ownership analysis
(`analyzer/flow/ownership.py`), what keeps each object alive along every
path, and flags the first use of the object (a dereference, a call handed
it or a field of it, a `return` of it) on a path where that is gone:

- the function freed what it allocated (`kfree()`, `kmem_cache_free()`,
  `kobject_put()` of a kobject it initialised); `kfree_rcu()` waits;
- it dropped the lock that pinned an object it looked up without taking a
  reference: the VMA from `find_vma()`/`vma_lookup()` after
  `mmap_read_unlock()`, the VMA from `lock_vma_under_rcu()` after
  `vma_end_read()`, the page from `vm_normal_page()`/`vm_normal_folio()`/
  `pmd_folio()` after `pte_unmap_unlock()` or the unlock of the PTL, an RCU
  lookup (`rcu_dereference()`, `xa_load()`, `pid_task()`) after
  `rcu_read_unlock()`; or it took a reference under the lock and dropped
  it after the unlock, when nothing else kept the object;
- as a change only (a use the function as it was did not make): it
  dropped a reference it did not take, on an object that is not one of
  its parameters (`put_page(page)` of the page a huge PMD mapped,
  `css_put(wb->blkcg_css)` of the reference a structure held).

A put of a reference the function took (`folio_get()` ... `folio_put()`)
is balanced and leaves the object as alive as it was; a reference taken
before the unlock (the tables' gets, a call named like a get:
`get_object()`, `kref_get_unless_zero()`, or a callee that may take one)
keeps a looked-up object alive past it.  Assigning the name a new object
ends the story.  Tests (`mm/kasan/kasan_test_c.c`, kunit) are not judged:
they free and then touch on purpose.

## Why is this bad?
The put may be the last one: the folio goes back to the allocator (or is
split, migrated, reused as a page table), the VMA is freed by a concurrent
munmap once the mmap lock is dropped, the RCU-protected object by the grace
period the unlock allows.  The use then reads or writes freed memory;
it works in testing because the object usually survives a little longer.

## Example
```c
        folio_remove_rmap_pmd(folio, page, vma);
        folio_put(folio);               /* the PMD's reference */
        add_mm_counter(mm, mm_counter_file(folio), -HPAGE_PMD_NR);
```

## Use instead
```c
        folio_remove_rmap_pmd(folio, page, vma);
        add_mm_counter(mm, mm_counter_file(folio), -HPAGE_PMD_NR);
        folio_put(folio);
```

## Known problems
Reference counts are not counted: a put of a reference the function did
not take is judged only as a change, and never for a parameter's object
(the caller holds one across the call).  The function's name for the
object must be the same at the release and at the use (aliases through
assignment are followed, other objects' fields are not).  Locks dropped by
callees, and objects kept alive by other locks the function still holds,
are not known.  A tracepoint handed the object counts as a use.

## References
- 8d878059924f ("mm/huge_memory: update file PMD counter before
  folio_put()", Yin Tirui; Fixes: fadae2953072), `__split_huge_pmd_locked()`
  read `mm_counter_file()` of the folio whose PMD reference it had just put,
  https://lore.kernel.org/20260526101337.1984081-1-yintirui@huawei.com
- "mm: khugepaged: fix folio is used after folio_put/unlock()" and "mm:
  khugepaged: fix folio is used after pte_unmap_unlock()" (the 6.1 stable
  backports are f6ad7908f728 and 0782667f9158).
- "mm: blk-cgroup: fix use-after-free in cgwb_release_workfn()" (Breno
  Leitao), `blkcg_unpin_online()` after `css_put()` of the blkcg css.
- "mm/hugetlb: fix use-after-free of a new anon folio".
- "mm/kmemleak: fix UAF bug in kmemleak_scan()" (an object used after the
  RCU read lock that pinned it was dropped for `cond_resched()`).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow, vocabulary
from analyzer.flow import events as ev
from analyzer.flow import ownership as own
from analyzer.flow.values import Analysis, State, Value
from analyzer.patterns import regex
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

TRIGGERS = frozenset(own.RELEASES) | frozenset(own.PINS)
_TEST_PATH = regex(r"(^|/)tests?/|kunit|_test\w*\.[ch]$|(^|/)test_\w+\.c$")
# Stores to their first argument.
_STORES = frozenset({"WRITE_ONCE", "rcu_assign_pointer", "smp_store_release", "atomic_long_set"})
# Calls that only compute with the pointer, never reach through it.
_POINTER_ONLY = frozenset(
    {"IS_ERR", "IS_ERR_OR_NULL", "PTR_ERR", "ERR_CAST", "page_to_pfn", "folio_pfn", "virt_to_pfn"}
)


class UseAfterPut(FunctionRule):
    id = "USE_AFTER_PUT"
    severity = Severity.WARNING
    summary = "a folio, page, VMA or object used after the put, free or unlock that kept it alive"
    paths = vocabulary.MM_CODE

    def applies_to(self, path: str, uses: Callable[[str], bool] = lambda api: False) -> bool:
        # Tests free and then touch on purpose (KASAN, KMSAN, kunit).
        if _TEST_PATH.search(path):
            return False
        return super().applies_to(path, uses)

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        if not _worth_following(flow):
            return
        analysis = own.ownership(flow)
        if not analysis.complete:
            return
        # A put of a reference the function did not take is judged only as
        # a change: whether it was the last one (the page table's, the
        # structure's) or one of several (the caller still holds its own)
        # is beyond the analysis, and the code as it stands had its reasons.
        before = change.before_flow
        dropped_before = functools.cache(lambda: _dropped_before(before))
        for name, node, killer in _first_uses(analysis, own.DROPPED if before else None):
            if str(killer).startswith(own.DROPPED):
                key = _key(analysis, name, node, killer)
                if (old := dropped_before())[key] > 0:
                    old[key] -= 1
                    continue
            yield self._finding(change, analysis, name, node, killer)

    def _finding(
        self, change: FunctionChange, analysis: Analysis, name: str, node: Node, killer: Value
    ) -> Finding:
        kind, _, site = str(killer).partition(":")
        what = {
            own.FREED: "freed it",
            own.LAST: (
                "dropped the reference that alone kept it alive (the lock it was looked up "
                "under was dropped before)"
            ),
        }.get(kind, "dropped the reference that kept it alive")
        call = analysis.graph.nodes_by_id.get(int(site)) if site.isdigit() else None
        callee = (syntax.call_name(call) if call is not None else None) or "the release"
        line = change.after.image.real_line(call.start_point.row) if call is not None else 0
        if kind == own.UNPINNED:
            why = (
                f"{callee}() on line {line} dropped the lock that kept it alive (it was looked "
                f"up under it, and no reference was taken)"
            )
        else:
            why = f"{callee}() on line {line} {what}"
        message = (
            f"{name} is used after {why}: use it before the put or unlock, or take a reference "
            "first"
        )
        key = _key(analysis, name, node, killer)
        return change.finding(node, message, Confidence.MEDIUM, key=key)


def _worth_following(flow: FunctionFlow) -> bool:
    """Is anything released (or unlocked) used again afterwards, in the
    text or around a loop?  A cheap look before the analysis."""
    body = flow.function.body
    if body is None:
        return False
    releases = flow.calls(TRIGGERS)
    if not releases:
        return False
    text = body.text or b""
    base = body.start_byte
    names: set[bytes] = set()
    for call in flow.calls(frozenset(own.PINS)):
        names.update(d.split("->")[0].split(".")[0].encode() for d in ev.destinations(call))
    for call in releases:
        name = syntax.call_name(call) or ""
        if syntax.enclosing(call, "for_statement", "while_statement", "do_statement"):
            return True  # a use earlier in the loop runs after it
        if name in own.RELEASES:
            for argument in syntax.arguments(call):
                obj = own.object_of(argument)
                if obj is not None:
                    names.add(obj.split("->")[0].split(".")[0].encode())
        after = text[call.end_byte - base :]
        if any(re.search(rb"\b" + re.escape(n) + rb"\b", after) for n in names if n):
            return True
    return False


def _first_uses(analysis: Analysis, dropped: str | None) -> Iterator[tuple[str, Node, Value]]:
    """The first use of each object after its release (the rest follow
    from it); uses after a dropped reference only when `dropped` is given."""
    reported: set[str] = set()
    for name, node, killer in uses_after_release(analysis):
        if str(killer).startswith(own.DROPPED) and dropped is None:
            continue
        if name in reported:
            continue
        reported.add(name)
        yield name, node, killer


def _dropped_before(before: FunctionFlow | None) -> Counter[str]:
    """The puts of references it did not take the function as it was made
    (by key): analysed only once the function as it is makes one."""
    if before is None or not before.calls(TRIGGERS):
        return Counter()
    previous = own.ownership(before)
    if not previous.complete:
        return Counter()
    return Counter(
        _key(previous, name, node, killer)
        for name, node, killer in _first_uses(previous, own.DROPPED)
    )


def _key(analysis: Analysis, name: str, node: Node, killer: Value) -> str:
    _, _, site = str(killer).partition(":")
    call = analysis.graph.nodes_by_id.get(int(site)) if site.isdigit() else None
    callee = (syntax.call_name(call) if call is not None else None) or "the release"
    return f"{callee}:{syntax.node_key(node)}"


def uses_after_release(analysis: Analysis) -> Iterator[tuple[str, Node, Value]]:
    """(object, the use, what released it) for each use of an object on a
    path where it is no longer alive."""
    seen: set[int] = set()
    for _point, event, state, _results in analysis.states():
        for name, node in _uses(event):
            released = _released(state, name)
            if released is None or node.id in seen:
                continue
            seen.add(node.id)
            yield name, node, released


def _uses(event: ev.Event) -> Iterator[tuple[str, Node]]:
    if isinstance(event, ev.Deref):
        name = ev.place(event.pointer)
        if name is not None:
            yield name, event.node
    elif isinstance(event, ev.Call) and event.name:
        if event.name in own.RELEASES or event.name in _POINTER_ONLY:
            return
        for index, argument in enumerate(event.arguments):
            if index == 0 and event.name in _STORES:
                continue  # WRITE_ONCE(ms->usage, NULL) writes the pointer itself
            target = ev.address_of(argument)
            if target is not None and "->" not in target and "." not in target:
                continue  # `&page`: where the callee stores a new pointer
            for name in {own.object_of(argument), ev.place(argument)}:
                if name is not None:
                    yield name, event.node
    elif isinstance(event, ev.Return) and event.value is not None:
        name = ev.place(event.value)
        if name is not None:
            yield name, event.node


def _released(state: State, name: str) -> Value | None:
    values = state.places.get(f"{name}->@live")
    if not values or not own.on_this_path(state, values, {own.RELEASED}):
        return None
    return next(iter(values))


RULE = UseAfterPut
