"""analyzer/flow/sleeping.py: gfp masks, what may sleep, atomic callbacks, entry locks."""

from __future__ import annotations

import pytest

from analyzer import syntax
from analyzer.flow import flow_of
from analyzer.flow.locks import held_on_entry
from analyzer.flow.sleeping import (
    DIRECT_RECLAIM,
    NO_SLEEP_CLASSES,
    Sleepers,
    atomic_callback_contexts,
    function_masks,
    gfp_value,
    may_block,
    releases_foreign_lock,
)
from analyzer.images import Image
from analyzer.parsing import ParsedFile, parse
from analyzer.rule import ReviewContext


def _parse(code: str) -> ParsedFile:
    return parse(Image.of(code.encode()))


def _expression(text: str):
    parsed = _parse(f"void f(void)\n{{\n\tx = {text};\n}}\n")
    body = parsed.functions[0].body
    assignment = next(n for n in syntax.walk(body) if n.type == "assignment_expression")
    return assignment.child_by_field_name("right")


@pytest.mark.parametrize(
    ("mask", "blocks"),
    [
        ("GFP_KERNEL", True),
        ("GFP_NOFS | __GFP_NOWARN", True),
        ("GFP_HIGHUSER_MOVABLE", True),
        ("GFP_TRANSHUGE", True),
        ("GFP_TRANSHUGE_LIGHT", False),
        ("GFP_ATOMIC", False),
        ("GFP_NOWAIT | __GFP_NOWARN", False),
        ("GFP_KERNEL & ~__GFP_DIRECT_RECLAIM", False),
        ("GFP_KERNEL & ~__GFP_RECLAIM", False),
        ("(gfp_t)(GFP_USER | __GFP_ZERO)", True),
        ("current_gfp_context(GFP_KERNEL)", True),
        ("gfp", None),
        ("gfp | __GFP_ZERO", None),
        ("atomic ? GFP_ATOMIC : GFP_KERNEL", None),
        ("zero ? GFP_KERNEL | __GFP_ZERO : GFP_KERNEL", True),
    ],
)
def test_gfp_masks_are_read_as_flag_sets(mask: str, blocks: bool | None) -> None:
    assert may_block(gfp_value(_expression(mask))) is blocks


def test_local_masks_agree_or_are_unknown() -> None:
    parsed = _parse(
        "void f(int atomic)\n{\n"
        "\tgfp_t always = GFP_NOWAIT;\n"
        "\tgfp_t mixed = GFP_KERNEL;\n"
        "\tgfp_t widened = GFP_KERNEL;\n"
        "\tif (atomic)\n\t\tmixed = GFP_ATOMIC;\n"
        "\twidened |= __GFP_NOWARN;\n"
        "}\n"
    )
    masks = function_masks(parsed.functions[0])
    assert may_block(masks["always"]) is False
    assert masks["mixed"] is None
    assert may_block(masks["widened"]) is True


class _Summaries:
    """The definitions a Sleepers asks for: the functions of one parsed file."""

    def __init__(self, parsed: ParsedFile) -> None:
        self.parsed = parsed

    def definition(self, name: str):
        return next((f for f in self.parsed.functions if f.name == name), None)


HELPERS = """\
static void *grab(size_t n, gfp_t gfp)
{
	return kmalloc(n, gfp);
}

static void drop_and_sleep(spinlock_t *lock)
{
	spin_unlock(lock);
	cond_resched();
	spin_lock(lock);
}

static void maybe_sleep(bool blocking)
{
	if (blocking)
		msleep(1);
}

static void caller(struct shrinker *s, struct shrink_control *sc, spinlock_t *lock)
{
	grab(8, GFP_KERNEL);
	grab(8, GFP_ATOMIC);
	drop_and_sleep(lock);
	maybe_sleep(true);
	mutex_lock(&m);
	s->count_objects(s, sc);
	kfree(NULL);
}
"""


