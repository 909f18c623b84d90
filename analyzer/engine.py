"""The review: series -> tree images -> parsed functions -> rule findings ->
diff filter.

A function rule runs twice on every function a patch touches: on the
function as the patch leaves it (knowing how it was before), and on the old
function alone.  A finding the old function already had (same rule, same
construct with local names abstracted) is not the patch's doing and is
dropped, unless --all was asked for.
"""

from __future__ import annotations

import bisect
import copy
import gc
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace

from tree_sitter import Node

from analyzer import budget, syntax
from analyzer.images import FileImages, Image, images_from_patch
from analyzer.parsing import Function, ParsedFile, parse
from analyzer.patches import Patch, Series, printable
from analyzer.rule import (
    ApiUses,
    Confidence,
    Finding,
    FunctionChange,
    FunctionRule,
    PatchChange,
    PatchRef,
    PatchRule,
    ReviewContext,
    Rule,
    Severity,
)
from analyzer.tree import KernelTree, PatchImages


class Review:
    """What a review found and said, for the reporters."""

    def __init__(
        self,
        series: Series,
        findings: list[Finding] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.series = series
        self.findings: list[Finding] = findings if findings is not None else []
        # Said to the user but not failures: skipped replies, patches
        # reviewed from the patch alone because they did not apply.
        self.notes: list[str] = notes if notes is not None else []
        # Inputs and patches that could not be reviewed, or not fully (each
        # names the input or patch): exit status 2.
        self.errors: list[str] = []
        self.base: str | None = None
        self.base_reason: str | None = None
        self.reviewed_patches: list[Patch] = []
        # Patches whose time budget ran out (index -> why): in `errors` too.
        self.unfinished: dict[int, str] = {}
        # For `mmreview scan`: how many whole files were read.
        self.scanned_files = 0

    def replace(self, **changes: object) -> Review:
        """A copy with other values for some of its fields, as
        dataclasses.replace() makes one."""
        other = copy.copy(self)
        for name, value in changes.items():
            if not hasattr(other, name):
                raise TypeError(f"Review has no field {name!r}")
            setattr(other, name, value)
        return other


def review(
    series: Series,
    rules: Iterable[Rule],
    tree: KernelTree | None = None,
    base: str | None = None,
    show_all: bool = False,
    patch_seconds: float | None = budget.DEFAULT_SECONDS,
) -> Review:
    """Review every reviewable patch of the series.  Each patch (applying it
    in the tree included) gets `patch_seconds`; a patch that runs out is
    "not fully reviewed" (an error naming it, with what was found so far)
    and the next patch goes on."""
    rules = list(rules)
    result = Review(series=series, notes=list(series.notes))
    result.errors = [*series.errors, *(p.error for p in series.patches if p.error)]
    patches = series.reviewable
    result.reviewed_patches = patches
    if not patches:
        return result
    images_of = iter(_images(series, tree, base, result))
    collected_at = _resident_bytes()
    last_started = None
    try:
        for patch in patches:
            # A patch's review context, its summaries and flows are cycles:
            # freed after a patch that made many (a 64-patch series peaked
            # 20 MiB higher), or once small ones add up; not after every
            # patch (a full collection costs more than a small patch's review).
            resident = _resident_bytes()
            if (
                last_started is not None and time.process_time() - last_started > COLLECT_AFTER
            ) or (
                resident is not None
                and collected_at is not None
                and resident - collected_at > COLLECT_AFTER_GROWTH
            ):
                gc.collect()
                collected_at = _resident_bytes()
            last_started = time.process_time()
            # Reading the patch's diff spent some of its budget already.
            left = None if patch_seconds is None else max(patch_seconds - patch.read_seconds, 0.0)
            with budget.patch_budget(left):
                try:
                    images = next(images_of)
                    if images.unfinished:
                        raise budget.BudgetExceeded
                    _review_patch(images, rules, tree, show_all, result)
                except budget.BudgetExceeded:
                    why = f"it took longer than its time budget of {patch_seconds:g} s"
                    result.unfinished[patch.index] = why
                    result.errors.append(
                        f"{patch.label()}: not fully reviewed: {why}; findings so far are reported"
                    )
                except StopIteration:
                    break
    finally:
        # The tree's scratch index and object directory go now, not when
        # the generator is collected.
        close = getattr(images_of, "close", None)
        if close is not None:
            close()
    result.findings.sort(
        key=lambda f: (f.patch or PatchRef(0, 0, ""), f.path, f.line, f.column, f.rule)
    )
    return result


COLLECT_AFTER = 0.1  # seconds of CPU
COLLECT_AFTER_GROWTH = 16 << 20


def _resident_bytes() -> int | None:
    """The process's resident memory (None where /proc does not say)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _review_patch(
    images: PatchImages, rules: list[Rule], tree: KernelTree | None, show_all: bool, result: Review
) -> None:
    context = (
        ReviewContext(tree.reader(images), tree.blob_ids(images))
        if tree is not None
        else ReviewContext()
    )
    patch = images.patch
    result.notes.extend(
        f"{patch.label()}: {f.path}: {f.problem}; reviewed from the patch alone"
        for f in images.files
        if f.problem
    )
    ref = PatchRef(patch.index, patch.total, patch.title)
    failures = _Failures(result, patch)
    for file in images.files:
        budget.check()
        findings, _ = review_file(file, rules, context, ref, show_all, failures)
        result.findings.extend(findings)
    parsed = _ParsedPosts({f.path: f.post for f in images.files if f.post is not None})
    change = PatchChange(patch, context, tree, result.base, parsed)  # type: ignore[arg-type]
    for rule in rules:
        if isinstance(rule, PatchRule):
            result.findings.extend(
                _with_patch(f, ref)
                for f in _guarded(rule, lambda r=rule, c=change: r.check_patch(c), failures)
            )


class _ParsedPosts(Mapping[str, ParsedFile]):
    """A patch's post-images parsed when a patch rule asks for one: a
    tree-wide patch touches thousands of files, and holding all their trees
    at once took gigabytes."""

    def __init__(self, posts: dict[str, Image]) -> None:
        self._posts = posts

    def __getitem__(self, path: str) -> ParsedFile:
        return parse(self._posts[path])

    def __iter__(self) -> Iterator[str]:
        return iter(self._posts)

    def __len__(self) -> int:
        return len(self._posts)


def _images(
    series: Series, tree: KernelTree | None, base: str | None, result: Review
) -> Iterable[PatchImages]:
    """Each reviewable patch's images, made when the patch's turn comes (in
    its time budget)."""
    patches = series.reviewable
    if tree is None:
        return (
            PatchImages(
                patch=p,
                files=[
                    images_from_patch(f.patched, None)
                    for f in p.files
                    if f.is_c and not f.is_binary
                ],
            )
            for p in patches
        )
    trailer_base = series.base_commit and tree.resolve(series.base_commit)
    if (
        base is None
        and not trailer_base
        and all(p.commit and tree.resolve(p.commit) for p in patches)
    ):
        result.base_reason = "the patches' own commits"
        return (tree.commit_images(p, p.commit or "") for p in patches)
    result.base, result.base_reason = tree.choose_base(series, base)
    return tree.images(series, result.base)


def review_file(
    file: FileImages,
    rules: list[Rule],
    context: ReviewContext,
    ref: PatchRef | None = None,
    show_all: bool = False,
    failures: _Failures | None = None,
) -> tuple[list[Finding], ParsedFile | None]:
    """Findings the patch introduces in one file (all of them with show_all),
    and the parsed post-image (None when no rule needed it)."""
    if file.post is None:
        return [], None
    # A patch that removes the last use of an API is about that API too.  The
    # file as it was is asked first: its answers are kept.
    was = file.pre
    pre_uses = ApiUses(was.text, was.blob_id, keep=not was.partial) if was is not None else None
    post_uses = ApiUses(file.post.text, file.post.blob_id)
    function_rules = [
        r
        for r in rules
        if isinstance(r, FunctionRule)
        and (
            (pre_uses is not None and r.applies_to(file.path, pre_uses))
            or r.applies_to(file.path, post_uses)
        )
    ]
    if pre_uses is not None:
        pre_uses.keep()
    if not function_rules:
        return [], None
    pre = parse(file.pre) if file.pre is not None else None
    post = parse(file.post, like=pre)
    if too_big := post.not_parsed or (pre and pre.not_parsed):
        (failures or _Failures(None)).note(f"{file.path}: {too_big}; not reviewed")
        return [], post
    findings = []
    post_rows = _sorted_rows(file.post, file.added)
    pre_rows = _sorted_rows(file.pre, file.removed)
    for after, before in touched_functions(file, post, pre):
        lines = max(f.end_row - f.start_row + 1 for f in (after, before) if f is not None)
        if lines > MAX_FUNCTION_LINES:
            (failures or _Failures(None)).note(
                f"{file.path}: {after.name}() is {lines:,} lines, over the "
                f"{MAX_FUNCTION_LINES:,} a function's paths are followed for; not reviewed"
            )
            continue
        added_rows = _rows_in(post_rows, after)
        removed_rows = _rows_in(pre_rows, before) if before and file.pre else frozenset()
        for rule in function_rules:
            budget.check()
            change = FunctionChange(
                file.path,
                after,
                before,
                added_rows,
                removed_rows,
                context,
                rule,
                _emit,
                file.added,
                file.removed,
                post,
                pre,
            )
            new = list(_guarded(rule, lambda c=change, r=rule: r.check(c), failures))
            if not show_all and before is not None and new:
                old_change = _alone(file.path, before, pre, context, rule)
                old = list(_guarded(rule, lambda c=old_change, r=rule: r.check(c), failures))
                new = _introduced(new, old, added_rows, after.image)
            findings.extend(_with_patch(f, ref) if ref else f for f in new)
    return findings, post


# Path states grow with a function's length: a 50,000-line function took
# 700 MiB.  The longest function in Linux 6.12 is 2,198 lines (in mm/, 530).
MAX_FUNCTION_LINES = 3000


def touched_functions(
    file: FileImages, post: ParsedFile, pre: ParsedFile | None
) -> list[tuple[Function, Function | None]]:
    """Post-image functions holding an added line or whose pre-image holds a
    removed line, each paired with its pre-image by name."""
    touched: dict[int, Function] = {}
    for line in file.added:
        row = file.post.row_of(line) if file.post else None
        if row is not None and (function := post.function_at(row)):
            touched[function.start_row] = function
    old_by_name = _by_name(pre.functions) if pre else {}
    new_by_name = _by_name(post.functions)
    if pre is not None and file.pre is not None:
        for line in file.removed:
            row = file.pre.row_of(line)
            old = pre.function_at(row) if row is not None else None
            if old is None:
                continue
            index = old_by_name[old.name].index(old)
            candidates = new_by_name.get(old.name, [])
            if candidates:
                new = candidates[min(index, len(candidates) - 1)]
                touched[new.start_row] = new
    pairs = []
    for function in sorted(touched.values(), key=lambda f: f.start_row):
        candidates = old_by_name.get(function.name, [])
        index = new_by_name[function.name].index(function)
        before = candidates[min(index, len(candidates) - 1)] if candidates else None
        pairs.append((function, before))
    return pairs


def scan(tree_top: str, paths: list[str], rules: Iterable[Rule]) -> Review:
    """Every rule on every function of whole files under `tree_top`."""
    rules = list(rules)
    result = Review(series=Series(patches=[]))

    def read_file(path: str) -> bytes | None:
        try:
            with open(os.path.join(tree_top, path), "rb") as handle:
                return handle.read()
        except OSError:
            return None

    context = ReviewContext(read_file)
    for path in paths:
        text = read_file(path)
        if text is None:
            result.errors.append(f"{path}: cannot read")
            continue
        parsed = parse(Image.of(text))
        result.findings.extend(scan_functions(parsed, path, rules, context))
        result.scanned_files += 1
    return result


def scan_functions(
    parsed: ParsedFile, path: str, rules: Iterable[Rule], context: ReviewContext
) -> list[Finding]:
    """Every rule on every function of a whole file (not diff-aware)."""
    findings: list[Finding] = []
    uses = ApiUses(parsed.image.text, parsed.image.blob_id)
    for function in parsed.functions:
        for rule in rules:
            if isinstance(rule, FunctionRule) and rule.applies_to(path, uses):
                change = _alone(path, function, parsed, context, rule)
                findings.extend(_guarded(rule, lambda c=change, r=rule: r.check(c)))
    return sorted(findings)


def _alone(
    path: str, function: Function, parsed: ParsedFile | None, context: ReviewContext, rule: Rule
) -> FunctionChange:
    """A function judged on its own, with no earlier version to compare."""
    return FunctionChange(
        path, function, None, frozenset(), frozenset(), context, rule, _emit, after_file=parsed
    )


def _by_name(functions: list[Function]) -> dict[str, list[Function]]:
    grouped: dict[str, list[Function]] = {}
    for function in sorted(functions, key=lambda f: f.start_row):
        grouped.setdefault(function.name, []).append(function)
    return grouped


def _sorted_rows(image: Image | None, lines: frozenset[int]) -> list[int]:
    if image is None:
        return []
    return sorted(r for r in (image.row_of(line) for line in lines) if r is not None)


def _rows_in(rows: list[int], function: Function) -> frozenset[int]:
    """The rows of `rows` (sorted) inside the function: a bisection per
    function, not a pass over every changed line of the file."""
    start = bisect.bisect_left(rows, function.start_row)
    end = bisect.bisect_right(rows, function.end_row)
    return frozenset(rows[start:end])


def _introduced(
    new: list[Finding], old: list[Finding], added_rows: frozenset[int], image: Image
) -> list[Finding]:
    """Drop as many of each old finding as the old function had, keeping
    the ones on added lines longest."""
    remaining = Counter(f.key for f in old)
    added_lines = {image.real_line(r) for r in added_rows}
    kept = []
    for finding in sorted(new, key=lambda f: (f.line in added_lines, f.line)):
        if remaining[finding.key] > 0:
            remaining[finding.key] -= 1
            continue
        kept.append(finding)
    return sorted(kept)


def _emit(
    change: FunctionChange,
    node: Node,
    message: str,
    confidence: Confidence,
    key: str | None,
    severity: Severity | None,
) -> Finding:
    rule = change.rule
    assert rule is not None
    image = change.after.image
    row = node.start_point.row
    if any(a.type == "ERROR" for a in syntax.ancestors(node)):
        confidence = confidence.at_most(Confidence.LOW)
    confidence = confidence.at_most(change.after.confidence)
    end_row = node.end_point.row
    return Finding(
        path=change.path,
        line=image.real_line(row),
        column=node.start_point.column + 1,
        rule=rule.id,
        severity=severity or rule.severity,
        message=message,
        function=change.after.name,
        confidence=confidence,
        source_line=image.line_text(row),
        key=f"{rule.id}:{change.after.name}:{key if key is not None else syntax.node_key(node)}",
        end_line=image.real_line(end_row),
        end_column=node.end_point.column + 1,
    )


def _with_patch(finding: Finding, ref: PatchRef) -> Finding:
    return replace(finding, patch=ref)


class _Failures:
    """What went wrong inside one patch's review, said once per rule as a
    note naming the rule and the patch (the traceback only with --debug)."""

    def __init__(self, review: Review | None, patch: Patch | None = None) -> None:
        self.review = review
        self.where = patch.label() if patch is not None else None
        self.failed: set[str] = set()

    def note(self, text: str) -> None:
        line = f"{self.where}: {text}" if self.where else text
        if self.review is not None:
            self.review.notes.append(line)
        else:
            print(f"mmreview: note: {printable(line)}", file=sys.stderr)

    def rule_failed(self, rule: Rule, err: Exception) -> None:
        if debugging():
            import traceback  # only under --debug

            traceback.print_exc()
        if rule.id in self.failed:
            return
        self.failed.add(rule.id)
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        if len(detail) > 120:
            detail = detail[:117].rsplit(" ", 1)[0] + " ..."
        self.note(
            f"rule {rule.id} failed ({detail}); its findings on this patch may be missing"
            + ("" if debugging() else " (--debug shows the traceback)")
        )


def debugging() -> bool:
    """--debug (or MMREVIEW_DEBUG in the environment): show tracebacks."""
    return "MMREVIEW_DEBUG" in os.environ


def _guarded(
    rule: Rule, run: Callable[[], Iterable[Finding]], failures: _Failures | None = None
) -> list[Finding]:
    """A rule bug must not cost the user the rest of the review."""
    try:
        with budget.interruptible():
            return list(run())
    except Exception as err:  # RecursionError on deeply nested input too
        (failures or _Failures(None)).rule_failed(rule, err)
        return []
