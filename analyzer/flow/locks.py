"""Which locks are held, at each point.

A lock is a place `class:name`: `spin:ptl`, `spin:mm->page_table_lock`,
`mmap:mm`, `folio:folio`, `rcu`.  Its value is `held` or `free`; an
untracked lock is free.  Taking and dropping follow `vocabulary.LOCK_CALLS`.
Conditional locks are links on the value the call returns, as smatch models
them: `pte_offset_map_lock()` holds the PTE lock exactly when the pointer
it returned is not NULL, `spin_trylock()` when it returned true,
`pmd_trans_huge_lock()` when its result (the lock) is not NULL.  A lock a
call returns (`ptl = pmd_lock(mm, pmd)`) is named by where the result goes.
`guard()` holds to the end of its block, `scoped_guard()` for its block.

Not modelled: two names for one lock (`ptl` and `pml` when `ptl == pml`),
lock nesting counts, and locks taken by a callee (a summary says whether a
callee takes or drops a lock; the set here is the function's own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow import vocabulary
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

if TYPE_CHECKING:
    from analyzer.parsing import Function

HELD, FREE = "held", "free"
LOCK = register_dimension({HELD, FREE})
_POINTER_RESULT = frozenset({NULL, PTR})


class LockEffect(Record):
    """What a helper of the tree leaves done to a lock it is handed:
    `release` False: it returns holding it.  The lock is the argument, or
    `suffix` reached through it (`vmf` + `->ptl`); a class of None is
    whatever class the caller holds it as (a `__releases()` annotation)."""

    lock_class: str | None
    argument: int
    release: bool
    suffix: str = ""


class Locks(Tracker):
    name = "locks"

    def __init__(
        self, helper_effects: Callable[[str], tuple[LockEffect, ...]] | None = None
    ) -> None:
        # Helpers that take or drop a lock they are handed (`demo_lock(&xas)`).
        self.helper_effects = helper_effects

    def default(self, name: str) -> Kinds | None:
        return frozenset({FREE}) if _is_lock(name) else None

    def killed_by_call(self, name: str) -> bool:
        return not _is_lock(name)

    def call(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        if call.name is None:
            self._guard(analysis, state, call)
            return
        if call.name in vocabulary.SCOPED_GUARDS:
            lock = _guard_lock(call.arguments)
            if lock is not None:
                analysis.bind(state, lock, call.node.id, frozenset({HELD}))
            return
        spec = vocabulary.LOCK_CALLS.get(call.name)
        if spec is None:
            for effect in self.helper_effects(call.name) if self.helper_effects else ():
                if effect.argument >= len(call.arguments):
                    continue
                argument = call.arguments[effect.argument]
                name = ev.address_of(argument) or ev.place(argument)
                if name is None:
                    continue
                name += effect.suffix
                kinds = frozenset({FREE if effect.release else HELD})
                if effect.lock_class is not None:
                    analysis.bind(state, f"{effect.lock_class}:{name}", call.node.id, kinds)
                    continue
                for lock in [
                    p for p in state.places if _is_lock(p) and p.partition(":")[2] == name
                ]:
                    analysis.bind(state, lock, call.node.id, kinds)
            return
        lock = _lock_name(spec, call)
        if lock is None:
            return
        if spec.release:
            analysis.bind(state, lock, call.node.id, frozenset({FREE}))
            return
        if not spec.conditional:
            analysis.bind(state, lock, call.node.id, frozenset({HELD}))
            return
        # Held when the result says so: a pointer not NULL, a trylock true.
        held = f"lock:{call.node.id}"
        analysis.bind(state, lock, held, frozenset({HELD, FREE}))
        pointer = spec.argument == -1 or call.name.endswith("_lock") or "lock_vma" in call.name
        success, failure = (PTR, NULL) if pointer else (TRUE, FALSE)
        links = [
            Link(frozenset({success}), held, frozenset({HELD})),
            Link(frozenset({failure}), held, frozenset({FREE})),
        ]
        kinds = _POINTER_RESULT if pointer else BOOLEAN
        results[call.node.id] = frozenset({analysis.new_value(state, call.node, kinds, links)})

    def _guard(self, analysis: Analysis, state: State, call: ev.Call) -> None:
        """`guard(spinlock)(&lock)`."""
        callee = call.node.child_by_field_name("function")
        if (
            callee is None
            or callee.type != "call_expression"
            or syntax.call_name(callee) != "guard"
        ):
            return
        lock = _guard_lock((*syntax.arguments(callee), *call.arguments))
        if lock is not None:
            analysis.bind(state, lock, call.node.id, frozenset({HELD}))

    def scope_end(self, analysis: Analysis, state: State, node: Node) -> None:
        call = (
            node.named_children[0]
            if node.type == "expression_statement" and node.named_children
            else node
        )
        if call.type != "call_expression":
            return
        callee = call.child_by_field_name("function")
        if callee is not None and callee.type == "call_expression":
            lock = _guard_lock((*syntax.arguments(callee), *syntax.arguments(call)))
        else:
            lock = _guard_lock(tuple(syntax.arguments(call)))
        if lock is not None:
            analysis.bind(state, lock, f"end:{node.id}", frozenset({FREE}))


def _is_lock(name: str) -> bool:
    head = name.split(":", 1)[0]
    return head in _CLASSES


_CLASSES = frozenset(
    {spec.lock_class for spec in vocabulary.LOCK_CALLS.values()}
    | set(vocabulary.GUARD_CLASSES.values())
)


def _lock_name(spec: vocabulary.LockCall, call: ev.Call) -> str | None:
    if spec.fixed is not None:
        return spec.fixed
    if spec.argument == -1:
        targets = ev.destinations(call.node)
        return f"{spec.lock_class}:{targets[0]}" if targets else None
    if len(call.arguments) <= spec.argument:
        return None
    argument = call.arguments[spec.argument]
    name = ev.address_of(argument) or ev.place(argument)
    if name is None:
        return None
    # `pte_offset_map_lock(..., &ptl)` takes *ptl; it is then dropped as `ptl`.
    return f"{spec.lock_class}:{name}"


def _guard_lock(arguments: tuple[Node, ...]) -> str | None:
    if not arguments:
        return None
    kind = syntax.text(arguments[0])
    lock_class = vocabulary.GUARD_CLASSES.get(kind)
    if lock_class is None:
        return None
    if lock_class in ("rcu", "preempt", "irq"):
        return lock_class
    if len(arguments) < 2:
        return None
    name = ev.address_of(arguments[1]) or ev.place(arguments[1])
    return f"{lock_class}:{name}" if name is not None else None


def held(
    state: State, analysis: Analysis, classes: frozenset[str] | None = None
) -> dict[str, Kinds]:
    """The locks that may be held in `state`, with their kinds ({held}:
    held on every path)."""
    found = {}
    for name, values in state.places.items():
        if not _is_lock(name) or (classes is not None and name.split(":", 1)[0] not in classes):
            continue
        kinds = state.kinds_of_values(values)
        if HELD in kinds:
            found[name] = kinds & LOCK
    return found


def helper_effects(function_body: Node, parameters: list[str]) -> tuple[LockEffect, ...]:
    """The locks a helper takes and does not drop (or drops and does not
    take), among the ones it is handed: `xas_lock_irq(xas)` in
    `demo_lock(struct xa_state *xas)`."""
    taken: dict[tuple[str, int], int] = {}
    for call in syntax.calls(function_body):
        spec = vocabulary.LOCK_CALLS.get(syntax.call_name(call) or "")
        if spec is None or spec.fixed is not None or spec.argument < 0 or spec.conditional:
            continue
        arguments = syntax.arguments(call)
        if len(arguments) <= spec.argument:
            continue
        name = ev.address_of(arguments[spec.argument]) or ev.place(arguments[spec.argument])
        if name is None or name.lstrip("*") not in parameters:
            continue
        key = (spec.lock_class, parameters.index(name.lstrip("*")))
        taken[key] = taken.get(key, 0) + (-1 if spec.release else 1)
    return tuple(
        LockEffect(lock_class, index, count < 0)
        for (lock_class, index), count in sorted(taken.items())
        if count != 0
    )


def lock_name(call: Node, acquire: bool) -> str | None:
    """The lock a call takes (`acquire`) or drops, spelled as the lock
    places are (`spin:ptl`); None for any other call."""
    spec = vocabulary.LOCK_CALLS.get(syntax.call_name(call) or "")
    if spec is None or spec.release == acquire:
        return None
    return _lock_name(spec, ev.Call(call, syntax.call_name(call), tuple(syntax.arguments(call))))


_ANNOTATION = regex(rb"__(must_hold|releases)\(\s*([^()]+?)\s*\)")
# What says a function is entered with a lock held.
_ASSERT_HELD = frozenset(
    {
        "lockdep_assert_held",
        "lockdep_assert_held_once",
        "lockdep_assert_held_write",
        "lockdep_assert_held_read",
    }
)
_SPINLOCK_TYPES = frozenset({"spinlock_t", "raw_spinlock_t", "rwlock_t"})


def _annotations(function: Function, kind: bytes) -> list[str]:
    """The locks a `__must_hold()` or `__releases()` on the definition names."""
    body = function.body
    end = body.start_byte if body is not None else function.node.end_byte
    header = function.image.text[function.node.start_byte : end]
    return [
        match.group(2).decode("utf-8", "replace").lstrip("&").strip()
        for match in _ANNOTATION.finditer(header)
        if match.group(1) == kind
    ]


def annotated_effects(function: Function, parameters: list[str]) -> tuple[LockEffect, ...]:
    """A `__releases(vmf->ptl)` on a callee's definition: it returns with
    that lock, reached through one of its parameters, dropped."""
    effects = []
    for lock in _annotations(function, b"releases"):
        root, separator, rest = lock.partition("->")
        if root in parameters:
            suffix = separator + rest if separator else ""
            effects.append(LockEffect(None, parameters.index(root), True, suffix))
    return tuple(effects)


def held_on_entry(
    function: Function, type_of: Callable[[Node], str | None], classes: frozenset[str]
) -> dict[str, Kinds]:
    """Locks of `classes` the function says its caller holds: `__must_hold
    (lock)` or `__releases(lock)` on its definition, `lockdep_assert_held
    (lock)` in its body.  A lock's class is that of the calls that drop or
    retake it here (`spin_unlock(&resv->lock)`), else its declared type;
    each is {held} in the analysis' entry state."""
    body = function.body
    if body is None:
        return {}
    claimed = set(_annotations(function, b"must_hold") + _annotations(function, b"releases"))
    asserted: dict[str, Node] = {}
    for call in syntax.calls(body, _ASSERT_HELD):
        arguments = syntax.arguments(call)
        place = (ev.address_of(arguments[0]) or ev.place(arguments[0])) if arguments else None
        if place is not None:
            claimed.add(place)
            asserted[place] = arguments[0]
    if not claimed:
        return {}
    lock_classes: dict[str, str] = {}
    for call in syntax.calls(body):
        name = lock_name(call, True) or lock_name(call, False)
        if name is not None:
            lock_class, _, place = name.partition(":")
            lock_classes.setdefault(place, lock_class)
    found: dict[str, Kinds] = {}
    for place in claimed:
        lock_class = lock_classes.get(place)
        if lock_class is None and place in asserted:
            argument = ev.strip(asserted[place])
            if argument.type == "pointer_expression":
                argument = argument.child_by_field_name("argument") or argument
            if (type_of(argument) or "") in _SPINLOCK_TYPES:
                lock_class = "spin"
        if lock_class in classes:
            found[f"{lock_class}:{place}"] = frozenset({HELD})
    return found
