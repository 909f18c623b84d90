"""`mmreview corpus eval`: every mutation recipe applied to a real kernel
tree, sent through the normal review, and scored.

For each recipe: the edited file becomes a commit on top of the tree's HEAD
(in a scratch index and object directory, see `mutations.Scratch`), `git
format-patch` turns it into a patch, and that text is reviewed as `mmreview
check --tree` would review it.  A bug recipe is caught when its rule fires in
the mutated function; any finding on a clean recipe is a false alarm.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from analyzer.engine import review
from analyzer.images import Image
from analyzer.patches import InputError, read_series
from analyzer.registry import select_rules
from analyzer.rule import Finding, Rule
from analyzer.tree import KernelTree
from corpus.recipes import (
    IDENTITY,
    MutationError,
    Recipe,
    RecipeError,
    Scratch,
    apply,
    load_recipes,
)

# Beside the package in a source checkout (pip install -e).
DEFAULT_RECIPES = Path(__file__).resolve().parent / "mutations"

CAUGHT, MISSED, CLEAN, FLAGGED, ERROR = "caught", "missed", "clean", "flagged", "error"


@dataclass
class Outcome:
    recipe: Recipe
    status: str
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    patch: bytes | None = None  # the format-patch text that was reviewed

    @property
    def failed(self) -> bool:
        return self.status in (MISSED, FLAGGED, ERROR)


@dataclass
class Tally:
    bugs: int = 0
    caught: int = 0
    clean: int = 0
    flagged: int = 0
    errors: int = 0


@dataclass
class Evaluation:
    tree: str
    head: str
    outcomes: list[Outcome]
    seconds: float

    def per_rule(self) -> dict[str, Tally]:
        tallies: dict[str, Tally] = {}
        for outcome in self.outcomes:
            tally = tallies.setdefault(outcome.recipe.rule, Tally())
            if outcome.status == ERROR:
                tally.errors += 1
            elif outcome.recipe.kind == "bug":
                tally.bugs += 1
                tally.caught += outcome.status == CAUGHT
            else:
                tally.clean += 1
                tally.flagged += outcome.status == FLAGGED
        return dict(sorted(tallies.items()))

    @property
    def total(self) -> Tally:
        total = Tally()
        for tally in self.per_rule().values():
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(tally, name))
        return total


def run(
    tree: Path,
    recipes: Path | None,
    select: list[str] | None,
    output_format: str,
    out: TextIO,
    patches: Path | None = None,
) -> int:
    """The whole command: load, evaluate, report; the exit code."""
    if output_format not in RENDERERS:
        raise InputError(
            f"--format {output_format}: unknown format (choose from {', '.join(RENDERERS)})"
        )
    if recipes is None and not DEFAULT_RECIPES.is_dir():
        raise InputError("no recipe directory here; give --recipes DIR")
    rules = select_rules()
    try:
        loaded = load_recipes(recipes or DEFAULT_RECIPES, {r.id for r in rules})
    except RecipeError as err:
        raise InputError(str(err)) from None
    if select:
        wanted = {r.id for r in select_rules(select)}
        loaded = [r for r in loaded if r.rule in wanted]
        if not loaded:
            raise InputError(f"no recipes for {', '.join(sorted(wanted))}")
    if patches is not None and patches.exists() and not patches.is_dir():
        raise InputError(f"--patches {patches}: not a directory")
    evaluation = evaluate(KernelTree(str(tree)), loaded, rules)
    if patches is not None:
        write_patches(evaluation, patches)
    RENDERERS[output_format](evaluation, out)
    return exit_code(evaluation)


def evaluate(tree: KernelTree, recipes: list[Recipe], rules: list[Rule]) -> Evaluation:
    started = time.perf_counter()
    head = tree.resolve("HEAD")
    if head is None:
        raise InputError(f"--tree {tree.top}: the repository has no commits")
    originals = _read_files(tree, head, sorted({r.file for r in recipes}))
    outcomes = []
    with Scratch(tree.top, f"{tree.repo.common_dir}/objects") as scratch:
        for recipe in recipes:
            began = time.perf_counter()
            outcome = _evaluate_one(recipe, tree, head, scratch, originals, rules)
            outcome.seconds = time.perf_counter() - began
            outcomes.append(outcome)
    return Evaluation(str(tree.top), head, outcomes, time.perf_counter() - started)


def write_patches(evaluation: Evaluation, directory: Path) -> None:
    """Each recipe's patch as DIRECTORY/<id, with / as _>.patch."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for outcome in evaluation.outcomes:
            if outcome.patch is not None:
                name = outcome.recipe.id.replace("/", "_") + ".patch"
                (directory / name).write_bytes(outcome.patch)
    except OSError as err:
        raise InputError(f"--patches {directory}: {err.strerror or err}") from None


def _read_files(tree: KernelTree, rev: str, paths: list[str]) -> dict[str, Image]:
    """The recipes' files as of `rev`: one ls-tree, one cat-file."""
    listing = tree.git.ls_tree("-r", "--full-tree", rev, "--", *paths) if paths else ""
    shas = {}
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        shas[path] = meta.split()[2]
    contents = tree.blobs(list(shas.values()))
    return {path: Image.of(contents[sha], sha) for path, sha in shas.items() if sha in contents}


