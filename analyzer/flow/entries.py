"""What a page-table entry can be, along paths.

The place `*pmd` stands for the entry `pmd` points to, and every read of it
(`*pmd`, `pmdp_get(pmd)`, `pmdp_get_lockless(pmd)`, `READ_ONCE(*pmd)`, a
local holding one) shares its value, until the pointer moves or the entry
is written.  An entry nobody has tested may be anything; the predicates
narrow it, on each edge of a branch:

| kind        | a PMD that...                         | a PTE that...                    |
|-------------|---------------------------------------|----------------------------------|
| none        | maps nothing                          | maps nothing                     |
| table       | points to a PTE table                 |                                  |
| huge        | maps a THP                            |                                  |
| devmap      | maps device memory (pmd_devmap)       |                                  |
| present     |                                       | maps a page                      |
| migration   | is a migration entry (is_swap_pmd)    | is a migration entry             |
| swap        |                                       | is a swap entry                  |
| device      | is a device-private entry             | is a device-private/exclusive one|
| marker      |                                       | is a PTE marker (uffd-wp, poison)|
| bad         | is corrupt (pmd_bad)                  |                                  |

Reads race: the model takes a value read without the lock for the entry
itself (what LOCKLESS_SNAPSHOT_NOT_REVALIDATED is about is left to it), and
an entry changes only through the writes it knows (`set_pmd_at()`, splits,
`pte_alloc()`, clears).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tree_sitter import Node

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow.values import (
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

NONE, TABLE, HUGE, DEVMAP, PRESENT = "none", "table", "huge", "devmap", "present"
MIGRATION, SWAP, DEVICE, MARKER, BAD = "migration", "swap", "device", "marker", "bad"
ENTRY = register_dimension(
    {NONE, TABLE, HUGE, DEVMAP, PRESENT, MIGRATION, SWAP, DEVICE, MARKER, BAD}
)
PMD_PRESENT = frozenset({TABLE, HUGE, DEVMAP})
NON_PRESENT = frozenset({NONE, MIGRATION, SWAP, DEVICE, MARKER})
SWAP_LIKE = frozenset({MIGRATION, SWAP, DEVICE, MARKER})
PMD_LEAF = frozenset({HUGE, DEVMAP})
# What a hugetlb entry can be: hugetlb pages are never swapped out nor
# device-private, so its only swap-type entries are migration and hwpoison
# entries (SWAP here), and markers.
HUGETLB = frozenset({NONE, PRESENT, MIGRATION, SWAP, MARKER})
NOT_TABLE = ENTRY - {TABLE}


def _test(true: Iterable[str], false: Iterable[str] | None = None) -> tuple[Kinds, Kinds]:
    yes = frozenset(true)
    return yes, frozenset(false) if false is not None else ENTRY - yes


# Predicates on an entry *value* (argument 0).
VALUE_TESTS: dict[str, tuple[Kinds, Kinds]] = {
    "pmd_none": _test({NONE}),
    "pud_none": _test({NONE}),
    # A corrupt PMD still has its present bit.
    "pmd_present": _test(PMD_PRESENT | {PRESENT, BAD}),
    "pmd_trans_huge": _test({HUGE}),
    "pmd_is_huge": _test({HUGE}),
    "pmd_leaf": _test(PMD_LEAF),
    "pmd_devmap": _test({DEVMAP}),
    "pmd_bad": _test({BAD}),
    "is_swap_pmd": _test(SWAP_LIKE),
    "is_pmd_migration_entry": _test({MIGRATION}),
    "pmd_is_migration_entry": _test({MIGRATION}),
    "is_pmd_device_private_entry": _test({DEVICE}),
    "pte_none": _test({NONE}),
    "pte_none_mostly": _test({NONE, MARKER}),
    "huge_pte_none": _test({NONE}),
    "huge_pte_none_mostly": _test({NONE, MARKER}),
    "pte_present": _test({PRESENT} | PMD_PRESENT),
    "is_swap_pte": _test({MIGRATION, SWAP, DEVICE, MARKER}),
    "is_pte_marker": _test({MARKER}),
    "is_hugetlb_entry_migration": _test({MIGRATION}),
    # Asked of hugetlb entries, whose only other swap-type entries are
    # migration entries and markers (HUGETLB): false means not SWAP.
    "is_hugetlb_entry_hwpoisoned": _test({SWAP}),
    "pte_marker_entry_uffd_wp": _test({MARKER}, ENTRY),
    "is_uffd_pte_marker": _test({MARKER}, ENTRY),
    "pte_is_uffd_marker": _test({MARKER}, ENTRY),
}
# Predicates on the entry a pointer points to (argument 0).
POINTER_TESTS: dict[str, tuple[Kinds, Kinds]] = {
    "pmd_none_or_clear_bad": _test({NONE, BAD}),
    "pmd_none_or_trans_huge_or_clear_bad": _test({NONE, BAD, HUGE, DEVMAP, MIGRATION}, {TABLE}),
    "pmd_trans_unstable": _test({NONE, BAD, HUGE, DEVMAP, MIGRATION}, {TABLE}),
    "pmd_devmap_trans_unstable": _test({NONE, BAD, HUGE, DEVMAP, MIGRATION}, {TABLE}),
    "pud_none_or_clear_bad": _test({NONE, BAD}),
}
# Reads of the entry a pointer points to: which argument is the pointer.
READS: dict[str, int] = {
    "pmdp_get": 0,
    "pmdp_get_lockless": 0,
    "pmd_read_atomic": 0,
    "ptep_get": 0,
    "ptep_get_lockless": 0,
    "pudp_get": 0,
    "huge_ptep_get": -1,  # huge_ptep_get(ptep) before v6.11, (mm, addr, ptep) after
}


ENTRY_POINTERS = frozenset({"pte_t *", "pmd_t *", "pud_t *"})


class EntryRead(Record):
    """A read of a page-table entry: plain (`*pte`, `pmd[i]`) or through
    an accessor (`ptep_get(pte)`, `READ_ONCE(*pmdp)`)."""

    node: Node
    pointer: str  # the entry pointer read through, as written
    pointer_type: str | None  # "pte_t *", ...; None where an accessor's is unknown
    accessor: str | None  # None for a plain read


def entry_reads(
    events: Iterable[ev.Event], type_of: Callable[[Node], str | None]
) -> list[EntryRead]:
    """The entry reads among `events`, in text order: plain reads through
    a pointer declared `pte_t *`/`pmd_t *`/`pud_t *` (not stores, not
    `&p[i]`, not the operand of READ_ONCE()), and accessor calls."""

    def entry_pointer(pointer: Node | None) -> str | None:
        if pointer is None or pointer.type not in ("identifier", "field_expression"):
            return None
        declared = type_of(pointer)
        return declared if declared in ENTRY_POINTERS else None

    found = []
    for event in events:
        if isinstance(event, ev.Deref) and event.node.type != "field_expression":
            kind = entry_pointer(event.pointer)
            if kind is not None and not _stored_or_accessed(event.node):
                found.append(EntryRead(event.node, syntax.text(event.pointer), kind, None))
        elif isinstance(event, ev.Call) and (event.name in READS or event.name == "READ_ONCE"):
            if not event.arguments:
                continue
            operand = ev.strip(event.arguments[READS.get(event.name or "", 0)])
            if event.name == "READ_ONCE":
                # READ_ONCE(*p) / READ_ONCE(p[i]) of an entry pointer only
                if operand.type not in ("pointer_expression", "subscript_expression"):
                    continue
                operand = operand.child_by_field_name("argument") or operand
                if entry_pointer(operand) is None:
                    continue
            found.append(
                EntryRead(event.node, syntax.text(operand), entry_pointer(operand), event.name)
            )
    return sorted(found, key=lambda read: read.node.start_byte)


def _stored_or_accessed(node: Node) -> bool:
    """Is `*p` stored to, its address taken (`&p[i]`), or the operand of
    READ_ONCE()/WRITE_ONCE() (the accessor, not a plain read)?"""
    parent = syntax.unparenthesized_parent(node)
    while node.parent is not None and node.parent.type == "parenthesized_expression":
        node = node.parent
    if parent is None:
        return False
    if parent.type == "assignment_expression":
        return parent.child_by_field_name("left") == node
    if parent.type == "pointer_expression":
        return syntax.text(parent.child_by_field_name("operator")) == "&"
    return (
        parent.type == "argument_list"
        and parent.parent is not None
        and syntax.call_name(parent.parent) in ("READ_ONCE", "WRITE_ONCE")
    )


def reads_entry(expression: Node) -> bool:
    """Does the expression read an entry itself (`ptep_get(pte)`, `*pmd`),
    rather than copy a snapshot of one?"""
    expression = ev.strip(expression)
    if expression.type == "call_expression":
        return syntax.call_name(expression) in READS or syntax.call_name(expression) == "READ_ONCE"
    return (
        expression.type == "pointer_expression"
        and syntax.text(expression.child_by_field_name("operator")) == "*"
    )


def read_place(expression: Node) -> str | None:
    """The entry an entry read reads: `*pte` for `ptep_get(pte)`, `*pte`
    and `READ_ONCE(*pte)`."""
    expression = ev.strip(expression)
    if not reads_entry(expression):
        return None
    if expression.type == "call_expression":
        arguments = syntax.arguments(expression)
        name = ev.place(arguments[0]) if arguments else None
        return None if name is None else name if name.startswith("*") else f"*{name}"
    return ev.place(expression)


LOCKLESS_READS = frozenset({"pmdp_get_lockless", "ptep_get_lockless", "pmd_read_atomic"})
# Writes that leave the entry as these kinds: pointer argument, kinds.
WRITES: dict[str, tuple[int, Kinds]] = {
    "split_huge_pmd": (1, frozenset({NONE, TABLE})),
    "__split_huge_pmd": (1, frozenset({NONE, TABLE})),
    "split_huge_pmd_locked": (1, frozenset({NONE, TABLE})),
    "pmd_clear": (0, frozenset({NONE})),
    "pmdp_collapse_flush": (2, frozenset({NONE})),
    "pmdp_huge_clear_flush": (2, frozenset({NONE})),
    "pmdp_huge_get_and_clear": (2, frozenset({NONE})),
    "pte_clear": (2, frozenset({NONE})),
    "ptep_clear": (2, frozenset({NONE})),
    "ptep_get_and_clear": (2, frozenset({NONE})),
    "pmd_populate": (1, frozenset({TABLE})),
    "pmd_install": (1, frozenset({TABLE, HUGE, DEVMAP, MIGRATION, BAD})),
    # Once waited for, that migration entry is gone (the caller re-reads).
    "pmd_migration_entry_wait": (1, ENTRY - {MIGRATION}),
}
# Writes of an entry of unknown kind: what it holds afterwards is anyone's guess.
OVERWRITES: dict[str, int] = {"set_pmd_at": 2, "set_pte_at": 2, "set_ptes": 2, "set_huge_pte_at": 2}
# Allocation of a missing table: returns non-zero on failure; on success the
# entry is no longer none (a racing fault may have put a huge one there).
ALLOCATIONS: dict[str, int] = {"pte_alloc": 1, "__pte_alloc": 1}
# Maps of the PTE table under a PMD: the PMD argument, and whether the map
# fails (returns NULL) when the PMD is not a table — it does since v6.5.
# They return NULL when the table cannot be allocated, in every version.
ALLOCATING_MAPS = frozenset({"pte_alloc_map", "pte_alloc_map_lock"})
MAPS: dict[str, int] = {
    "pte_offset_map": 0,
    "__pte_offset_map": 0,
    "pte_offset_map_lock": 1,
    "__pte_offset_map_lock": 1,
    "pte_offset_map_nolock": 1,
    "pte_offset_map_ro_nolock": 1,
    "pte_offset_map_rw_nolock": 1,
    "pte_alloc_map": 1,
    "pte_alloc_map_lock": 1,
}
# The maps of a table already there (they fail on a PMD that is not one).
TABLE_MAPS = frozenset(MAPS) - ALLOCATING_MAPS
# Functions named for the huge PMD they are handed (zap_huge_pmd(),
# madvise_free_huge_pmd(), change_huge_pmd()): they deal with it at the PMD
# level and answer whether they did.
HUGE_HANDLER = regex(r"(?<!split)_huge_pmd$")
# Returns a lock (non-NULL) exactly for a huge, devmap or swap PMD.
HUGE_LOCKS: dict[str, int] = {"pmd_trans_huge_lock": 0}


# Calls that build an entry of a known kind out of a swap entry or another
# entry of the swap form (`entry = swp_entry_to_pte(swp_entry)` in a
# migration branch is still a migration entry, whatever the call).
SWAP_FORM_MODIFIERS = regex(r"(?:pte|pmd)_swp_(?:mk|clear_)\w+")
CONSTRUCTORS: dict[str, Kinds] = {
    "swp_entry_to_pte": SWAP_LIKE,
    "swp_entry_to_pmd": frozenset({MIGRATION}),
    "make_pte_marker": frozenset({MARKER}),
}


def constructed_kinds(name: str) -> Kinds | None:
    """The kinds of the entry a constructor call returns, if known."""
    if name in CONSTRUCTORS:
        return CONSTRUCTORS[name]
    return SWAP_LIKE if SWAP_FORM_MODIFIERS.fullmatch(name) else None


class Entries(Tracker):
    name = "entries"

    def __init__(
        self,
        maps_fail: bool = True,
        mapping_helpers: Callable[[str], bool] | None = None,
        predicates: Callable[[str], tuple[Node, list[str]] | None] | None = None,
    ) -> None:
        self.maps_fail = maps_fail
        # Functions of the tree that return what a map returned, NULL included
        # (`get_locked_pte()`): their result is tracked like a map's.
        self.mapping_helpers = mapping_helpers
        self.predicates = predicates
        # Which expressions point to a page-table entry (declared types).
        self.entry_pointer: Callable[[Node], bool] | None = None

    def default(self, name: str) -> Kinds | None:
        return ENTRY if name.startswith("*") else None

    def killed_by_call(self, name: str) -> bool:
        return True

    def reads_only(self, call: str) -> bool:
        # `pte_offset_map(&_pmd, addr)` maps the table a local copy points to.
        return call in MAPS or call in READS or call in VALUE_TESTS or call in POINTER_TESTS

    def tests(self, call: Node) -> Iterable[tuple[Node | str, Kinds, Kinds]]:
        name = syntax.call_name(call) or ""
        arguments = syntax.arguments(call)
        if not arguments:
            return
        if name in VALUE_TESTS:
            yield arguments[0], *VALUE_TESTS[name]
        elif name in POINTER_TESTS:
            entry = _entry_place(arguments[0])
            if entry is not None:
                yield entry, *POINTER_TESTS[name]

    def call(
        self, analysis: Analysis, state: State, call: ev.Call, results: dict[int, frozenset[Value]]
    ) -> None:
        name = call.name or ""
        arguments = call.arguments
        constructed = constructed_kinds(name)
        if constructed is not None:
            results[call.node.id] = frozenset({analysis.new_value(state, call.node, constructed)})
            return
        if name == "READ_ONCE" and arguments:
            values = analysis.value_of(state, arguments[0], results)
            if values:
                results[call.node.id] = values
            return
        if name in READS and arguments:
            pointer = arguments[READS[name]]
            entry = _entry_place(pointer)
            if entry is not None and name in LOCKLESS_READS:
                # A read without the lock is a new value: a retry reads
                # what the entry has become, not what it was.
                analysis.bind(state, entry, call.node.id, ENTRY)
                results[call.node.id] = frozenset({call.node.id})
            elif entry is not None and name == "huge_ptep_get" and entry not in state.places:
                analysis.bind(state, entry, call.node.id, HUGETLB)
                results[call.node.id] = frozenset({call.node.id})
            elif entry is not None and name == "huge_ptep_get":
                # What the pointer held, read as the hugetlb entry it is.
                held = analysis.held_values(state, entry, call.node)
                for value in held:
                    narrowed = state.kinds.get(value, ENTRY) & HUGETLB
                    if narrowed:
                        state.kinds[value] = narrowed
                results[call.node.id] = held
            elif entry is not None:
                results[call.node.id] = analysis.held_values(state, entry, call.node)
            else:
                # `ptep_get(pte + i)`: an entry nobody else names.
                results[call.node.id] = frozenset({analysis.new_value(state, call.node, ENTRY)})
            return
        if name in WRITES:
            index, kinds = WRITES[name]
            entry = _entry_place(arguments[index]) if len(arguments) > index else None
            if entry is not None:
                analysis.bind(state, entry, call.node.id, kinds)
            return
        if name in OVERWRITES:
            index = OVERWRITES[name]
            entry = _entry_place(arguments[index]) if len(arguments) > index else None
            if entry is not None:
                analysis.forget(state, entry, subplaces=False)
            return
        if name in ALLOCATIONS and len(arguments) > ALLOCATIONS[name]:
            entry = _entry_place(arguments[ALLOCATIONS[name]])
            if entry is None:
                return
            target = _single(analysis.held_values(state, entry, call.node))
            links = [Link(frozenset({FALSE}), target, ENTRY - {NONE})] if target is not None else []
            results[call.node.id] = frozenset(
                {analysis.new_value(state, call.node, frozenset({TRUE, FALSE}), links)}
            )
            return
        if name in MAPS and len(arguments) > MAPS[name]:
            pointer = arguments[MAPS[name]]
            entry = _entry_place(pointer)
            if entry is None:
                return
            target = _single(analysis.held_values(state, entry, call.node))
            if name not in ALLOCATING_MAPS and (
                not self.maps_fail or _private_table(analysis, state, pointer, target)
            ):
                results[call.node.id] = frozenset(
                    {analysis.new_value(state, call.node, frozenset({PTR}))}
                )
                return
            links = []
            if target is not None:
                links = [
                    Link(frozenset({PTR}), target, frozenset({TABLE})),
                    Link(frozenset({NULL}), target, NOT_TABLE),
                ]
            results[call.node.id] = frozenset(
                {analysis.new_value(state, call.node, frozenset({NULL, PTR}), links)}
            )
            return
        if self.maps_fail and self.mapping_helpers is not None and self.mapping_helpers(name):
            results[call.node.id] = frozenset(
                {analysis.new_value(state, call.node, frozenset({NULL, PTR}))}
            )
            return
        if HUGE_HANDLER.search(name) and arguments:
            # `if (zap_huge_pmd(tlb, vma, pmd, addr)) continue;`: a handler of
            # the huge PMD it is handed answers whether there was one (it
            # looked under pmd_trans_huge_lock()); when it says no, the PMD
            # is none or a table.
            entry = next(
                (
                    e
                    for a in arguments
                    if (e := _entry_place(a)) is not None
                    and e.startswith("*")
                    and (self.entry_pointer is None or self.entry_pointer(a))
                ),
                None,
            )
            if entry is not None:
                target = _single(analysis.held_values(state, entry, call.node))
                if target is not None:
                    links = [Link(frozenset({FALSE}), target, frozenset({NONE, TABLE, BAD}))]
                    results[call.node.id] = frozenset(
                        {analysis.new_value(state, call.node, frozenset({TRUE, FALSE}), links)}
                    )
            return
        if name in HUGE_LOCKS and len(arguments) > HUGE_LOCKS[name]:
            entry = _entry_place(arguments[HUGE_LOCKS[name]])
            if entry is None:
                return
            target = _single(analysis.held_values(state, entry, call.node))
            links = []
            if target is not None:
                links = [
                    Link(frozenset({PTR}), target, frozenset({HUGE, DEVMAP, MIGRATION, DEVICE})),
                    Link(frozenset({NULL}), target, frozenset({NONE, TABLE, BAD})),
                ]
            results[call.node.id] = frozenset(
                {analysis.new_value(state, call.node, frozenset({NULL, PTR}), links)}
            )


def _entry_place(pointer: Node) -> str | None:
    """`*pmd` for the pointer `pmd` (`&vmf->orig_pmd`'s entry is the local itself)."""
    address = ev.address_of(pointer)
    if address is not None:
        return address
    name = ev.place(pointer)
    return f"*{name}" if name is not None else None


def _private_table(analysis: Analysis, state: State, pointer: Node, entry: Value | None) -> bool:
    """`pte_offset_map(&_pmd, addr)` of a local copy the function made a
    table itself (`pmd_populate(mm, &_pmd, pgtable)`): nobody else can change
    it, so the map cannot fail.  A PMD in the page table can always change."""
    if ev.address_of(pointer) is None or entry is None:
        return False
    kinds = state.kinds.get(entry, frozenset()) & ENTRY
    return bool(kinds) and kinds <= {TABLE}


def _single(values: frozenset[Value]) -> Value | None:
    return next(iter(values)) if len(values) == 1 else None


# The kinds an entry of each level can be.
LEVELS: dict[str, Kinds] = {
    # Device-private PMDs came after the trees this models (6.1, 6.12).
    "PMD": frozenset({NONE, TABLE, HUGE, DEVMAP, MIGRATION, BAD}),
    "PTE": frozenset({NONE, PRESENT, SWAP, MIGRATION, DEVICE, MARKER}),
}


def truth_kinds(condition: Node, value: str, universe: Kinds) -> Kinds | None:
    """For which kinds of the entry `value` (its text) `condition` holds,
    when it depends on tests of that entry alone; None otherwise.  Two
    conditions with the same answer are the same test, however spelled."""
    from analyzer.flow.vocabulary import TRANSPARENT_TESTS

    node = ev.strip(condition)
    if node.type == "unary_expression" and syntax.text(node.child_by_field_name("operator")) == "!":
        inner = truth_kinds(node.child_by_field_name("argument"), value, universe)
        return universe - inner if inner is not None else None
    if node.type == "binary_expression":
        operator = syntax.text(node.child_by_field_name("operator"))
        if operator in ("&&", "||"):
            left = truth_kinds(node.child_by_field_name("left"), value, universe)
            right = truth_kinds(node.child_by_field_name("right"), value, universe)
            if left is None or right is None:
                return None
            return left & right if operator == "&&" else left | right
        return None
    if node.type != "call_expression":
        return None
    name = syntax.call_name(node) or ""
    arguments = syntax.arguments(node)
    if name in TRANSPARENT_TESTS and arguments:
        return truth_kinds(arguments[0], value, universe)
    if name in VALUE_TESTS and arguments and _squeezed(arguments[0]) == value:
        return VALUE_TESTS[name][0] & universe
    return None


def _squeezed(node: Node) -> str:
    return "".join(syntax.text(node).split())
