"""A call that may sleep made where sleeping is not allowed, or a caller's gfp mask ignored.

## What it does
Flags a call that may sleep on a path where the function holds a spinlock
(`spin_lock*()`, `xa_lock*()`, the PTE lock of `pte_offset_map_lock()`, a
`pmd_lock()`), is inside `rcu_read_lock()`, or has disabled preemption or
interrupts, and any such call in a function the kernel runs in atomic
context: the `pte_fn_t` handed to `apply_to_page_range()`, a page walk's
`.pte_entry`, an `on_each_cpu()`/`smp_call_function*()` function, an RCU
callback, a timer callback (found in the function's own file).

A call may sleep when it is a sleeping lock or wait (`mutex_lock()`,
`down_read()`, `folio_lock()`, `wait_for_completion()`, `synchronize_rcu()`,
`cond_resched()`, `might_sleep()`), an allocation that always may
(`vmalloc()`, user copies), an allocation whose gfp mask has
`__GFP_DIRECT_RECLAIM` (`GFP_KERNEL`, `GFP_NOFS`, `GFP_NOIO`, `GFP_USER`,
`GFP_HIGHUSER_MOVABLE`, `GFP_TRANSHUGE`; not `GFP_ATOMIC`, `GFP_NOWAIT`,
`GFP_TRANSHUGE_LIGHT`, nor `GFP_KERNEL & ~__GFP_DIRECT_RECLAIM`), a shrinker's
`->count_objects()`/`->scan_objects()`, or a function of the tree (same file
or an included header) that does one of these itself, two levels deep, with
its gfp parameters bound to what the caller passes.  The mask of a local
`gfp_t` is what every assignment to it gives.

It also flags, in a function that takes a `gfp_t`, an allocation with a
hard-coded sleeping mask instead of the caller's (`kmalloc(n, GFP_KERNEL)`
in `foo(..., gfp_t gfp)`), and a patch that stops passing the caller's mask
to a call that had it.

## Why is this bad?
Sleeping with a spinlock held or preemption disabled is "BUG: sleeping
function called from invalid context" at best and a deadlock at worst: the
CPU may switch to a task that spins on the same lock.  In an RCU read-side
critical section it ends the grace period's guarantee: the objects the
section reads may be freed under it.  Direct reclaim can take locks, do I/O
and wait for writeback, so an allocation that may enter it is a sleeping
call.  A function that takes a gfp mask is telling its callers it will
allocate the way they say: `GFP_NOWAIT` callers are in atomic context,
`GFP_NOFS` ones must not recurse into the filesystem.  Allocating with
`GFP_KERNEL` behind their back brings the sleep (or the recursion) back.

## Example
```c
        spin_lock(&init_mm.page_table_lock);
        page = __get_free_page(GFP_KERNEL);	/* may sleep under a spinlock */
        ...
static int populate_pte(pte_t *ptep, unsigned long addr, void *data)
{
        unsigned long page = __get_free_page(GFP_KERNEL);	/* apply_to_page_range() callback */
        ...
        rcu_read_lock();
        total = shrinker_count_objects(shrinker, memcg, count);	/* ->count_objects() may sleep */
```

## Use instead
Allocate before taking the lock (or before `apply_to_page_range()`, and
hand the pages to the callback, as `kasan_populate_vmalloc()` now does);
drop the RCU read lock around the call, holding a reference on what it
needs; use the caller's mask (`kmalloc(n, gfp)`), or scope it with
`memalloc_nofs_save()`/`memalloc_noio_save()` where a callee cannot take one.

## Known problems
Locks a caller holds are known only when the function says so
(`__must_hold(&lock)`, `lockdep_assert_held(&lock)` of a spinlock) or its
own file hands it to one of the APIs above; a callee annotated
`__releases(lock)` drops the lock.  Other helpers called under a caller's
spinlock are judged as sleepable.  Callees in other `.c` files, and callees whose sleeping call
depends on a parameter (`if (blocking) ...`), are trusted not to sleep.  A
sleeping call guarded by a test of the context (`gfpflags_allow_blocking()`,
`preemptible()`) is the caller's choice.  Under PREEMPT_RT spinlocks sleep,
but sleeping allocations under them remain wrong.

## References
- b6ea95a34cbd ("kasan: avoid sleepable page allocation from atomic
  context"), Alexander Gordeev, v6.15: `kasan_populate_vmalloc_pte()`, an
  `apply_to_page_range()` callback, allocated with `GFP_KERNEL` in lazy MMU
  mode (preemption disabled on s390); the shadow pages are now bulk-allocated
  before the walk.  Fixes: 3c5c3cfb9ef4.
  https://lore.kernel.org/r/c61d3560297c93ed044f0b1af085610353a06a58.1747316918.git.agordeev@linux.ibm.com
- 79357cd06d41 ("mm/vmalloc, mm/kasan: respect gfp mask in
  kasan_populate_vmalloc()"), Uladzislau Rezki: `alloc_vmap_area()` took a
  gfp mask and did not hand it to the KASAN shadow population.
- b902890c62d2 ("mm/shrinker: do not hold RCU lock in
  shrinker_debugfs_count_show()"): `->count_objects()` called under
  `rcu_read_lock()`.
- Documentation/core-api/memory-allocation.rst: `GFP_KERNEL` "implies
  `__GFP_RECLAIM`, which means that direct reclaim may be triggered".
"""

