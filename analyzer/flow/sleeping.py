"""What may sleep, and where sleeping is not allowed.

The vocabulary a reviewer recites for "sleeping function called from
invalid context": calls that always may block (sleeping locks, waits,
`cond_resched()`, `vmalloc()`, user copies), allocations whose gfp mask
allows direct reclaim (`__GFP_DIRECT_RECLAIM`: `GFP_KERNEL` and friends,
not `GFP_ATOMIC`, `GFP_NOWAIT` or `GFP_TRANSHUGE_LIGHT`), callbacks reached
through a method pointer the kernel itself never calls in atomic context
(shrinker `count_objects`/`scan_objects`), and functions of the tree that
do one of these themselves (two call levels deep, their gfp parameters
bound to what the caller passes).

Atomic context is what `locks.py` says is held (spinlocks, the PTE lock,
`rcu_read_lock()`, disabled preemption or interrupts) plus the callbacks
the kernel runs in atomic context: the `pte_fn_t` of
`apply_to_page_range()` (under the PTE lock, or in lazy MMU mode for
init_mm), the `pte_entry` of a page walk (under the PTE lock), functions
run by `on_each_cpu()`/`smp_call_function*()` (interrupt context) and
RCU callbacks (softirq).  `pagefault_disable()` is not atomic for this
purpose: it only makes user copies fail instead of faulting.

A gfp mask is evaluated as a set of `__GFP_*` flags: `|` unites, `& ~`
removes, a local variable holds what every assignment to it gives, and a
parameter is unknown (the caller decides).  Unknown is never "sleeps".
A call guarded by a test of the calling context (`gfpflags_allow_blocking()`,
`preemptible()`, `in_atomic()`) or by a test of a parameter inside a callee
is taken to be the caller's choice, not a sleep.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow import vocabulary
from analyzer.flow.locks import lock_name
from analyzer.parsing import Function, ParsedFile
from analyzer.records import Record

DIRECT_RECLAIM = "__GFP_DIRECT_RECLAIM"
_KSWAPD = "__GFP_KSWAPD_RECLAIM"
_RECLAIM = frozenset({DIRECT_RECLAIM, _KSWAPD})
_TRANSHUGE_LIGHT = frozenset(
    {
        "__GFP_IO",
        "__GFP_FS",
        "__GFP_HARDWALL",
        "__GFP_HIGHMEM",
        "__GFP_MOVABLE",
        "__GFP_COMP",
        "__GFP_NOMEMALLOC",
        "__GFP_NOWARN",
    }
)
# The composite masks of include/linux/gfp_types.h, as sets of flags (the
# same in 6.1 and 6.12 for the reclaim bits, which are all that matter here).
GFP_MASKS: dict[str, frozenset[str]] = {
    "__GFP_RECLAIM": _RECLAIM,
    "GFP_ATOMIC": frozenset({"__GFP_HIGH", _KSWAPD}),
    "GFP_NOWAIT": frozenset({_KSWAPD, "__GFP_NOWARN"}),
    "GFP_NOIO": _RECLAIM,
    "GFP_NOFS": _RECLAIM | {"__GFP_IO"},
    "GFP_KERNEL": _RECLAIM | {"__GFP_IO", "__GFP_FS"},
    "GFP_KERNEL_ACCOUNT": _RECLAIM | {"__GFP_IO", "__GFP_FS", "__GFP_ACCOUNT"},
    "GFP_USER": _RECLAIM | {"__GFP_IO", "__GFP_FS", "__GFP_HARDWALL"},
    "GFP_HIGHUSER": _RECLAIM | {"__GFP_IO", "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM"},
    "GFP_HIGHUSER_MOVABLE": _RECLAIM
    | {"__GFP_IO", "__GFP_FS", "__GFP_HARDWALL", "__GFP_HIGHMEM", "__GFP_MOVABLE"},
    "GFP_TRANSHUGE_LIGHT": _TRANSHUGE_LIGHT,
    "GFP_TRANSHUGE": _TRANSHUGE_LIGHT | {DIRECT_RECLAIM},
    "GFP_DMA": frozenset({"__GFP_DMA"}),
    "GFP_DMA32": frozenset({"__GFP_DMA32"}),
}
# Allocators and the index of their gfp argument.
ALLOCATORS: dict[str, int] = {
    **dict.fromkeys(
        (
            "kmalloc",
            "kzalloc",
            "kvmalloc",
            "kvzalloc",
            "kmalloc_node",
            "kzalloc_node",
            "kvmalloc_node",
            "kvzalloc_node",
            "kmem_cache_alloc",
            "kmem_cache_zalloc",
            "kmem_cache_alloc_node",
            "kmem_cache_alloc_lru",
            "kstrdup",
            "kstrdup_const",
            "kstrndup",
            "mempool_alloc",
            "alloc_pages_exact",
            "alloc_pages_node",
            "__alloc_pages_node",
            "folio_alloc_node",
            "kmalloc_obj",
            "alloc_page_node",
        ),
        1,
    ),
    **dict.fromkeys(
        (
            "kcalloc",
            "kmalloc_array",
            "kvcalloc",
            "kvmalloc_array",
            "kmemdup",
            "krealloc",
            "kvrealloc",
            "kcalloc_node",
            "kmalloc_array_node",
            "kmemdup_nul",
        ),
        2,
    ),
    **dict.fromkeys(
        (
            "alloc_pages",
            "alloc_page",
            "__alloc_pages",
            "__get_free_pages",
            "__get_free_page",
            "get_zeroed_page",
            "folio_alloc",
            "__folio_alloc",
            "vma_alloc_folio",
            "alloc_page_vma",
            "__page_cache_alloc",
            "filemap_alloc_folio",
            "alloc_pages_bulk_array",
            "alloc_pages_bulk_list",
            "alloc_pages_mpol",
            "folio_alloc_mpol",
            "alloc_hugepage_vma",
            "vma_alloc_zeroed_movable_folio",
            "__alloc_pages_bulk",
        ),
        0,
    ),
    "xa_store": 3,
    "xa_insert": 3,
    "xa_cmpxchg": 4,
    "xa_alloc": 4,
    "xa_alloc_cyclic": 5,
    "idr_alloc": 4,
    "idr_alloc_cyclic": 4,
    "radix_tree_preload": 0,
    "__vmalloc": 1,
    "__vmalloc_node": 3,
    "percpu_counter_init": 2,
    "alloc_percpu_gfp": 1,
}
# Calls that may sleep whatever they are given.
SLEEPING_CALLS = frozenset(
    {
        # sleeping locks
        "mutex_lock",
        "mutex_lock_nested",
        "mutex_lock_interruptible",
        "mutex_lock_killable",
        "mutex_lock_io",
        "down",
        "down_interruptible",
        "down_killable",
        "down_read",
        "down_read_killable",
        "down_read_interruptible",
        "down_write",
        "down_write_killable",
        "down_read_nested",
        "down_write_nested",
        "percpu_down_read",
        "percpu_down_write",
        "mmap_read_lock",
        "mmap_read_lock_killable",
        "mmap_write_lock",
        "mmap_write_lock_killable",
        "i_mmap_lock_read",
        "i_mmap_lock_write",
        "folio_lock",
        "lock_page",
        "__folio_lock",
        "folio_lock_killable",
        "cpus_read_lock",
        "get_online_mems",
        "mem_hotplug_begin",
        "lock_system_sleep",
        "inode_lock",
        "inode_lock_shared",
        "filemap_invalidate_lock",
        "filemap_invalidate_lock_shared",
        "hugetlb_vma_lock_read",
        "hugetlb_vma_lock_write",
        "vma_start_write",
        # waiting
        "folio_wait_locked",
        "folio_wait_writeback",
        "folio_wait_stable",
        "wait_on_page_locked",
        "wait_on_page_writeback",
        "folio_wait_bit",
        "wait_for_completion",
        "wait_for_completion_interruptible",
        "wait_for_completion_killable",
        "wait_for_completion_timeout",
        "wait_event",
        "wait_event_interruptible",
        "wait_event_killable",
        "wait_event_timeout",
        "wait_event_interruptible_timeout",
        "wait_var_event",
        "synchronize_rcu",
        "synchronize_rcu_expedited",
        "synchronize_srcu",
        "rcu_barrier",
        "flush_work",
        "flush_delayed_work",
        "flush_workqueue",
        "drain_workqueue",
        "cancel_work_sync",
        "cancel_delayed_work_sync",
        "kthread_stop",
        "lru_add_drain_all",
        "msleep",
        "msleep_interruptible",
        "ssleep",
        "usleep_range",
        "schedule",
        "schedule_timeout",
        "schedule_timeout_interruptible",
        "schedule_timeout_killable",
        "schedule_timeout_uninterruptible",
        "io_schedule",
        "io_schedule_timeout",
        # explicit sleep points
        "might_sleep",
        "cond_resched",
        "cond_resched_tasks_rcu_qs",
        # allocations that always may sleep
        *vocabulary.VMALLOCS,
        "kvfree_rcu_mightsleep",
        # user memory
        "copy_from_user",
        "copy_to_user",
        "get_user",
        "put_user",
        "clear_user",
        "strncpy_from_user",
        "copy_struct_from_user",
        "memdup_user",
        "strndup_user",
        # teardown that sleeps
        "mmput",
        "iput",
        "kmem_cache_destroy",
    }
)
# Methods the kernel calls only where sleeping is allowed: shrinker_count()
# and the shrinker core drop rcu_read_lock() around them.
SLEEPING_METHODS = frozenset({"count_objects", "scan_objects"})
# Tests of the context a call runs in: what they guard is the caller's
# choice (`if (gfpflags_allow_blocking(gfp)) ...`).
CONTEXT_TESTS = frozenset(
    {
        "gfpflags_allow_blocking",
        "preemptible",
        "in_atomic",
        "in_interrupt",
        "in_task",
        "irqs_disabled",
        "in_softirq",
        "in_irq",
        "in_nmi",
        "rcu_preempt_depth",
        "lockdep_is_held",
        "spin_is_locked",
    }
)
# Rescheduling points for loops (besides any call that may sleep).
RESCHEDULE = frozenset(
    {
        "cond_resched",
        "cond_resched_lock",
        "cond_resched_rcu",
        "cond_resched_tasks_rcu_qs",
        "cond_resched_lock_irq",
        "schedule",
        "might_resched",
        "rcu_read_unlock_trace",
    }
)
# Tests after which a loop gives the CPU back: it bails out (or reschedules)
# when asked to.
YIELD_TESTS = frozenset({"need_resched", "spin_needbreak", "rwlock_needbreak"})
# The kernel runs these callbacks in atomic context: API -> callback index.
ATOMIC_CALLBACKS: dict[str, tuple[int, str]] = {
    "apply_to_page_range": (
        3,
        "apply_to_page_range() calls it under the PTE lock or in lazy MMU mode",
    ),
    "apply_to_existing_page_range": (
        3,
        "apply_to_existing_page_range() calls it under the PTE lock or in lazy MMU mode",
    ),
    "on_each_cpu": (0, "on_each_cpu() runs it in interrupt context"),
    "on_each_cpu_mask": (1, "on_each_cpu_mask() runs it in interrupt context"),
    "on_each_cpu_cond": (1, "on_each_cpu_cond() runs it in interrupt context"),
    "on_each_cpu_cond_mask": (1, "on_each_cpu_cond_mask() runs it in interrupt context"),
    "smp_call_function": (0, "smp_call_function() runs it in interrupt context"),
    "smp_call_function_single": (1, "smp_call_function_single() runs it in interrupt context"),
    "smp_call_function_many": (1, "smp_call_function_many() runs it in interrupt context"),
    "call_rcu": (1, "call_rcu() runs it from softirq context"),
    "timer_setup": (1, "timer_setup() makes it a timer callback, run from softirq context"),
}
# Page-walk callbacks run under the PTE lock.
ATOMIC_WALK_FIELDS = {"pte_entry": "the page walk calls .pte_entry under the PTE lock"}
NO_SLEEP_CLASSES = vocabulary.NO_SLEEP_CLASSES
DEPTH = 2

Gfp = frozenset[str] | None  # the flags a mask may have; None: unknown


def gfp_value(node: Node | None, variables: Mapping[str, Gfp] | None = None) -> Gfp:
    """The flags of a gfp expression, or None when they are not known."""
    if node is None:
        return None
    node = ev.strip(node)
    kind = node.type
    if kind == "identifier":
        name = syntax.text(node)
        if variables is not None and name in variables:
            return variables[name]
        if name in GFP_MASKS:
            return GFP_MASKS[name]
        if name.startswith("__GFP_"):
            return frozenset({name})
        return None
    if kind == "number_literal" and syntax.text(node) == "0":
        return frozenset()
    if kind == "binary_expression":
        operator = syntax.text(node.child_by_field_name("operator"))
        left_node, right_node = node.child_by_field_name("left"), node.child_by_field_name("right")
        if operator == "|":
            left, right = gfp_value(left_node, variables), gfp_value(right_node, variables)
            return left | right if left is not None and right is not None else None
        if operator == "&":
            for side, other in ((left_node, right_node), (right_node, left_node)):
                removed = _complemented(other, variables)
                if removed is not None:
                    base = gfp_value(side, variables)
                    return base - removed if base is not None else None
            left, right = gfp_value(left_node, variables), gfp_value(right_node, variables)
            return left & right if left is not None and right is not None else None
        return None
    if kind == "conditional_expression":
        # Either arm: known only when both agree on blocking.
        arms = [
            gfp_value(node.child_by_field_name(f), variables)
            for f in ("consequence", "alternative")
        ]
        if any(a is None for a in arms):
            return None
        if len({DIRECT_RECLAIM in a for a in arms if a is not None}) != 1:
            return None
        return frozenset().union(*(a for a in arms if a is not None))
    if kind == "call_expression":
        arguments = syntax.arguments(node)
        callee = node.child_by_field_name("function")
        # `(gfp_t)(a | b)` reads as a call of a parenthesized name.
        cast = callee is not None and callee.type == "parenthesized_expression"
        if (cast or syntax.call_name(node) == "current_gfp_context") and len(arguments) == 1:
            return gfp_value(arguments[0], variables)
    return None


def _complemented(node: Node | None, variables: Mapping[str, Gfp] | None) -> Gfp:
    """For `~X`: the flags of X."""
    if node is None:
        return None
    node = ev.strip(node)
    if node.type == "unary_expression" and syntax.text(node.child_by_field_name("operator")) == "~":
        return gfp_value(node.child_by_field_name("argument"), variables)
    return None


def may_block(mask: Gfp) -> bool | None:
    return None if mask is None else DIRECT_RECLAIM in mask


def local_masks(body: Node, names: Iterable[str]) -> dict[str, Gfp]:
    """What each of `names` (locals of a function) holds as a gfp mask,
    from every assignment to it: known only when all assignments agree on
    whether direct reclaim is allowed."""
    wanted = set(names)
    assigned: dict[str, list[Gfp]] = {}
    for node in syntax.walk(body):
        target, value, operator = None, None, "="
        if node.type == "init_declarator":
            target = _declared_name(node.child_by_field_name("declarator"))
            value = node.child_by_field_name("value")
        elif node.type == "assignment_expression":
            left = node.child_by_field_name("left")
            target = syntax.text(left) if left is not None and left.type == "identifier" else None
            value = node.child_by_field_name("right")
            operator = syntax.text(node.child_by_field_name("operator"))
        if target not in wanted or target is None:
            continue
        mask = gfp_value(value)
        if operator == "|=":
            if mask is not None and DIRECT_RECLAIM not in mask:
                continue  # adds flags, none of them reclaim
            mask = None if mask is None else frozenset({DIRECT_RECLAIM})
        elif operator == "&=":
            removed = _complemented(value, None)
            if removed is not None and DIRECT_RECLAIM not in removed:
                continue
            mask = None if removed is None else frozenset()
        elif operator != "=":
            mask = None
        assigned.setdefault(target, []).append(mask)
    found: dict[str, Gfp] = {}
    for name, masks in assigned.items():
        if any(m is None for m in masks):
            found[name] = None
            continue
        blocking = {DIRECT_RECLAIM in m for m in masks if m is not None}
        found[name] = (
            frozenset({DIRECT_RECLAIM})
            if blocking == {True}
            else frozenset()
            if blocking == {False}
            else None
        )
    return found


def _declared_name(declarator: Node | None) -> str | None:
    while declarator is not None and declarator.type != "identifier":
        declarator = declarator.child_by_field_name("declarator")
    return syntax.text(declarator) if declarator is not None else None


def parameters(definition: Node) -> list[tuple[str, str]]:
    """(type, name) of each parameter of a function definition; the type of
    a pointer parameter ends with '*'."""
    declarator = definition.child_by_field_name("declarator")
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    found: list[tuple[str, str]] = []
    holder = declarator.child_by_field_name("parameters") if declarator is not None else None
    for parameter in holder.named_children if holder is not None else []:
        if parameter.type != "parameter_declaration":
            continue
        inner = parameter.child_by_field_name("declarator")
        name = _declared_name(inner)
        kind = syntax.text(parameter.child_by_field_name("type"))
        if inner is not None and inner.type in ("pointer_declarator", "array_declarator"):
            kind += " *"
        found.append((kind, name or ""))
    return found


def method_name(call: Node) -> str | None:
    """`obj->method(...)`: the field called."""
    function = call.child_by_field_name("function")
    function = ev.strip(function) if function is not None else None
    if function is not None and function.type == "field_expression":
        return syntax.text(function.child_by_field_name("field"))
    return None


def context_guarded(call: Node, stop: Node, parameters: frozenset[str] = frozenset()) -> bool:
    """Is `call` inside a branch whose condition tests the calling context
    (or one of `parameters`, for a callee whose caller decides)?"""
    for ancestor in syntax.ancestors(call):
        if ancestor == stop:
            return False
        condition = None
        if ancestor.type in ("if_statement", "conditional_expression"):
            condition = ancestor.child_by_field_name("condition")
        elif ancestor.type == "binary_expression" and syntax.text(
            ancestor.child_by_field_name("operator")
        ) in ("&&", "||"):
            condition = ancestor.child_by_field_name("left")
        if condition is None or syntax.within(call, condition):
            continue
        names = {syntax.call_name(c) for c in syntax.calls(condition)}
        if names & CONTEXT_TESTS or syntax.identifiers(condition) & parameters:
            return True
    return False


class Sleep(Record):
    """Why a call may sleep: the chain of callees down to the call that
    does (`("helper", "mutex_lock")`), and what that call is."""

    chain: tuple[str, ...]
    # Why the last call of the chain sleeps, when its name does not say.
    detail: str = ""
    # It is an allocation (the fix is to allocate earlier, or not to sleep).
    allocates: bool = False

    def describe(self) -> str:
        calls = " -> ".join(f"{name}()" for name in self.chain)
        return f"{calls} ({self.detail})" if self.detail else calls


class Sleepers:
    """Which calls of a function may sleep, asked of the function's tree
    (its file and the headers it includes, through `summaries`)."""

    def __init__(self, summaries: object, function_name: str) -> None:
        self.summaries = summaries
        self.function_name = function_name
        self._callees: dict[tuple[object, ...], Sleep | None] = {}

    def sleeps(self, call: Node, masks: Mapping[str, Gfp], depth: int = DEPTH) -> Sleep | None:
        """Why `call` may sleep, or None.  `masks` are the gfp masks of the
        calling function's names (its locals, and its parameters bound by
        a caller)."""
        name = syntax.call_name(call)
        if name is None:
            method = method_name(call)
            if method in SLEEPING_METHODS:
                return Sleep(
                    (f"->{method}",),
                    "a shrinker callback: the shrinker core never calls it under RCU or a spinlock",
                )
            return None
        if name in SLEEPING_CALLS:
            return Sleep((name,))
        index = ALLOCATORS.get(name)
        if index is not None:
            arguments = syntax.arguments(call)
            if index < len(arguments):
                mask_node = arguments[index]
                if may_block(gfp_value(mask_node, masks)):
                    return Sleep(
                        (name,),
                        f"{' '.join(syntax.text(mask_node).split())} allows direct reclaim",
                        allocates=True,
                    )
            return None
        if depth <= 1 or name == self.function_name:
            return None
        return self._callee_sleeps(name, call, masks, depth)

    def _callee_sleeps(
        self, name: str, call: Node, masks: Mapping[str, Gfp], depth: int
    ) -> Sleep | None:
        definition = self.summaries.definition(name)  # type: ignore[attr-defined]
        if definition is None or definition.body is None:
            return None
        params = parameters(definition.node)
        arguments = syntax.arguments(call)
        bound: dict[str, Gfp] = {}
        for (kind, parameter), argument in zip(params, arguments, strict=False):
            if parameter and "gfp_t" in kind:
                bound[parameter] = gfp_value(argument, masks)
        key = (
            definition.image.blob_id,
            definition.node.start_byte,
            depth,
            tuple(
                sorted((k, None if v is None else DIRECT_RECLAIM in v) for k, v in bound.items())
            ),
        )
        if key in self._callees:
            return self._callees[key]
        self._callees[key] = None  # recursion guard
        found = None
        body = definition.body
        if not releases_foreign_lock(body):
            # A flag the caller passes decides; a pointer it passes does not.
            names = frozenset(p for kind, p in params if p and not kind.endswith("*"))
            local = local_masks(body, _gfp_locals(body))
            local.update(bound)
            for inner in syntax.calls(body):
                if context_guarded(inner, body, names):
                    continue
                why = self.sleeps(inner, local, depth - 1)
                if why is not None:
                    found = Sleep((name, *why.chain), why.detail, why.allocates)
                    break
        self._callees[key] = found
        return found

    def reschedules(self, call: Node, masks: Mapping[str, Gfp], depth: int = DEPTH) -> bool:
        """May `call` give the CPU away: a rescheduling point, a sleeping
        call, a test of `need_resched()`, or a helper of the tree that
        does one of these (even one that drops a lock around it)?"""
        name = syntax.call_name(call)
        if name in RESCHEDULE or name in YIELD_TESTS:
            return True
        if self.sleeps(call, masks, depth=1) is not None:
            return True
        if name is None or depth <= 1 or name == self.function_name:
            return False
        definition = self.summaries.definition(name)  # type: ignore[attr-defined]
        if definition is None or definition.body is None:
            return False
        key = ("yields", definition.image.blob_id, definition.node.start_byte, depth)
        if key in self._callees:
            return self._callees[key] is not None
        self._callees[key] = None  # recursion guard
        local = local_masks(definition.body, _gfp_locals(definition.body))
        found = any(
            self.reschedules(inner, local, depth - 1) for inner in syntax.calls(definition.body)
        )
        self._callees[key] = Sleep((name,)) if found else None
        return found


def _gfp_locals(body: Node) -> list[str]:
    found = []
    for node in syntax.walk(body):
        if node.type == "declaration" and "gfp_t" in syntax.text(node.child_by_field_name("type")):
            for child in node.named_children:
                if child.type in ("init_declarator", "identifier"):
                    name = (
                        _declared_name(child.child_by_field_name("declarator"))
                        if (child.type == "init_declarator")
                        else syntax.text(child)
                    )
                    if name:
                        found.append(name)
    return found


def function_masks(function: Function) -> dict[str, Gfp]:
    """The gfp masks a function's own locals hold (parameters: unknown)."""
    body = function.body
    if body is None:
        return {}
    return local_masks(body, _gfp_locals(body))


