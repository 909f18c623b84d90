"""The ownership tracker: what a function holds, hands over and may no
longer touch, along paths (analyzer/flow/ownership.py)."""

from __future__ import annotations

from collections.abc import Callable

from analyzer.flow import flow_of
from analyzer.flow import ownership as own
from analyzer.flow.values import Analysis, State
from analyzer.images import Image
from analyzer.parsing import parse
from analyzer.rule import ReviewContext


def _analysis(source: str, name: str | None = None) -> Analysis:
    parsed = parse(Image.of(source.encode()))
    function = (
        parsed.functions[0] if name is None else next(f for f in parsed.functions if f.name == name)
    )
    flow = flow_of(function, parsed, ReviewContext(), "mm/demo.c")
    analysis = own.ownership(flow)
    assert analysis.complete
    return analysis


def _exits(analysis: Analysis) -> list[tuple[str, State]]:
    """(return statement text or "end", state) for each path out."""
    return [
        (e.node.text.decode() if e.node is not None else "end", e.state)
        for e in own.exits(analysis)
    ]


def _held(state: State, family: str) -> set[frozenset[str]]:
    """The kinds each resource of `family` has in a state."""
    return {
        state.kinds_of_values(values) & own.OWNERSHIP
        for _place, found, values in own.resource_places(state)
        if found == family
    }


def _owned_at(analysis: Analysis, family: str) -> dict[str, bool]:
    """For each exit: is a resource of `family` owned on that path?"""
    found: dict[str, bool] = {}
    for text, state in _exits(analysis):
        owned = any(
            own.on_this_path(state, values, {own.OWNED})
            for _place, fam, values in own.resource_places(state)
            if fam == family
        )
        found[text] = found.get(text, False) or owned
    return found


def test_try_get_holds_only_where_it_succeeded() -> None:
    analysis = _analysis(
        """
int demo(struct folio *folio)
{
	if (!folio_try_get(folio))
		return -EAGAIN;
	if (demo_busy(folio))
		return -EBUSY;
	folio_put(folio);
	return 0;
}
"""
    )
    assert _owned_at(analysis, "ref") == {
        "return -EAGAIN;": False,
        "return -EBUSY;": True,
        "return 0;": False,
    }


def test_kobject_init_and_add_adds_only_on_zero_and_needs_a_put_either_way() -> None:
    analysis = _analysis(
        """
int demo(struct demo_dir *dir, struct kobject *parent)
{
	int err;

	err = kobject_init_and_add(&dir->kobj, &demo_ktype, parent, "demo");
	if (err)
		return err;
	return 0;
}
"""
    )
    exits = dict(_exits(analysis))
    failed, added = exits["return err;"], exits["return 0;"]
    assert _held(failed, "sysfs") == {frozenset({own.GONE})}
    assert _held(failed, "kobject") == {frozenset({own.OWNED})}
    assert _held(added, "sysfs") == {frozenset({own.OWNED})}


def test_negative_result_test_narrows_an_int_acquisition() -> None:
    # `ret < 0` taken: ret is not 0, so kobject_add() failed (values.py).
    analysis = _analysis(
        """
int demo(struct kobject *kobj, struct kobject *parent)
{
	int ret = kobject_add(kobj, parent, "demo");

	if (ret < 0)
		return ret;
	return 0;
}
"""
    )
    assert _owned_at(analysis, "sysfs") == {"return ret;": False, "return 0;": True}


def test_allocation_is_owned_when_not_null_and_handed_over_when_stored() -> None:
    analysis = _analysis(
        """
int demo(struct demo_ctx *ctx, struct list_head *head)
{
	struct demo_item *item, *other;

	item = kzalloc(sizeof(*item), GFP_KERNEL);
	if (!item)
		return -ENOMEM;
	other = kzalloc(sizeof(*other), GFP_KERNEL);
	if (!other)
		return -EAGAIN;
	ctx->item = item;
	list_add(&other->node, head);
	return 0;
}
"""
    )
    kinds = {text: _held(state, "alloc") for text, state in _exits(analysis)}
    assert kinds["return -ENOMEM;"] == {frozenset({own.GONE})}
    assert frozenset({own.OWNED}) in kinds["return -EAGAIN;"]  # item leaks there
    assert kinds["return 0;"] == {frozenset({own.HANDED})}