from __future__ import annotations

from collections.abc import Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import FunctionFlow, vocabulary
from analyzer.flow import events as ev
from analyzer.flow.locks import held_on_entry
from analyzer.flow.sleeping import (
    ALLOCATORS,
    NO_SLEEP_CLASSES,
    Sleepers,
    atomic_callback_contexts,
    context_guarded,
    function_masks,
    gfp_value,
    may_block,
    parameters,
)
from analyzer.rule import Confidence, Finding, FunctionChange, FunctionRule, Severity

# Calls that enter atomic context: the pre-filter for the lock analysis.
ATOMIC_ENTRIES = frozenset(
    name
    for name, spec in vocabulary.LOCK_CALLS.items()
    if spec.lock_class in NO_SLEEP_CLASSES and not spec.release
)
_ATOMIC_GUARDS = frozenset(
    name for name, lock_class in vocabulary.GUARD_CLASSES.items() if lock_class in NO_SLEEP_CLASSES
)
_HELD = frozenset({"held"})


class SleepInAtomic(FunctionRule):
    id = "SLEEP_IN_ATOMIC"
    severity = Severity.ERROR
    summary = (
        "a call that may sleep (GFP_KERNEL allocation, mutex, cond_resched, ...) under a "
        "spinlock, RCU or disabled preemption, or a caller's gfp mask ignored"
    )

    def check(self, change: FunctionChange) -> Iterator[Finding]:
        flow = change.flow
        function = change.after
        body = function.body
        if body is None:
            return
        contexts = atomic_callback_contexts(change.after_file, function.name)
        if (
            contexts
            or _enters_atomic(flow)
            or held_on_entry(function, flow.type_of, NO_SLEEP_CLASSES)
        ):
            yield from self._sleeps_in_atomic(change, flow, body, contexts)
        yield from self._ignored_masks(change, flow, body)

    def _sleeps_in_atomic(
        self, change: FunctionChange, flow: FunctionFlow, body: Node, contexts: list[str]
    ) -> Iterator[Finding]:
        sleepers = Sleepers(flow.summaries, change.after.name)
        masks = function_masks(change.after)
        if not contexts and not flow.locks().complete:
            return

        def atomic_at(call: Node) -> tuple[str, str] | None:
            """Why sleeping is not allowed at `call`, and the lock's name."""
            if contexts:
                return f"{change.after.name}() runs in atomic context: {contexts[0]}", "callback"
            held = flow.locks_at(call, NO_SLEEP_CLASSES)
            always = sorted(name for name, kinds in held.items() if kinds == _HELD)
            return (_lock_words(always[0]), always[0]) if always else None

        reported: set[str] = set()
        for call in flow.calls():
            if context_guarded(call, body):
                continue
            # The tables first; a callee's body only where sleeping is not allowed.
            sleep = sleepers.sleeps(call, masks, depth=1)
            if sleep is None and syntax.call_name(call) is None:
                continue
            where = atomic_at(call)
            if where is None:
                continue
            if sleep is None:
                sleep = sleepers.sleeps(call, masks)
                if sleep is None:
                    continue
            key = f"{where[1]}:{sleep.chain[0]}"
            if key in reported:
                continue
            reported.add(key)
            advice = (
                "allocate before the atomic section, or use GFP_NOWAIT/GFP_ATOMIC with a fallback"
                if sleep.allocates
                else "call it outside the atomic section"
            )
            yield change.finding(
                call,
                f"{sleep.describe()} may sleep, but {where[0]}; {advice}",
                Confidence.HIGH if len(sleep.chain) == 1 else Confidence.MEDIUM,
                key=key,
            )

    def _ignored_masks(
        self, change: FunctionChange, flow: FunctionFlow, body: Node
    ) -> Iterator[Finding]:
        gfp_parameters = {name for kind, name in parameters(change.after.node) if "gfp_t" in kind}
        if not gfp_parameters:
            return
        masks = function_masks(change.after)
        dropped = list(self._dropped_masks(change, gfp_parameters))
        yield from (finding for finding, _ in dropped)
        already = {call.id for _, call in dropped}
        for call in flow.calls(ALLOCATORS):
            if call.id in already:
                continue
            index = ALLOCATORS[syntax.call_name(call) or ""]
            arguments = syntax.arguments(call)
            if index >= len(arguments):
                continue
            mask = arguments[index]
            if syntax.identifiers(mask) & gfp_parameters or not may_block(gfp_value(mask, masks)):
                continue
            if context_guarded(call, body):
                continue
            parameter = sorted(gfp_parameters)[0]
            yield change.finding(
                call,
                f"{syntax.call_name(call)}() allocates with {syntax.text(mask)} although the "
                f"caller passed its own mask in '{parameter}': a GFP_NOWAIT/GFP_ATOMIC caller "
                f"may sleep here, a GFP_NOFS/GFP_NOIO one recurse into reclaim; use {parameter}",
                Confidence.MEDIUM,
                key=f"ignored-mask:{syntax.call_name(call)}",
                severity=Severity.WARNING,
            )

    def _dropped_masks(
        self, change: FunctionChange, gfp_parameters: set[str]
    ) -> Iterator[tuple[Finding, Node]]:
        """Calls that were handed the caller's mask before the patch and
        no longer are (with the call)."""
        before = change.before_flow
        if before is None or before.function.body is None:
            return
        before_names = {
            name for kind, name in parameters(before.function.node) if "gfp_t" in kind
        } & gfp_parameters
        if not before_names:
            return
        old_masks = _derived_masks(before.function.body, before_names)
        had: dict[str, int] = {}
        for call in before.calls():
            name = syntax.call_name(call)
            if name and _passes_mask(call, old_masks):
                had[name] = had.get(name, 0) + 1
        if not had:
            return
        body = change.after.body
        assert body is not None
        new_masks = _derived_masks(body, gfp_parameters)
        now: dict[str, list[Node]] = {}
        without: dict[str, list[Node]] = {}
        for call in change.flow.calls(set(had)):
            name = syntax.call_name(call) or ""
            (now if _passes_mask(call, new_masks) else without).setdefault(name, []).append(call)
        for name, count in had.items():
            missing = count - len(now.get(name, []))
            candidates = without.get(name, [])
            if missing <= 0 or not candidates:
                continue
            candidates.sort(key=lambda c: not change.is_added(c))
            parameter = sorted(before_names)[0]
            finding = change.finding(
                candidates[0],
                f"patch stops passing the caller's gfp mask '{parameter}' to {name}(): what it "
                "allocates no longer follows the caller's context (GFP_NOWAIT callers may sleep, "
                "GFP_NOFS ones recurse into the filesystem)",
                Confidence.MEDIUM,
                key=f"dropped-mask:{name}",
                severity=Severity.WARNING,
            )
            yield finding, candidates[0]