def test_sleepers_bind_callee_gfp_parameters_and_skip_lock_droppers() -> None:
    parsed = _parse(HELPERS)
    caller = parsed.functions[-1]
    sleepers = Sleepers(_Summaries(parsed), caller.name)
    masks = function_masks(caller)
    found = {}
    for call in syntax.calls(caller.body):
        sleep = sleepers.sleeps(call, masks)
        found[syntax.text(call)] = sleep.describe() if sleep is not None else None
    assert found["grab(8, GFP_KERNEL)"] == "grab() -> kmalloc() (gfp allows direct reclaim)"
    assert found["grab(8, GFP_ATOMIC)"] is None
    assert found["drop_and_sleep(lock)"] is None  # it drops the caller's lock first
    assert found["maybe_sleep(true)"] is None  # the caller's flag decides
    assert found["mutex_lock(&m)"] == "mutex_lock()"
    assert found["s->count_objects(s, sc)"].startswith("->count_objects()")
    assert found["kfree(NULL)"] is None
    # A helper that drops its caller's lock still gives the CPU away.
    drop = next(c for c in syntax.calls(caller.body) if syntax.call_name(c) == "drop_and_sleep")
    assert sleepers.reschedules(drop, masks)


def test_lock_droppers_are_recognised() -> None:
    parsed = _parse(HELPERS)
    assert releases_foreign_lock(parsed.functions[1].body)
    assert not releases_foreign_lock(parsed.functions[0].body)


CALLBACKS = """\
static int fill_pte(pte_t *ptep, unsigned long addr, void *data)
{
	return 0;
}

static int count_pte(pte_t *pte, unsigned long addr, unsigned long next, struct mm_walk *walk)
{
	return 0;
}

static const struct mm_walk_ops count_ops = {
	.pte_entry = count_pte,
};

static void drain(void *info)
{
}

static int start(unsigned long a, unsigned long s)
{
	on_each_cpu(drain, NULL, 1);
	return apply_to_page_range(&init_mm, a, s, fill_pte, NULL);
}
"""


def test_callbacks_the_kernel_runs_in_atomic_context() -> None:
    parsed = _parse(CALLBACKS)
    assert "apply_to_page_range()" in atomic_callback_contexts(parsed, "fill_pte")[0]
    assert "pte_entry" in atomic_callback_contexts(parsed, "count_pte")[0]
    assert "interrupt context" in atomic_callback_contexts(parsed, "drain")[0]
    assert atomic_callback_contexts(parsed, "start") == []


ENTRY = """\
static int refill(struct resv_map *resv)
	__must_hold(&resv->lock)
{
	spin_unlock(&resv->lock);
	p = kmalloc(8, GFP_KERNEL);
	spin_lock(&resv->lock);
	q = kmalloc(8, GFP_KERNEL);
	return 0;
}

static int asserted(struct demo *d)
{
	lockdep_assert_held(&d->mutex);
	mutex_unlock(&d->mutex);
	return 0;
}

static void reuse(struct vm_fault *vmf)
	__releases(vmf->ptl)
{
	pte_unmap_unlock(vmf->pte, vmf->ptl);
}

static void shared(struct vm_fault *vmf)
	__releases(vmf->ptl)
{
	reuse(vmf);
	folio_lock(folio);
}
"""


def test_locks_a_function_says_its_caller_holds() -> None:
    parsed = _parse(ENTRY)
    refill, asserted, _, shared = parsed.functions
    untyped = lambda _: None  # noqa: E731
    assert held_on_entry(refill, untyped, NO_SLEEP_CLASSES) == {
        "spin:resv->lock": frozenset({"held"})
    }
    assert held_on_entry(asserted, untyped, NO_SLEEP_CLASSES) == {}  # a mutex: sleeping is fine
    flow = flow_of(refill, parsed, ReviewContext(), "mm/x.c")
    first, second = syntax.calls(refill.body, "kmalloc")
    assert flow.locks_at(first, NO_SLEEP_CLASSES) == {}
    assert flow.locks_at(second, NO_SLEEP_CLASSES) == {"spin:resv->lock": frozenset({"held"})}
    # `reuse()` is annotated __releases(vmf->ptl): after it, the lock is free.
    flow = flow_of(shared, parsed, ReviewContext(), "mm/x.c")
    (lock,) = syntax.calls(shared.body, "folio_lock")
    assert flow.locks_at(lock, NO_SLEEP_CLASSES) == {}


def test_direct_reclaim_is_the_flag_that_sleeps() -> None:
    assert DIRECT_RECLAIM == "__GFP_DIRECT_RECLAIM"
    assert may_block(gfp_value(_expression("__GFP_DIRECT_RECLAIM")))
    assert not may_block(gfp_value(_expression("__GFP_KSWAPD_RECLAIM")))