def test_release_through_an_alias() -> None:
    analysis = _analysis(
        """
void demo(void)
{
	char *buf, *alias;

	buf = kmalloc(64, GFP_KERNEL);
	alias = buf;
	kfree(alias);
}
"""
    )
    assert _owned_at(analysis, "alloc") == {"end": False}


def test_correlated_branches_on_one_flag_agree() -> None:
    analysis = _analysis(
        """
void demo(struct folio *folio, bool pinned)
{
	if (!pinned)
		folio_get(folio);
	demo_work(folio);
	if (!pinned)
		folio_put(folio);
}
"""
    )
    assert _owned_at(analysis, "ref") == {"end": False}


def test_correlated_constant_tests_agree() -> None:
    analysis = _analysis(
        """
void demo(struct folio *folio, enum demo_mode mode)
{
	if (mode == DEMO_HOLD)
		folio_get(folio);
	demo_work(folio);
	if (mode == DEMO_HOLD)
		folio_put(folio);
}
"""
    )
    assert _owned_at(analysis, "ref") == {"end": False}


def _liveness(analysis: Analysis, call: str, name: str) -> set[str]:
    """Why `name` is no longer alive just before each call to `call`."""
    found: set[str] = set()
    for node in analysis.graph.nodes_by_id.values():
        if node.type != "call_expression" or node.child_by_field_name("function") is None:
            continue
        if node.child_by_field_name("function").text.decode() != call:
            continue
        for state, _results in analysis.before_each(node):
            values = state.places.get(f"{name}->@live", frozenset())
            if own.on_this_path(state, values, {own.RELEASED}):
                found |= {str(v).split(":")[0] for v in values}
            else:
                found.add("alive")
    return found


def test_put_of_a_reference_not_taken_here_leaves_the_object_unpinned() -> None:
    analysis = _analysis(
        """
void demo(pmd_t old_pmd, struct folio *folio)
{
	struct page *page = pmd_page(old_pmd);

	put_page(page);
	demo_use(page);
	folio_get(folio);
	folio_put(folio);
	demo_other(folio);
}
"""
    )
    assert _liveness(analysis, "demo_use", "page") == {own.DROPPED}
    assert _liveness(analysis, "demo_other", "folio") == {"alive"}  # balanced


def test_free_and_reassignment() -> None:
    analysis = _analysis(
        """
void demo(struct demo_item *item)
{
	kfree(item);
	demo_use(item);
	item = demo_new();
	demo_again(item);
}
"""
    )
    assert _liveness(analysis, "demo_use", "item") == {own.FREED}
    assert _liveness(analysis, "demo_again", "item") == {"alive"}


def test_lookup_pinned_by_a_lock_until_a_reference_is_taken() -> None:
    analysis = _analysis(
        """
void demo(struct mm_struct *mm, struct xarray *xa, unsigned long addr)
{
	struct vm_area_struct *vma;
	struct folio *folio;

	mmap_read_lock(mm);
	vma = find_vma(mm, addr);
	mmap_read_unlock(mm);
	demo_vma(vma);

	rcu_read_lock();
	folio = xa_load(xa, addr);
	if (folio && !folio_try_get(folio))
		folio = NULL;
	rcu_read_unlock();
	demo_folio(folio);
}
"""
    )
    assert _liveness(analysis, "demo_vma", "vma") == {own.UNPINNED}
    assert _liveness(analysis, "demo_folio", "folio") == {"alive"}


