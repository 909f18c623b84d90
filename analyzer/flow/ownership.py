"""What the function owns, along paths: references, isolations, mappings,
allocations, sysfs entries; and what it may no longer touch.

An *acquisition* (`folio_get(folio)`, `p = kmalloc(...)`,
`kobject_init_and_add(&x->kobj, ...)`) makes the function responsible for a
*resource* of a *family* on an *object*; a matching *release*
(`folio_put(folio)`, `kfree(p)`, `kobject_del(&x->kobj)`) ends it.  The
tables below (`FAMILIES`, `ACQUIRES`, `PINS`, `CONSUMERS`) say which call
does which; they are data, and the place to add an API pair.  Resources are
places of the analysis: named after their object when the object is an
argument (`folio->@ref`, `x->@sysfs`; an embedded object, `&x->kobj` or
`&folio->page`, stands for its container), after the acquiring call when it
is the result (`@alloc#<site>`, matched to `kfree(q)` through the pointer
value `q` holds).  A resource is

- `owned` while the function holds it (`maybe` as well while a conditional
  acquisition's result is untested);
- `gone` when it never was, or was released (a merge of both: both);
- `handed` when ownership moved on: the object was stored into a structure,
  a global or a list (`x->f = p`, `arr[i] = p`, `*out = p`,
  `list_add(&folio->lru, ...)`, `xa_store()`, `WRITE_ONCE()`), or passed to
  a callee of the tree (same file, included headers) that stores its
  parameter or reaches a release or a consumer two calls down.  Callees
  the review cannot read borrow what they are handed: most calls between a
  get and its put only look at the object.

Assigning the object's name another object keeps what the old one still
owns, under its acquisition site (unless it was stored somewhere first, and
may be released through that other name).

Acquisitions that can fail are conditional, with the layer's links, never
text order: `folio_try_get()` holds exactly when it returned true,
`kmalloc()` when the pointer is not NULL, `kobject_init_and_add()` adds to
sysfs exactly when it returned 0 (and needs `kobject_put()` either way),
`folio_isolate_lru()` when it returned true (0 before v6.4).  `if (err)`,
`if (!p)`, `if (ret < 0)` then narrow them.  A function's branch conditions
on plain names (`if (pinned)` ... `if (pinned)`, `mode == DROP`) get a value
at the entry, and the results of calls stored into them a value of their
own, so that correlated tests are not taken as independent paths; when too
many paths meet, those that differ in what they own are merged last.

What the function may no longer touch is the object's liveness, place
`x->@live`: `released` after it freed an object it allocated (`freed`),
dropped a reference it did not take itself on an object that is not a
parameter (`dropped`: the page table's `put_page()` of `pmd_page()`), or
dropped the lock that pinned an object it looked up without taking a
reference (`unpinned`: `vma` from `find_vma()` after `mmap_read_unlock()`,
the folio from `vm_normal_folio()` after `pte_unmap_unlock()`, an RCU lookup
after `rcu_read_unlock()`), or dropped the reference that alone kept such a
lookup alive after its lock was gone (`last`).  A put of a reference the
function took is balanced: the object is as alive as before.  A reference
is taken on a looked-up object by the tables' gets, by a call named like a
get (`get_object()`, `percpu_ref_tryget_live_rcu()`), by a callee of the
tree reaching one, and by any callee the review cannot read.

Not modelled: reference counts beyond one per family and object, two names
for one object other than aliases through assignment, objects reached
through other objects (a folio in a list), and callees' own acquisitions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from tree_sitter import Node

from analyzer import syntax
from analyzer.declarations import TypeScope
from analyzer.flow import FunctionFlow, cfg, vocabulary
from analyzer.flow import events as ev
from analyzer.flow.entries import TABLE_MAPS
from analyzer.flow.locks import LockEffect, Locks, held_on_entry
from analyzer.flow.locks import _is_lock as is_lock
from analyzer.flow.values import (
    BOOLEAN,
    FALSE,
    NULL,
    PTR,
    TRUE,
    Analysis,
    Kinds,
    Link,
    State,
    Tracker,
    Value,
    register_dimension,
)
from analyzer.patterns import regex
from analyzer.records import Record

OWNED, GONE, HANDED = "owned", "gone", "handed"
# Acquired only if the call succeeded, and nothing has told yet: the first
# test of the result (through the links) makes it owned or gone.
MAYBE = "maybe"
LIVE, RELEASED = "live", "released"
PINNED = "pinned"
OWNERSHIP = register_dimension({OWNED, GONE, HANDED, MAYBE, LIVE, RELEASED, PINNED})

# How an acquisition says it succeeded.
ALWAYS = "always"  # it cannot fail
NONNULL = "nonnull"  # the object it returns (or stores) is not NULL
SUCCESS_TRUE = "true"  # it returned true
SUCCESS_ZERO = "zero"  # it returned 0 (an int error code otherwise)
RESULT = -1  # the object is what the call returns


class Acquire(Record):
    """A call that makes the function responsible for a resource."""

    family: str
    object: int  # argument index of the object, or RESULT
    success: str = ALWAYS
    # The call makes the object: releasing it destroys it.
    creates: bool = False
    # The object is stored through the argument (`&new_nsproxy`).
    out: bool = False


class Family(Record):
    """What is owned, in words, and the calls that release it (each with the
    argument index of the object)."""

    what: str
    releases: dict[str, int]


FAMILIES: dict[str, Family] = {
    "ref": Family(
        "a reference",
        {
            "folio_put": 0,
            "put_page": 0,
            "folio_put_refs": 0,
            "put_folio": 0,
            "folio_putback_lru": 0,
            "putback_lru_page": 0,
        },
    ),
    "lru": Family("an LRU isolation", {"folio_putback_lru": 0, "putback_lru_page": 0}),
    "pid": Family("a pid reference", {"put_pid": 0}),
    "task": Family("a task reference", {"put_task_struct": 0}),
    "mm": Family("an mm_users reference", {"mmput": 0, "mmput_async": 0}),
    "mm-count": Family("an mm_count reference", {"mmdrop": 0}),
    "nsproxy": Family("an nsproxy reference", {"put_nsproxy": 0}),
    "css": Family(
        "a css reference",
        {"css_put": 0, "mem_cgroup_put": 0, "obj_cgroup_put": 0, "css_put_many": 0},
    ),
    "kobject": Family("a kobject reference", {"kobject_put": 0}),
    "sysfs": Family("a sysfs entry", {"kobject_del": 0}),
    "pte-map": Family("a PTE table mapping", {"pte_unmap": 0, "pte_unmap_unlock": 0}),
    "alloc": Family(
        "an allocation",
        {
            "kfree": 0,
            "kvfree": 0,
            "kfree_sensitive": 0,
            "kvfree_sensitive": 0,
            "vfree": 0,
            "kfree_rcu": 0,
            "kvfree_rcu": 0,
            "free_percpu": 0,
            "kmem_cache_free": 1,
            "bitmap_free": 0,
        },
    ),
}

_KMALLOC = (
    "kmalloc",
    "kzalloc",
    "kcalloc",
    "kmalloc_array",
    "kmalloc_node",
    "kzalloc_node",
    "kcalloc_node",
    "kmalloc_array_node",
    "kvmalloc",
    "kvzalloc",
    "kvcalloc",
    "kvmalloc_array",
    "kvmalloc_node",
    "kvzalloc_node",
    "kmemdup",
    "kstrdup",
    "kstrndup",
    "vmalloc",
    "vzalloc",
    "vmalloc_node",
    "vzalloc_node",
    "alloc_percpu",
    "alloc_percpu_gfp",
    "__alloc_percpu",
    "__alloc_percpu_gfp",
    "kmem_cache_alloc",
    "kmem_cache_zalloc",
    "kmem_cache_alloc_node",
    "bitmap_zalloc",
    "bitmap_alloc",
)

ACQUIRES: dict[str, tuple[Acquire, ...]] = {
    "folio_get": (Acquire("ref", 0),),
    "get_page": (Acquire("ref", 0),),
    "folio_try_get": (Acquire("ref", 0, SUCCESS_TRUE),),
    "folio_try_get_rcu": (Acquire("ref", 0, SUCCESS_TRUE),),
    "try_get_page": (Acquire("ref", 0, SUCCESS_TRUE),),
    "get_page_unless_zero": (Acquire("ref", 0, SUCCESS_TRUE),),
    "folio_isolate_lru": (Acquire("lru", 0, SUCCESS_TRUE),),
    "isolate_lru_page": (Acquire("lru", 0, SUCCESS_TRUE),),
    "get_pid": (Acquire("pid", 0),),
    "find_get_pid": (Acquire("pid", RESULT, NONNULL),),
    "get_task_pid": (Acquire("pid", RESULT, NONNULL),),
    "get_task_struct": (Acquire("task", 0),),
    "get_pid_task": (Acquire("task", RESULT, NONNULL),),
    "find_get_task_by_vpid": (Acquire("task", RESULT, NONNULL),),
    "mmget": (Acquire("mm", 0),),
    "mmget_not_zero": (Acquire("mm", 0, SUCCESS_TRUE),),
    "get_task_mm": (Acquire("mm", RESULT, NONNULL),),
    "mmgrab": (Acquire("mm-count", 0),),
    "unshare_nsproxy_namespaces": (Acquire("nsproxy", 1, SUCCESS_ZERO, out=True),),
    "css_get": (Acquire("css", 0),),
    "css_tryget": (Acquire("css", 0, SUCCESS_TRUE),),
    "css_tryget_online": (Acquire("css", 0, SUCCESS_TRUE),),
    "get_mem_cgroup_from_mm": (Acquire("css", RESULT, NONNULL),),
    "obj_cgroup_get": (Acquire("css", 0),),
    "kobject_init": (Acquire("kobject", 0, creates=True),),
    "kobject_init_and_add": (
        Acquire("kobject", 0, creates=True),
        Acquire("sysfs", 0, SUCCESS_ZERO),
    ),
    "kobject_add": (Acquire("sysfs", 0, SUCCESS_ZERO),),
    "kobject_get": (Acquire("kobject", 0),),
    **{name: (Acquire("pte-map", RESULT, NONNULL),) for name in TABLE_MAPS},
    **{name: (Acquire("alloc", RESULT, NONNULL, creates=True),) for name in _KMALLOC},
}
# Since v6.4 folio_isolate_lru() returns true on success; before, 0.
ISOLATE_RETURNS_BOOL_SINCE = (6, 4)
_ISOLATIONS = frozenset({"folio_isolate_lru", "isolate_lru_page"})

RELEASES: dict[str, list[tuple[str, int]]] = {}
for _family, _spec in FAMILIES.items():
    for _name, _index in _spec.releases.items():
        RELEASES.setdefault(_name, []).append((_family, _index))

# The place remembering which resources a local alias names (`prev = mm`).
ALIAS = "@alias#"

# Releasing a kobject with `kobject_put()` while it is still in sysfs: the
# directory outlives the call.  (release, family that must be gone first)
ENDS: dict[str, str] = {"kobject_put": "sysfs"}

# Calls that take what they are handed: into a list, a tree, a page table,
# deferred work.  Their names say so; other callees are asked (summaries) or
# assumed to keep it when nothing can be known.
CONSUMERS = regex(
    r"list_(add|move|splice)\w*|hlist_add\w*|llist_add\w*|__?xa_store\w*|xas_store|"
    r"radix_tree_insert|idr_alloc\w*|rb_\w+|\w*enqueue\w*|queue_\w+|call_rcu\w*|"
    r"set_ptes?|set_pte_at|set_pmd_at|set_pud_at|set_huge_pte_at|\w*rmap\w*|\w*install\w*|"
    r"insert_\w+|vm_insert\w*|\w*_store|\w*cmpxchg\w*|\w*xchg\w*|rcu_assign_pointer|"
    r"WRITE_ONCE|smp_store_release"
)
# Lookups whose result is kept alive by a lock the caller holds, not by a
# reference: (lock class, calls that drop it).
PINS: dict[str, tuple[str, frozenset[str]]] = {
    **{
        name: ("mmap", frozenset({"mmap_read_unlock", "mmap_write_unlock"}))
        for name in (
            "find_vma",
            "vma_lookup",
            "find_vma_intersection",
            "find_vma_prev",
            "find_extend_vma",
            "find_exact_vma",
        )
    },
    "lock_vma_under_rcu": ("vma", frozenset({"vma_end_read"})),
    **{
        name: ("ptl", frozenset({"pte_unmap_unlock"}))
        for name in (
            "vm_normal_page",
            "vm_normal_folio",
            "vm_normal_page_pmd",
            "vm_normal_folio_pmd",
            "pmd_folio",
        )
    },
    **{
        name: ("rcu", frozenset({"rcu_read_unlock"}))
        for name in (
            "rcu_dereference",
            "rcu_dereference_raw",
            "xa_load",
            "radix_tree_lookup",
            "idr_find",
            "pid_task",
            "find_vpid",
            "find_task_by_vpid",
            "list_first_or_null_rcu",
        )
    },
}
# A call handed a pinned object by a name like these takes a reference of
# its own kind (`get_object()`, `kref_get_unless_zero()`, `css_tryget()`):
# the object outlives the lock.
_TAKES_REFERENCE = regex(r"\w*(get|grab|hold|pin|isolate|_ref_inc|refcount_inc)\w*")

ALL_CALLS = frozenset(ACQUIRES) | frozenset(RELEASES) | frozenset(PINS)
# Frees that wait for a grace period: the object stays readable until then.
DEFERRED = frozenset({"kfree_rcu", "kvfree_rcu"})
# Why an object is no longer alive (the prefix of its `->@live` value):
# freed by the function, a reference it did not take dropped, the lock that
# pinned a lookup dropped.
FREED, DROPPED, UNPINNED = "freed", "dropped", "unpinned"
# The put of the reference taken on a looked-up object after its lock was
# dropped: nothing else keeps it.
LAST = "last"


class Resource(Record):
    """One acquisition site's resource."""

    family: str
    site: Node  # the acquiring call
    object: str  # the place naming the object
    creates: bool
    place: str  # where the analysis keeps its state