def releases_foreign_lock(body: Node) -> bool:
    """Does the function drop an atomic lock before it takes it (a helper
    that releases its caller's lock around what it does, as
    `cond_resched_rcu()` and `cond_resched_lock()` do)?"""
    first: dict[str, bool] = {}
    for call in syntax.calls(body):
        spec = vocabulary.LOCK_CALLS.get(syntax.call_name(call) or "")
        if spec is None or spec.lock_class not in NO_SLEEP_CLASSES:
            continue
        name = lock_name(call, not spec.release)
        if name is not None:
            first.setdefault(name, spec.release)
    return any(first.values())


def atomic_callback_contexts(file: ParsedFile | None, name: str) -> list[str]:
    """Why the function `name` runs in atomic context, from how its own
    file hands it to the kernel: an `apply_to_page_range()` callback, a
    page walk's `.pte_entry`, a cross-CPU or RCU callback."""
    if file is None:
        return []
    index = _callback_index(file)
    return index.get(name, [])


_callback_indexes: dict[str, dict[str, list[str]]] = {}


def _callback_index(file: ParsedFile) -> dict[str, list[str]]:
    key = file.image.blob_id
    found = _callback_indexes.get(key)
    if found is not None:
        return found
    found = {}
    text = file.image.text
    wanted = [api for api in ATOMIC_CALLBACKS if api.encode() in text]
    if wanted:
        for call in syntax.calls(file.tree.root_node, wanted):
            index, why = ATOMIC_CALLBACKS[syntax.call_name(call) or ""]
            arguments = syntax.arguments(call)
            if index < len(arguments):
                target = ev.strip(arguments[index])
                if target.type == "pointer_expression":
                    target = target.child_by_field_name("argument") or target
                if target.type == "identifier":
                    found.setdefault(syntax.text(target), []).append(why)
    if any(f".{field}".encode() in text for field in ATOMIC_WALK_FIELDS):
        for node in _initializer_pairs(file.tree.root_node):
            designator = node.child_by_field_name("designator")
            value = node.child_by_field_name("value")
            field = syntax.text(designator).lstrip(".") if designator is not None else ""
            if field in ATOMIC_WALK_FIELDS and value is not None and value.type == "identifier":
                found.setdefault(syntax.text(value), []).append(ATOMIC_WALK_FIELDS[field])
    if len(_callback_indexes) > 256:
        _callback_indexes.clear()
    _callback_indexes[key] = found
    return found


def _initializer_pairs(root: Node) -> Iterator[Node]:
    for node in syntax.walk(root):
        if node.type == "initializer_pair":
            yield node