def _evaluate_one(
    recipe: Recipe,
    tree: KernelTree,
    head: str,
    scratch: Scratch,
    originals: dict[str, Image],
    rules: list[Rule],
) -> Outcome:
    original = originals.get(recipe.file)
    if original is None:
        return Outcome(recipe, ERROR, error=f"{recipe.file}: not in the tree")
    try:
        mutated = apply(recipe, original)
        commit = scratch.commit(head, {recipe.file: mutated}, commit_message(recipe))
        patch = scratch.format_patch(commit)
    except MutationError as err:
        return Outcome(recipe, ERROR, error=str(err))
    series = read_series(["-"], stdin=patch)
    result = review(series, rules, tree=tree, base=head)
    # A mutation the review could not apply to its own base, or a rule
    # that failed on it, is a bug here, not something to score.
    problems = result.errors + [
        note
        for note in result.notes
        if "reviewed from the patch alone" in note or note.startswith("rule ")
    ]
    if problems:
        return Outcome(recipe, ERROR, result.findings, "; ".join(problems), patch=patch)
    if recipe.kind == "bug":
        hit = any(
            f.rule == recipe.rule and f.path == recipe.file and f.function == recipe.function
            for f in result.findings
        )
        status = CAUGHT if hit else MISSED
    else:
        status = FLAGGED if result.findings else CLEAN
    return Outcome(recipe, status, result.findings, patch=patch)


def commit_message(recipe: Recipe) -> str:
    """Neutral on purpose: nothing in it says whether the edit is a bug."""
    directory = recipe.file.rsplit("/", 1)[0]
    return (
        f"{directory}: mutation {recipe.id}\n\n"
        f"Mutation recipe {recipe.id}: {recipe.edit} in {recipe.function}(), from"
        f" corpus/mutations/{Path(recipe.source).name}.\n\n"
        f"Signed-off-by: {IDENTITY['GIT_AUTHOR_NAME']} <{IDENTITY['GIT_AUTHOR_EMAIL']}>\n"
    )


# -- reports ------------------------------------------------------------------


def render_text(evaluation: Evaluation, out: TextIO) -> None:
    rows = [("rule", "bugs caught", "clean edits flagged", "errors")]
    for rule, tally in evaluation.per_rule().items():
        caught, flagged = f"{tally.caught}/{tally.bugs}", f"{tally.flagged}/{tally.clean}"
        rows.append((rule, caught, flagged, str(tally.errors)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    total = evaluation.total
    recall = f"{total.caught}/{total.bugs}" + (
        f" ({100 * total.caught / total.bugs:.0f}%)" if total.bugs else ""
    )
    out.write(
        f"\nrecall {recall}, false alarms {total.flagged}/{total.clean}, errors {total.errors};"
        f" {len(evaluation.outcomes)} recipes in {evaluation.seconds:.1f} s"
        f" (tree {evaluation.head[:12]})\n"
    )
    for title, status in (("missed", MISSED), ("false alarms", FLAGGED), ("errors", ERROR)):
        failed = [o for o in evaluation.outcomes if o.status == status]
        if not failed:
            continue
        out.write(f"\n{title}:\n")
        for outcome in failed:
            recipe = outcome.recipe
            out.write(f"  {recipe.id} [{recipe.rule}] {recipe.edit} in {recipe.where}\n")
            if outcome.error:
                out.write(f"    {outcome.error}\n")
            if status == MISSED and not outcome.findings:
                out.write("    no finding at all\n")
            for finding in outcome.findings:
                out.write(
                    f"    {finding.path}:{finding.line}: {finding.severity.value}:{finding.rule}:"
                    f" {finding.message} (in {finding.function}())\n"
                )


def render_json(evaluation: Evaluation, out: TextIO) -> None:
    from analyzer.reporters.json_report import finding_dict

    total = evaluation.total
    data = {
        "schema": "mm-review/eval",
        "version": 1,
        "tree": evaluation.tree,
        "head": evaluation.head,
        "seconds": round(evaluation.seconds, 3),
        "rules": {rule: vars(tally) for rule, tally in evaluation.per_rule().items()},
        "total": vars(total),
        "recipes": [
            {
                "id": o.recipe.id,
                "kind": o.recipe.kind,
                "rule": o.recipe.rule,
                "file": o.recipe.file,
                "function": o.recipe.function,
                "edit": o.recipe.edit,
                "status": o.status,
                "error": o.error,
                "seconds": round(o.seconds, 3),
                "findings": [finding_dict(f) for f in o.findings],
            }
            for o in evaluation.outcomes
        ],
    }
    json.dump(data, out, indent=2)
    out.write("\n")


RENDERERS = {"text": render_text, "json": render_json}


def exit_code(evaluation: Evaluation) -> int:
    """2 when a recipe could not be evaluated, 1 for a miss or a false alarm."""
    if any(o.status == ERROR for o in evaluation.outcomes):
        return 2
    return 1 if any(o.failed for o in evaluation.outcomes) else 0