class Ownership(Tracker):
    """Resources and liveness of objects; see the module docstring."""

    name = "ownership"

    def __init__(
        self,
        version: tuple[int, int] | None = None,
        keeps: object = None,
        tested: dict[str, Kinds] | None = None,
        locals_: frozenset[str] = frozenset(),
        references: object = None,
        parameters: frozenset[str] = frozenset(),
    ) -> None:
        self.parameters = parameters
        # `references(callee)`: may a callee of the tree take a reference
        # on what it is handed?
        self.references = references
        # The function's parameters and locals (an assignment to any other
        # name stores into a global).
        self.locals = locals_
        # `keeps(callee, family)`: may a callee of the tree keep an object
        # it is handed?  None: any callee the tables do not know may.
        self.keeps = keeps
        self.isolate_bool = version is None or version >= ISOLATE_RETURNS_BOOL_SINCE
        # Names the branches test, with the kinds a value of them may be.
        self.tested = tested or {}
        # What the analysis learns about the sites, for the queries.
        self.resources: dict[Value, Resource] = {}
        # Resource values a release reached (the function does release them).
        self.released: set[Value] = set()
        # The pointer value a result acquisition returned -> its resources.
        self.by_pointer: dict[Value, list[Value]] = {}
        # PTE locks taken by the function (`&ptl` of pte_offset_map_lock()).
        self.ptls: set[str] = set()
        # Each pin's place -> the pointer value the lookup returned.
        self.pinned: dict[str, Value] = {}
        # Plain names the function returns (`return err;`).
        self.returned: frozenset[str] = frozenset()

    # -- the tracker's hooks ---------------------------------------------------------

    def default(self, name: str) -> Kinds | None:
        kind = _resource_kind(name)
        if kind is None:
            return None
        if kind == "live":
            return frozenset({LIVE})
        if kind.startswith("pin:"):
            return None
        return frozenset({GONE})

    def killed_by_call(self, name: str) -> bool:
        return _resource_kind(name) is None

    def constant_places(self, graph: cfg.Graph) -> frozenset[str]:
        # `ret = -EINVAL; goto out; ... out: return ret;`: the value says
        # whether the exit is an error path.
        self.returned = returned_names(graph)
        return self.returned

    def weight(self, name: str) -> int:
        # Paths that differ in what they own are the ones worth keeping
        # apart, and those that differ in what they return most (a failure
        # merged with a success is neither, and no exit is judged).
        if name in self.returned:
            return 32
        kind = _resource_kind(name)
        return 8 if kind is not None and kind != "alias" else 1

    def call(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        name = call.name
        if name is None:
            return
        acquired = False
        for spec in ACQUIRES.get(name, ()):
            self._acquire(analysis, state, call, spec, results)
            acquired = True
        releases = RELEASES.get(name)
        if releases:
            for family, index in releases:
                if index < len(call.arguments):
                    self._release(analysis, state, call, family, call.arguments[index], results)
        if name in ENDS and call.arguments:
            # The last put removes the directory too: nothing left to leak.
            for place in self.places_of(analysis, state, call.arguments[0], results, ENDS[name]):
                analysis.bind(state, place, f"ended:{call.node.id}", frozenset({GONE}))
        if name in _PIN_RELEASES:
            self._drop_pins(analysis, state, name, call)
        if name in PINS and not acquired:
            self._pin(analysis, state, call, PINS[name][0], results)
        if name in ("pte_offset_map_lock", "__pte_offset_map_lock") and len(call.arguments) > 3:
            target = ev.address_of(call.arguments[3])
            if target is not None:
                self.ptls.add(target)
        if name in _PT_LOCKS:
            self.ptls.update(ev.destinations(call.node))
        if not acquired and not releases:
            self._handed(analysis, state, call, results)
        if results.get(call.node.id) is None and not acquired:
            # An int a later branch tests (`err = f(); if (err)`): a value
            # whose truth the branches narrow, so that the return that
            # follows knows it is an error path.
            tested = [d for d in ev.destinations(call.node) if d in self.tested]
            if tested:
                results[call.node.id] = frozenset(
                    {analysis.new_value(state, call.node, self.tested[tested[0]])}
                )

    def assign(
        self,
        analysis: Analysis,
        state: State,
        assign: ev.Assign,
        results: dict[int, frozenset[Value]],
    ) -> None:
        """`x->f = p`, `arr[i] = p`, `*out = p`, `global = p`: stored, the
        object is no longer the function's alone."""
        if assign.operator != "=" or assign.value is None:
            return
        name = ev.place(assign.target)
        if name is not None:
            self._rekey(state, name)
            state.places.pop(f"{ALIAS}{name}", None)
        target = ev.strip(assign.target)
        if target.type == "identifier" and syntax.text(target) in self.locals:
            if name is not None:
                self._alias(state, name, assign.value)
            return  # a local alias: the value follows it
        self._hand_over(analysis, state, assign.value, results)
        stored = object_of(assign.value)
        if stored is not None:
            analysis.bind(
                state, f"{stored}->@escaped", f"esc:{assign.node.id}", frozenset({HANDED})
            )

    @staticmethod
    def _alias(state: State, name: str, value: Node) -> None:
        """`prev = mm;`: `prev` names the object `mm` holds resources on
        (an object named as an argument, `mmget_not_zero(mm)`, has no
        pointer value to follow): remember those resources' values, so that
        `mmput(prev)` releases them even after `mm` names another object."""
        source = ev.place(ev.strip(value))
        if source is None:
            return
        prefix = f"{source}->@"
        held: set[Value] = set(state.places.get(f"{ALIAS}{source}", ()))
        for place, values in state.places.items():
            if place.startswith(prefix) and place[len(prefix) :] in FAMILIES:
                held |= values
        if held:
            state.places[f"{ALIAS}{name}"] = frozenset(held)

    def iterate(self, analysis: Analysis, state: State, names: tuple[Node, ...]) -> None:
        for node in names:
            self._rekey(state, syntax.text(node))
            analysis.forget(state, syntax.text(node))

    def _rekey(self, state: State, name: str) -> None:
        """`name` is about to hold another object: what the old one still
        owns stays owned, under its acquisition site, so that the exit
        that leaks it still sees it."""
        prefix = f"{name}->@"
        if f"{prefix}escaped" in state.places:
            return  # reachable through where it was stored: released there
        for place in [p for p in state.places if p.startswith(prefix)]:
            family = place[len(prefix) :]
            if family not in FAMILIES:
                continue
            for value in state.places[place]:
                resource = self.resources.get(value)
                if resource is None or OWNED not in state.kinds.get(value, frozenset()):
                    continue
                state.places[f"@{family}#{resource.site.id}"] = frozenset({value})

    # -- acquisitions and releases -------------------------------------------------------

    def _acquire(
        self,
        analysis: Analysis,
        state: State,
        call: ev.Call,
        spec: Acquire,
        results: dict[int, frozenset[Value]],
    ) -> None:
        if spec.object == RESULT:
            targets = ev.destinations(call.node)
            # Stored straight into a structure (or used in place): handed.
            if not targets or any("->" in t or "." in t or t.startswith("*") for t in targets):
                return
            obj = targets[-1]
            # Named by the site: the assignment that follows forgets what
            # its target's old object owned, not this.
            place = f"@{spec.family}#{call.node.id}"
        else:
            if spec.object >= len(call.arguments):
                return
            argument = call.arguments[spec.object]
            found = ev.address_of(argument) if spec.out else object_of(argument)
            if found is None:
                return
            obj = found
            place = f"{obj}->@{spec.family}"
        value: Value = f"own:{call.node.id}:{spec.family}"
        self.resources[value] = Resource(spec.family, call.node, obj, spec.creates, place)
        success = spec.success
        if call.name in _ISOLATIONS and not self.isolate_bool:
            success = SUCCESS_ZERO
        if spec.object != RESULT and not spec.out:
            state.places.pop(f"{obj}->@live", None)  # a reference: alive again
            self._mark_pin_referenced(analysis, state, call.arguments[spec.object], results, OWNED)
            if spec.creates:
                # The kobject's release frees its container from now on.
                argument = call.arguments[spec.object]
                self._hand(state, self.places_of(analysis, state, argument, results, "alloc"))
        if success == ALWAYS:
            analysis.bind(state, place, value, frozenset({OWNED}))
            return
        analysis.bind(state, place, value, frozenset({OWNED, GONE, MAYBE}))
        if success == NONNULL and spec.object == RESULT:
            pointer = self._result(analysis, state, call, results, frozenset({NULL, PTR}))
            self._link(state, pointer, value, frozenset({PTR}), frozenset({NULL}))
            self.by_pointer.setdefault(pointer, []).append(value)
            return
        if spec.out:
            # The object is stored through the argument: it holds a pointer
            # that may be NULL, and the call's int says whether it failed.
            pointer: Value = f"out:{call.node.id}"
            analysis.bind(state, obj, pointer, frozenset({NULL, PTR}))
            self._link(state, pointer, value, frozenset({PTR}), frozenset({NULL}))
            self.by_pointer.setdefault(pointer, []).append(value)
        result = self._result(analysis, state, call, results, BOOLEAN)
        good, bad = (TRUE, FALSE) if success == SUCCESS_TRUE else (FALSE, TRUE)
        if spec.out:
            # Failure means no object; success alone does not mean one.
            links = set(state.links.get(result, frozenset()))
            links.add(Link(frozenset({bad}), value, frozenset({GONE})))
            state.links[result] = frozenset(links)
            return
        self._link(state, result, value, frozenset({good}), frozenset({bad}))

    def _result(
        self,
        analysis: Analysis,
        state: State,
        call: ev.Call,
        results: dict[int, frozenset[Value]],
        kinds: Kinds,
    ) -> Value:
        existing = results.get(call.node.id)
        if existing and len(existing) == 1:
            (value,) = existing
            if state.kinds.get(value, frozenset()) & kinds:
                return value
        value = analysis.new_value(state, call.node, kinds)
        results[call.node.id] = frozenset({value})
        return value

    @staticmethod
    def _link(state: State, carrier: Value, target: Value, good: Kinds, bad: Kinds) -> None:
        links = set(state.links.get(carrier, frozenset()))
        links.add(Link(good, target, frozenset({OWNED})))
        links.add(Link(bad, target, frozenset({GONE})))
        state.links[carrier] = frozenset(links)

    def _release(
        self,
        analysis: Analysis,
        state: State,
        call: ev.Call,
        family: str,
        argument: Node,
        results: dict[int, frozenset[Value]],
    ) -> None:
        obj = object_of(argument)
        owned = False
        creates = False
        for place in self.places_of(analysis, state, argument, results, family):
            values = state.places[place]
            kinds = state.kinds_of_values(values)
            if OWNED in kinds or HANDED in kinds:
                owned = True
                self.released.update(values)
            creates = creates or any(
                self.resources[v].creates for v in values if v in self.resources
            )
            analysis.bind(state, place, f"rel:{call.node.id}:{family}", frozenset({GONE}))
        if obj is None or family == "sysfs" or call.name in DEFERRED:
            return  # kobject_del() leaves the kobject alive; kfree_rcu() waits
        # Destroying what it made, or dropping a reference the function did
        # not take: the object may be gone.
        if creates:
            analysis.bind(state, f"{obj}->@live", f"{FREED}:{call.node.id}", frozenset({RELEASED}))
        elif owned and on_this_path(state, state.places.get(f"{obj}->@bare", ()), {PINNED}):
            analysis.bind(state, f"{obj}->@live", f"{LAST}:{call.node.id}", frozenset({RELEASED}))
        elif family == "alloc":
            analysis.bind(state, f"{obj}->@live", f"{FREED}:{call.node.id}", frozenset({RELEASED}))
        elif not (owned or self._holds_any(state, obj) or obj in self.parameters):
            # A parameter's object is the caller's to keep alive: it holds a
            # reference across the call (the one dropped here is another).
            analysis.bind(
                state, f"{obj}->@live", f"{DROPPED}:{call.node.id}", frozenset({RELEASED})
            )

    def places_of(
        self,
        analysis: Analysis,
        state: State,
        argument: Node,
        results: dict[int, frozenset[Value]],
        family: str | None = None,
    ) -> list[str]:
        """The resource places an argument names: by its object's place, or
        through the pointer value it holds (`kfree(q)` after `q = p`,
        `pte_unmap(pte - 1)`)."""
        found: list[str] = []
        obj = object_of(argument)
        if obj is not None:
            prefix = f"{obj}->@"
            for place in state.places:
                kind = place[len(prefix) :] if place.startswith(prefix) else None
                if kind in FAMILIES and (family is None or kind == family):
                    found.append(place)
        aliased = state.places.get(f"{ALIAS}{obj}") if obj is not None else None
        if aliased:
            for place, values in state.places.items():
                kind = _resource_kind(place)
                if (
                    kind in FAMILIES
                    and (family is None or kind == family)
                    and not values.isdisjoint(aliased)
                ):
                    found.append(place)
        pointers = analysis.value_of(state, argument, results) or frozenset()
        if obj is not None:
            pointers = pointers | state.places.get(obj, frozenset())  # `&tk->nd`: tk's
        for pointer in pointers:
            for resource in self.by_pointer.get(pointer, ()):
                spec = self.resources.get(resource)
                if spec is None or (family is not None and spec.family != family):
                    continue
                if resource in state.places.get(spec.place, frozenset()):
                    found.append(spec.place)
        return list(dict.fromkeys(found))

    @staticmethod
    def _holds_any(state: State, obj: str) -> bool:
        """Does the function still own something of `obj` (a second
        reference, an isolation)?"""
        prefix = f"{obj}->@"
        return any(
            place.startswith(prefix)
            and place[len(prefix) :] in FAMILIES
            and OWNED in state.kinds_of_values(values)
            for place, values in state.places.items()
        )

    # -- handing over --------------------------------------------------------------------

    def _handed(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        """A call handed an object: a consumer takes what it owns, and a
        reference-taking call keeps a pinned object alive."""
        name = call.name or ""
        referencing = any(p.startswith("@pin:") for p in state.places) and self._may_reference(name)
        for argument in call.arguments:
            if referencing:
                self._mark_pin_referenced(analysis, state, argument, results)
            places = self.places_of(analysis, state, argument, results)
            if not places or not self._may_keep(name, {_resource_kind(p) or "" for p in places}):
                continue
            self._hand(state, places)

    def _may_reference(self, callee: str) -> bool:
        """May a callee handed a looked-up object take a reference on it
        (`folio_try_get()`, `get_object()`, an isolation)?  Named like a
        get, or one of the tree's functions reaching such a call; a callee
        the review cannot read may."""
        if _TAKES_REFERENCE.fullmatch(callee):
            return True
        if callee in ALL_CALLS or callee in vocabulary.LOCK_CALLS:
            return False
        if vocabulary.ASSERTIONS.fullmatch(callee) or self.references is None:
            return False
        return self.references(callee)  # type: ignore[operator]

    def _may_keep(self, callee: str, families: set[str]) -> bool:
        if CONSUMERS.fullmatch(callee):
            return True
        if callee in ALL_CALLS:
            return False
        if vocabulary.ASSERTIONS.fullmatch(callee) or callee in vocabulary.LOCK_CALLS:
            return False
        if self.keeps is None:
            return True
        return any(self.keeps(callee, family) for family in families)  # type: ignore[operator]

    def _hand_over(
        self,
        analysis: Analysis,
        state: State,
        value: Node,
        results: dict[int, frozenset[Value]],
    ) -> None:
        self._hand(state, self.places_of(analysis, state, value, results))

    @staticmethod
    def _hand(state: State, places: Iterable[str]) -> None:
        for place in places:
            for value in state.places.get(place, frozenset()):
                kinds = state.kinds.get(value, frozenset())
                if OWNED in kinds:
                    state.kinds[value] = (kinds - {OWNED}) | {HANDED}

    # -- pins ----------------------------------------------------------------------------

    def _pin(
        self,
        analysis: Analysis,
        state: State,
        call: ev.Call,
        lock_class: str,
        results: dict[int, frozenset[Value]],
    ) -> None:
        """A lookup kept alive by a lock: its pointer value is pinned until
        the lock is dropped (whatever names hold it by then)."""
        pointer = self._result(analysis, state, call, results, frozenset({NULL, PTR}))
        place = f"@pin:{lock_class}#{call.node.id}"
        self.pinned[place] = pointer
        analysis.bind(state, place, f"pin:{call.node.id}", frozenset({PINNED}))

    def _mark_pin_referenced(
        self,
        analysis: Analysis,
        state: State,
        argument: Node,
        results: dict[int, frozenset[Value]],
        kind: str = HANDED,
    ) -> None:
        """A reference was taken on a looked-up object: by a get of the
        tables (`owned`: its put is followed) or by a call the analysis
        does not follow (`handed`: the object outlives the lock for good)."""
        pointers = analysis.value_of(state, argument, results) or frozenset()
        obj = object_of(argument)
        if obj is not None:
            pointers = pointers | state.places.get(obj, frozenset())  # `&pgmap->ref`
        for place in [p for p in state.places if p.startswith("@pin:")]:
            if self.pinned.get(place) in pointers:
                analysis.bind(state, place, f"ref:{argument.id}:{kind}", frozenset({kind}))

    def _drop_pins(self, analysis: Analysis, state: State, unlock: str, call: ev.Call) -> None:
        classes = {cls for cls, drops in PINS.values() if unlock in drops}
        if unlock == "spin_unlock" and call.arguments:
            name = ev.place(call.arguments[0])
            if name is not None and name in self.ptls:
                classes.add("ptl")
        for lock_class in classes:
            prefix = f"@pin:{lock_class}#"
            for place in [p for p in state.places if p.startswith(prefix)]:
                pin = state.places.pop(place)
                pointer = self.pinned.get(place)
                if pointer is None or state.kinds.get(pointer) == frozenset({NULL}):
                    continue  # NULL on this path: nothing was kept alive
                referenced = on_this_path(state, pin, {OWNED})
                if not referenced and not on_this_path(state, pin, {PINNED}):
                    continue  # a reference the analysis does not follow, or paths merged
                for name, values in list(state.places.items()):
                    if name.startswith("@") or "->@" in name or pointer not in values:
                        continue
                    if values - {pointer}:
                        continue  # it may hold something else on this path
                    if referenced:
                        # Alive by the function's reference alone from now:
                        # its put is the last one the function can count on.
                        analysis.bind(
                            state, f"{name}->@bare", f"bare:{call.node.id}", frozenset({PINNED})
                        )
                    elif not self._holds_any(state, name):
                        analysis.bind(
                            state,
                            f"{name}->@live",
                            f"{UNPINNED}:{call.node.id}",
                            frozenset({RELEASED}),
                        )


# Calls returning a page-table lock (`ptl = pmd_trans_huge_lock(pmd, vma)`).
_PT_LOCKS = frozenset(
    {"pmd_lock", "pud_lock", "huge_pte_lock", "pmd_trans_huge_lock", "pud_trans_huge_lock"}
)


_PIN_RELEASES = frozenset(
    {name for _cls, drops in PINS.values() for name in drops} | {"spin_unlock"}
)


def _resource_kind(name: str) -> str | None:
    """`folio->@ref` -> "ref", `@alloc#12` -> "alloc", `p->@live` -> "live",
    `@pin:rcu#7` -> "pin:rcu"; None for a place that is no resource."""
    if name.startswith("@"):
        return name[1:].partition("#")[0]
    _, marker, kind = name.rpartition("->@")
    return kind if marker else None


_MEMBER = regex(r"(?:->|\.)\w+$")


def object_of(node: Node | None) -> str | None:
    """The object an argument names: `folio`, `p`, `wb->blkcg_css`; an
    embedded object (`&x->kobj`, `&folio->page`, `page_folio(page)`) stands
    for its container."""
    if node is None:
        return None
    node = ev.strip(node)
    if node.type == "call_expression" and syntax.call_name(node) in ("page_folio", "folio_page"):
        arguments = syntax.arguments(node)
        return object_of(arguments[0]) if arguments else None
    target = ev.address_of(node)
    if target is not None:
        return _MEMBER.sub("", target)
    name = ev.place(node)
    if name is None or name.startswith("*"):
        return None
    return name


def tested_names(graph: cfg.Graph) -> dict[str, Kinds]:
    """Places the function's branches test as a whole (`if (pinned)`,
    `if (!err)`, `if (ret < 0)`, `behavior == DROP`, `switch (mode)`), each
    with the kinds to give it at the entry: true or false, and each constant
    it is compared with or any other ("=?"), so that two tests of it agree."""
    found: dict[str, set[str]] = {}
    for point in graph.points:
        if point.node is None:
            continue
        if point.kind == cfg.SWITCH:
            name = ev.place(point.node)
            if name is not None and not name.startswith("*"):
                constants = found.setdefault(name, set())
                for edge in point.succs:
                    if edge.case is not None and (text := _constant(edge.case)) is not None:
                        constants.add(text)
            continue
        if point.kind != cfg.BRANCH:
            continue
        node = ev.strip(point.node)
        while (
            node.type == "unary_expression"
            and syntax.text(node.child_by_field_name("operator")) == "!"
        ):
            argument = node.child_by_field_name("argument")
            if argument is None:
                break
            node = ev.strip(argument)
        constant = None
        if node.type == "binary_expression" and syntax.text(
            node.child_by_field_name("operator")
        ) in ("==", "!=", "<", ">", "<=", ">="):
            right = node.child_by_field_name("right")
            if syntax.text(node.child_by_field_name("operator")) in ("==", "!=") and right:
                constant = _constant(right)
            node = ev.strip(node.child_by_field_name("left") or node)
        name = ev.place(node)
        if name is not None and not name.startswith("*"):
            constants = found.setdefault(name, set())
            if constant is not None:
                constants.add(constant)
    return {
        name: BOOLEAN
        | frozenset(f"={c}" for c in constants)
        | (frozenset({"=?"}) if constants else frozenset())
        for name, constants in found.items()
    }


def correlated(tested: dict[str, Kinds], graph: cfg.Graph) -> dict[str, Kinds]:
    """The tested names worth a value at the entry: those tested twice or
    more (one test alone correlates with nothing, and only splits paths)."""
    counts: dict[str, int] = {}
    for point in graph.points:
        if point.kind not in (cfg.BRANCH, cfg.SWITCH) or point.node is None:
            continue
        for child in syntax.walk(point.node):
            if child.type in ("identifier", "field_expression"):
                name = ev.place(child)
                if name in tested:
                    counts[name] = counts.get(name, 0) + 1
    return {name: kinds for name, kinds in tested.items() if counts.get(name, 0) >= 2}


def _constant(node: Node) -> str | None:
    """A constant spelled as the values module spells it (`DROP`, `-EAGAIN`,
    `0`); NULL is none."""
    node = ev.strip(node)
    text = syntax.text(node)
    if node.type == "number_literal":
        try:
            return str(int(text.rstrip("uUlL").lower(), 0))
        except ValueError:
            return None
    if node.type == "identifier" and text.isupper() and text != "NULL":
        return text
    if node.type == "unary_expression" and text.startswith("-"):
        inner = _constant(node.child_by_field_name("argument"))
        return f"-{inner}" if inner is not None else None
    return None


def compared_objects(graph: cfg.Graph) -> frozenset[str]:
    """Pointers the function compares with other pointers
    (`if (pages != stack_pages) kfree(pages)`): whether such an object was
    allocated is known only to that comparison, which the analysis does not
    follow."""
    found: set[str] = set()
    for point in graph.points:
        if point.kind != cfg.BRANCH or point.node is None:
            continue
        node = ev.strip(point.node)
        if node.type != "binary_expression" or syntax.text(
            node.child_by_field_name("operator")
        ) not in ("==", "!="):
            continue
        sides = [node.child_by_field_name("left"), node.child_by_field_name("right")]
        if any(side is None or _is_constant(side) for side in sides):
            continue
        for side in sides:
            name = ev.place(side)
            if name is not None:
                found.add(name)
    return frozenset(found)


def _is_constant(node: Node) -> bool:
    node = ev.strip(node)
    text = syntax.text(node)
    return (
        node.type in ("number_literal", "null", "true", "false")
        or text == "NULL"
        or (node.type == "identifier" and text.isupper())
    )


def objects_in(node: Node | None) -> set[str]:
    """The places an expression names (for `return p`, `return &x->f`)."""
    found: set[str] = set()
    if node is None:
        return found
    for child in syntax.walk(node):
        if child.type in ("identifier", "field_expression"):
            name = ev.place(child)
            if name is not None:
                found.add(name)
    return found


def resource_places(state: State) -> Iterator[tuple[str, str, frozenset[Value]]]:
    """(place, family, values) of each resource in a state."""
    for place, values in state.places.items():
        family = _resource_kind(place)
        if family in FAMILIES:
            yield place, family, values


# -- running it, and what rules ask --------------------------------------------------------


def ownership(flow: FunctionFlow) -> Analysis:
    """The ownership analysis of a function (cached with the flow)."""

    def keeps(callee: str, family: str) -> bool:
        """Does a callee of the tree keep what it is handed: does it (or
        what it calls, two levels down) release it or put it somewhere?"""
        if callee == flow.function.name:
            return False
        if callees_of(flow, callee) is None:
            # A callee the review cannot read borrows what it is handed,
            # unless its name says it keeps it (CONSUMERS): most calls
            # between a get and its put only look at the object, and
            # assuming otherwise would hide every leak behind them.
            return False
        wanted = frozenset(FAMILIES[family].releases) if family in FAMILIES else frozenset()
        return _stores_parameter(flow, callee) or _reaches(flow, callee, wanted, 2, set())

    graph = flow.graph
    seeds = tested_names(graph)

    def references(callee: str) -> bool:
        if callee == flow.function.name:
            return False
        if callees_of(flow, callee) is None:
            return True
        return _reaches_matching(flow, callee, _TAKES_REFERENCE, 2, set())

    tracker = Ownership(
        flow.version,
        keeps,
        seeds,
        frozenset(TypeScope(flow.function.node).names),
        references,
        frozenset(parameter_names(flow.function.node)),
    )
    # Branches on the same plain name agree with each other.
    return flow.analysis(tracker, ("ownership", flow.version), correlated(seeds, graph))


def _reaches_matching(
    flow: FunctionFlow, name: str, pattern: re.Pattern[str], depth: int, seen: set[str]
) -> bool:
    if depth <= 0 or name in seen:
        return False
    seen.add(name)
    calls = callees_of(flow, name)
    if calls is None:
        return False
    if any(pattern.fullmatch(c) for c in calls):
        return True
    return any(_reaches_matching(flow, c, pattern, depth - 1, seen) for c in calls)


_stores: dict[tuple[str, int, str], bool] = {}
_callees: dict[tuple[str, int, str], frozenset[str]] = {}


def callees_of(flow: FunctionFlow, name: str) -> frozenset[str] | None:
    """The names a function of the tree calls (None: not one the review
    can read).  From its text, without the summaries' analyses: the
    tracker asks this of every callee an owned object is handed to."""
    definition = flow.summaries.definition(name)
    if definition is None or definition.body is None:
        return None
    key = (definition.image.blob_id, definition.node.start_byte, name)
    found = _callees.get(key)
    if found is None:
        if len(_callees) > 4096:
            _callees.clear()
        found = _callees[key] = frozenset(
            n for n in (syntax.call_name(c) for c in syntax.calls(definition.body)) if n
        )
    return found


def _stores_parameter(flow: FunctionFlow, name: str) -> bool:
    """Does the callee store one of its parameters into memory
    (`fbatch->folios[fbatch->nr++] = folio;`)?"""
    definition = flow.summaries.definition(name)
    if definition is None or definition.body is None:
        return False
    key = (definition.image.blob_id, definition.node.start_byte, name)
    found = _stores.get(key)
    if found is None:
        if len(_stores) > 4096:
            _stores.clear()
        parameters = set(parameter_names(definition.node))
        found = False
        for node in syntax.walk(definition.body):
            if node.type != "assignment_expression":
                continue
            left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
            if left is None or right is None or ev.strip(left).type == "identifier":
                continue
            stored = object_of(right)
            if stored is not None and stored in parameters:
                found = True
                break
        _stores[key] = found
    return found


def parameter_names(definition: Node) -> list[str]:
    declarator = definition.child_by_field_name("declarator")
    while declarator is not None and declarator.type != "function_declarator":
        declarator = declarator.child_by_field_name("declarator")
    if declarator is None:
        return []
    parameters = declarator.child_by_field_name("parameters")
    names = []
    for parameter in parameters.named_children if parameters is not None else []:
        inner = parameter.child_by_field_name("declarator")
        while inner is not None and inner.type not in ("identifier",):
            inner = inner.child_by_field_name("declarator")
        if inner is not None:
            names.append(syntax.text(inner))
    return names


def _reaches(
    flow: FunctionFlow, name: str, wanted: frozenset[str], depth: int, seen: set[str]
) -> bool:
    if depth <= 0 or name in seen:
        return False
    seen.add(name)
    calls = callees_of(flow, name)
    if calls is None:
        return False
    if calls & wanted or any(CONSUMERS.fullmatch(c) for c in calls):
        return True
    return any(_reaches(flow, callee, wanted, depth - 1, seen) for callee in calls)


class Exit(Record):
    """A path state at the end of the function: at a `return` (its node),
    or falling off the end (node None)."""

    node: Node | None
    value: Node | None  # what it returns
    state: State
    results: dict[int, frozenset[Value]]


def exits(analysis: Analysis) -> Iterator[Exit]:
    """Each path state that leaves the function (paths that die in BUG()
    or panic() do not leave it)."""
    graph = analysis.graph
    for point in graph.points:
        if point.kind != cfg.RETURN:
            continue
        # Only the return's own point is replayed, not the whole function.
        for entry in analysis.entry_states.get(point.id, ()):
            state = entry.copy()
            results: dict[int, frozenset[Value]] = {}
            for event in analysis.events(point):
                if isinstance(event, ev.Return):
                    yield Exit(event.node, event.value, state, results)
                    break
                analysis.step(state, event, results)
    for edge in graph.exit.preds:
        point = edge.source
        if point.kind == cfg.RETURN:
            continue
        for entry in analysis.entry_states.get(point.id, ()):
            out, results = analysis.transfer(point, entry)
            yield Exit(None, None, out, results)


def on_this_path(state: State, values: Iterable[Value], wanted: Iterable[str]) -> bool:
    """Are what `values` hold among `wanted` on this path, not merely on one
    of the paths merged into this state?  A conditional acquisition nothing
    has tested yet counts as owned (it is, unless the call failed)."""
    wanted = frozenset(wanted)
    found = False
    for value in values:
        kinds = state.kinds.get(value, frozenset()) & OWNERSHIP
        if MAYBE in kinds:
            kinds = kinds - {MAYBE, GONE}
        if not kinds or not kinds <= wanted:
            return False
        found = True
    return found


def tracker_of(analysis: Analysis) -> Ownership:
    tracker = analysis.tracker
    assert isinstance(tracker, Ownership)
    return tracker


def returned_names(graph: cfg.Graph) -> frozenset[str]:
    """Plain names the function returns (`return err;`)."""
    return frozenset(
        syntax.text(value)
        for point in graph.points
        if point.kind == cfg.RETURN
        and point.node is not None
        and (value := next((c for c in point.node.named_children if c.type != "comment"), None))
        is not None
        and value.type == "identifier"
    )


class ExitLocks(Locks):
    """The lock analysis, with paths that differ in the locks they hold or
    in what they return kept apart longest: a lock leak is judged at an
    error exit, which a merge with a success (or an unlocked path) hides."""

    def __init__(self, helper_effects: Callable[[str], tuple[LockEffect, ...]] | None) -> None:
        super().__init__(helper_effects)
        self.returned: frozenset[str] = frozenset()

    def constant_places(self, graph: cfg.Graph) -> frozenset[str]:
        self.returned = returned_names(graph)
        return self.returned

    def weight(self, name: str) -> int:
        if name in self.returned:
            return 32
        return 8 if is_lock(name) else 1


def exit_locks(flow: FunctionFlow) -> Analysis:
    """Which locks are held, for judging exits (see `ExitLocks`); once per
    function."""
    entry = held_on_entry(flow.function, flow.type_of, vocabulary.NO_SLEEP_CLASSES)
    return flow.analysis(ExitLocks(flow._lock_effects), "exit-locks", entry)