def test_merges_keep_paths_that_differ_in_what_they_own_apart() -> None:
    # Past the width, the newest path state joins the one whose join loses
    # least; the tracker's weight makes a difference in what is owned cost
    # more than two differences elsewhere (values.py's `_join_loss`).
    from analyzer.flow.values import _join_loss

    def state(owned: str, a: str, b: str) -> State:
        return State(
            {"folio->@ref": frozenset({owned}), "a": frozenset({a}), "b": frozenset({b})},
            {owned: frozenset({owned}), a: frozenset({a}), b: frozenset({b})},
        )

    newest = state(own.GONE, "x", "y")
    candidates = [state(own.OWNED, "x", "y"), state(own.GONE, "z", "w")]

    def closest(weight: Callable[[str], int] | None = None) -> int:
        losses = [
            _join_loss(c, newest) if weight is None else _join_loss(c, newest, weight)
            for c in candidates
        ]
        return losses.index(min(losses))

    assert closest() == 0
    assert closest(own.Ownership().weight) == 1


def test_statement_after_a_label_and_a_comment_is_in_the_graph() -> None:
    # tree-sitter puts the comment inside the labeled statement, before the
    # statement the label names (cfg.py); the reassignment there must run.
    analysis = _analysis(
        """
struct folio *demo(struct folio *folio)
{
	folio_put(folio);
skip:
	/* a comment between the label and its statement */
	folio = demo_lookup();
	demo_use(folio);
	return folio;
}
"""
    )
    assert _liveness(analysis, "demo_use", "folio") == {"alive"}


def test_reference_taken_under_the_lock_is_the_last_one_after_the_unlock() -> None:
    analysis = _analysis(
        """
void demo(struct vm_area_struct *vma, pmd_t *pmd)
{
	spinlock_t *ptl = pmd_trans_huge_lock(pmd, vma);
	struct folio *folio;

	if (!ptl)
		return;
	folio = pmd_folio(*pmd);
	folio_get(folio);
	spin_unlock(ptl);
	demo_while_held(folio);
	folio_put(folio);
	demo_after_put(folio);
}
"""
    )
    assert _liveness(analysis, "demo_while_held", "folio") == {"alive"}
    assert _liveness(analysis, "demo_after_put", "folio") == {own.LAST}


def test_a_failure_at_a_shared_return_is_not_merged_with_the_successes() -> None:
    # Many paths meet at `return err;` (each optional object set or not);
    # past the width, the ownership tracker's weights keep the failure of
    # demo_check_cred(), which still holds the nsproxy, apart from the
    # successes and from the earlier failures (values.py merges the pair
    # that loses least).
    analysis = _analysis(
        """
int demo_unshare(unsigned long flags)
{
	struct demo_fs *new_fs = NULL;
	struct demo_files *new_fd = NULL;
	struct demo_cred *new_cred = NULL;
	struct nsproxy *new_ns = NULL;
	int err;

	err = demo_unshare_fs(flags, &new_fs);
	if (err)
		goto out;
	err = demo_unshare_fd(flags, &new_fd);
	if (err)
		goto cleanup_fs;
	err = demo_unshare_cred(flags, &new_cred);
	if (err)
		goto cleanup_fd;
	err = unshare_nsproxy_namespaces(flags, &new_ns, new_cred, new_fs);
	if (err)
		goto cleanup_cred;
	if (new_cred) {
		err = demo_check_cred(new_cred);
		if (err)
			goto cleanup_cred;
	}
	if (new_fs || new_fd || new_cred || new_ns) {
		if (new_ns)
			demo_install_ns(new_ns);
		if (new_fs)
			new_fs = demo_swap_fs(new_fs);
		if (new_fd)
			new_fd = demo_swap_files(new_fd);
		if (new_cred) {
			demo_commit_cred(new_cred);
			new_cred = NULL;
		}
	}
cleanup_cred:
	if (new_cred)
		demo_put_cred(new_cred);
cleanup_fd:
	if (new_fd)
		demo_put_files(new_fd);
cleanup_fs:
	if (new_fs)
		demo_free_fs(new_fs);
out:
	return err;
}
"""
    )
    failures_holding = [
        exit
        for exit in own.exits(analysis)
        if exit.value is not None
        and any(
            own.on_this_path(exit.state, values, {own.OWNED})
            for _place, family, values in own.resource_places(exit.state)
            if family == "nsproxy"
        )
        and all(
            "true" in exit.state.kinds_of_values({v})
            and "false" not in exit.state.kinds_of_values({v})
            for v in exit.state.places.get("err", ())
        )
    ]
    assert failures_holding


