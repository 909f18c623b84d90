"""analyzer/flow/loops.py: loops as components of the graph, and what they walk."""

from __future__ import annotations

from analyzer import syntax
from analyzer.flow import events as ev
from analyzer.flow import flow_of
from analyzer.flow.loops import Loop, find_loops
from analyzer.images import Image
from analyzer.parsing import parse
from analyzer.rule import ReviewContext

CODE = """\
static LIST_HEAD(objects);

void demo(struct zone *zone, struct list_head *mine, struct xarray *xa)
{
	struct demo *obj, *tmp;
	struct mem_cgroup *memcg;
	struct task_struct *p;
	unsigned long pfn, i;
	void *entry;

	list_for_each_entry_safe(obj, tmp, &objects, node) {
		if (obj->dead)
			continue;
		cond_resched();
	}
	list_for_each_entry(obj, mine, node)
		touch(obj);
	for (memcg = mem_cgroup_iter(NULL, NULL, NULL); memcg;
		memcg = mem_cgroup_iter(NULL, memcg, NULL))
		age(memcg);
	for (pfn = zone->zone_start_pfn; pfn < zone_end_pfn(zone); pfn++)
		check(pfn);
	for (i = 0; i < pageblock_nr_pages; i++)
		check(i);
	for_each_process(p)
		count(p);
	xa_for_each(xa, i, entry)
		drop(entry);
	do {
		i--;
	} while (i);
}
"""


def _loops() -> tuple[list[Loop], object]:
    parsed = parse(Image.of(CODE.encode()))
    function = parsed.functions[0]
    flow = flow_of(function, parsed, ReviewContext(), "mm/demo.c")
    declared = {"obj", "tmp", "memcg", "p", "pfn", "i", "entry", "zone", "mine", "xa"}
    found = find_loops(function.body, function.image.text, flow.graph, lambda n: n not in declared)
    return found, flow


def test_what_loops_walk() -> None:
    loops, _ = _loops()
    assert [(loop.kind, loop.macro, loop.unbounded) for loop in loops] == [
        ("iterator", "list_for_each_entry_safe", "every entry of the global list objects"),
        ("iterator", "list_for_each_entry", None),  # a list the caller handed over
        ("for", None, "every memcg"),
        ("for", None, "every PFN of a zone, node or of memory"),
        ("for", None, None),  # a pageblock
        ("iterator", "for_each_process", "every process"),
        ("iterator", "xa_for_each", "every entry of an xarray"),
        ("do", None, None),
    ]


def test_iteration_points_hold_the_body_and_not_the_rest() -> None:
    loops, flow = _loops()
    first = loops[0]
    calls = {
        event.name
        for i in first.points
        for event in ev.events_of(flow.graph.points[i])
        if isinstance(event, ev.Call)
    }
    # The `continue` path and the cond_resched() path are both iterations.
    assert "cond_resched" in calls
    assert "touch" not in calls and "age" not in calls
    assert first.head is not None and first.head.id in first.points
    # Every loop has iterations, the do-while's body included.
    assert all(loop.points for loop in loops)
    do_loop = loops[-1]
    assert any(
        isinstance(e, ev.Assign) for i in do_loop.points for e in ev.events_of(flow.graph.points[i])
    )


def test_loops_are_matched_by_their_header_spelled_without_names() -> None:
    loops, _ = _loops()
    keys = [loop.key for loop in loops]
    assert len(set(keys)) == len(keys)
    renamed = CODE.replace("memcg", "iter")
    parsed = parse(Image.of(renamed.encode()))
    function = parsed.functions[0]
    flow = flow_of(function, parsed, ReviewContext(), "mm/demo.c")
    again = find_loops(function.body, function.image.text, flow.graph, lambda n: False)
    assert [loop.key for loop in again] == keys


def test_a_macro_loop_with_its_block() -> None:
    code = (
        "void f(struct address_space *mapping)\n{\n\tstruct vm_area_struct *vma;\n\n"
        "\tvma_interval_tree_foreach(vma, &mapping->i_mmap, 0, ULONG_MAX) {\n"
        "\t\tzap(vma);\n\t}\n\tdone();\n}\n"
    )
    parsed = parse(Image.of(code.encode()))
    function = parsed.functions[0]
    flow = flow_of(function, parsed, ReviewContext(), "mm/demo.c")
    (loop,) = find_loops(function.body, function.image.text, flow.graph, lambda n: False)
    assert loop.macro == "vma_interval_tree_foreach"
    zap = syntax.calls(function.body, "zap")[0]
    done = syntax.calls(function.body, "done")[0]
    assert loop.contains(zap) and not loop.contains(done)
    assert flow.point(zap).id in loop.points