def _derived_masks(body: Node, parameters: set[str]) -> set[str]:
    """The gfp parameters and the places that take their value
    (`gfp_t alloc_gfp = gfp | __GFP_NOWARN;`, `pc.flags = gfpflags;`)."""
    found = set(parameters)
    assignments = []
    for node in syntax.walk(body):
        if node.type == "init_declarator":
            target = node.child_by_field_name("declarator")
            while target is not None and target.type == "pointer_declarator":
                target = target.child_by_field_name("declarator")
            assignments.append((ev.place(target), node.child_by_field_name("value")))
        elif node.type == "assignment_expression":
            assignments.append(
                (ev.place(node.child_by_field_name("left")), node.child_by_field_name("right"))
            )
    for _ in range(3):
        for target, value in assignments:
            if target and target not in found and value is not None and _is_mask_of(value, found):
                found.add(target)
    return found


def _is_mask_of(node: Node | None, masks: set[str]) -> bool:
    """Is `node` a mask expression built from one of `masks` (`gfp`,
    `gfp & ~__GFP_NOFAIL`, `current_gfp_context(gfp)`)?"""
    if node is None:
        return False
    node = ev.strip(node)
    name = ev.place(node)
    if name is not None:
        return name in masks
    operator = syntax.text(node.child_by_field_name("operator"))
    if node.type == "binary_expression" and operator in ("|", "&"):
        sides = [node.child_by_field_name("left"), node.child_by_field_name("right")]
        return any(_is_mask_of(side, masks) for side in sides)
    if node.type == "unary_expression" and operator == "~":
        return _is_mask_of(node.child_by_field_name("argument"), masks)
    if node.type == "conditional_expression":
        arms = [node.child_by_field_name(f) for f in ("consequence", "alternative")]
        return any(_is_mask_of(arm, masks) for arm in arms)
    if node.type == "call_expression" and syntax.call_name(node) in _MASK_FILTERS:
        arguments = syntax.arguments(node)
        return bool(arguments) and _is_mask_of(arguments[0], masks)
    return False


# Calls that return the mask they are given, adjusted.
_MASK_FILTERS = frozenset({"current_gfp_context", "gfp_nested_mask"})


def _passes_mask(call: Node, masks: set[str]) -> bool:
    """Does `call` hand on one of `masks` as an argument (not a test of it:
    `unlikely(gfp & __GFP_NOWARN)` allocates nothing)?"""
    name = syntax.call_name(call) or ""
    if name in vocabulary.TRANSPARENT_TESTS or vocabulary.ASSERTIONS.fullmatch(name):
        return False
    return any(_is_mask_of(argument, masks) for argument in syntax.arguments(call))


def _enters_atomic(flow: FunctionFlow) -> bool:
    if flow.calls(ATOMIC_ENTRIES):
        return True
    text = flow.function.node.text or b""
    if b"guard(" not in text:
        return False
    return any(name.encode() in text for name in _ATOMIC_GUARDS)


def _lock_words(lock: str) -> str:
    lock_class, _, name = lock.partition(":")
    if lock_class == "rcu":
        return "it runs under rcu_read_lock()"
    if lock_class == "preempt":
        return "preemption is disabled here"
    if lock_class == "irq":
        return "interrupts are disabled here"
    return f"spinlock {name} is held here"


RULE = SleepInAtomic