def test_exit_locks_keep_an_error_exit_holding_the_lock_apart() -> None:
    # `goto out` with the lock held joins many unlocked exits that return
    # other errors; the exit lock analysis keeps it a path of its own.
    parsed = parse(
        Image.of(
            b"""
int demo_sync(struct mm_struct *mm, unsigned long start, unsigned long end, int flags)
{
	struct vm_area_struct *vma;
	int unmapped_error = 0;
	int error = -EINVAL;

	if (flags & ~DEMO_FLAGS)
		goto out;
	if (start & ~PAGE_MASK)
		goto out;
	error = -ENOMEM;
	if (end < start)
		goto out;
	error = 0;
	if (end == start)
		goto out;
	mmap_read_lock(mm);
	vma = find_vma(mm, start);
	for (;;) {
		struct file *file;

		error = -ENOMEM;
		if (!vma)
			goto out_unlock;
		if (start < vma->vm_start) {
			if (flags == DEMO_ASYNC)
				goto out_unlock;
			start = vma->vm_start;
			if (start >= end)
				goto out_unlock;
			unmapped_error = -ENOMEM;
		}
		if ((flags & DEMO_INVALIDATE) && (vma->vm_flags & VM_LOCKED)) {
			error = -EBUSY;
			goto out;
		}
		file = vma->vm_file;
		start = vma->vm_end;
		if ((flags & DEMO_SYNC) && file) {
			get_file(file);
			mmap_read_unlock(mm);
			error = demo_fsync(file);
			fput(file);
			if (error || start >= end)
				goto out;
			mmap_read_lock(mm);
			vma = find_vma(mm, start);
		} else {
			if (start >= end) {
				error = 0;
				goto out_unlock;
			}
			vma = find_vma(mm, vma->vm_end);
		}
	}
out_unlock:
	mmap_read_unlock(mm);
out:
	return error ? : unmapped_error;
}
"""
        )
    )
    flow = flow_of(parsed.functions[0], parsed, ReviewContext(), "mm/demo.c")
    analysis = own.exit_locks(flow)
    assert analysis.complete
    held_at_error = [
        exit
        for exit in own.exits(analysis)
        if any(
            name.startswith("mmap:") and exit.state.kinds_of_values(values) == {"held"}
            for name, values in exit.state.places.items()
        )
    ]
    assert held_at_error


def test_a_put_through_a_local_alias_releases_the_reference_even_after_renaming() -> None:
    # `prev = mm; ... mmput(prev);` with `mm` naming the next object by
    # then: the put releases what `mm` held when it was copied.
    analysis = _analysis(
        """
int demo_walk(struct demo_list *list)
{
	struct mm_struct *mm, *prev;
	struct demo_node *node;
	int err;

	prev = &init_mm;
	mmget(prev);
	for (node = list->first; node; node = node->next) {
		mm = node->mm;
		if (!mmget_not_zero(mm))
			continue;
		mmput(prev);
		prev = mm;
		err = demo_visit(mm);
		if (err) {
			mmput(prev);
			return err;
		}
	}
	mmput(prev);
	return 0;
}
"""
    )
    assert _owned_at(analysis, "mm") == {"return err;": False, "return 0;": False}
