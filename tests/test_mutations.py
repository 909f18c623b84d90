"""Mutation recipes and `mmreview corpus eval`: the loader, the structural
edits, the scratch commits, and the evaluation of every recipe in
corpus/mutations on the real 6.12 tree (the regression gate of every rule).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from analyzer.images import Image
from analyzer.registry import all_rules
from corpus.recipes import (
    MutationError,
    RecipeError,
    Scratch,
    apply,
    load_recipes,
)
from tests.conftest import ROOT, Tree, mmreview

RECIPES = ROOT / "corpus" / "mutations"
RULE_IDS = {r.id for r in all_rules()}

BASE = """\
[[mutation]]
id = "demo/swap"
kind = "bug"
rule = "PMD_PRESENT_AS_EMPTY"
file = "mm/fault.c"
function = "demo_must_wait"
edit = "replace-call"
call = "pmd_none"
replacement = "!pmd_present"
why = "test"
"""

DEMO = b"""\
static int demo(struct vm_area_struct *vma, pmd_t *pmd, pte_t *pte)
{
	pmd_t val = pmdp_get_lockless(pmd);
	int ret = 0;

	if (pmd_none(val))
		return 0;
	if (!pmd_none(val) && vma->anon_vma)
		ret = 1;
	if (unlikely(vma->anon_vma || userfaultfd_wp(vma))) {
		ret = 2;
		spin_unlock(ptl);
	}
	if (pte_uffd_wp(ptep_get(pte)))
		return -EBUSY;
	for (;;)
		cpu_relax();
	return ret;
}
"""


def recipe_file(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def demo_recipe(tmp_path: Path, **keys: str | int) -> bytes:
    """DEMO with one recipe (on function demo) applied."""
    entry = {"id": "t/x", "kind": "clean", "rule": "PMD_PRESENT_AS_EMPTY", "why": "test"}
    entry |= {"file": "mm/demo.c", "function": "demo", **keys}
    lines = ["[[mutation]]"] + [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    (recipe,) = load_recipes(recipe_file(tmp_path, "\n".join(lines) + "\n"), RULE_IDS)
    return apply(recipe, Image.of(DEMO))


# -- loading ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace('kind = "bug"', 'kind = "maybe"'), "kind 'maybe' is not one of"),
        (lambda t: t.replace('why = "test"\n', ""), "missing key 'why'"),
        (lambda t: t + 'colour = "red"\n', "key(s) colour not used by edit 'replace-call'"),
        (lambda t: t.replace("replace-call", "swap-call"), "unknown edit 'swap-call'"),
        (lambda t: t.replace('"PMD_PRESENT_AS_EMPTY"', '"NO_SUCH_RULE"'), "unknown rule"),
        (lambda t: t + 'statement = "x"\n', "give one target, not call and statement"),
        (lambda t: t.replace('call = "pmd_none"\n', ""), "needs a target: call"),
        (lambda t: t.replace('call = "pmd_none"', 'condition = "pmd_none"'), "does not take"),
        (lambda t: t + "occurrence = 0\n", "occurrence counts from 1"),
        (lambda t: t + 'occurrence = "2"\n', "'occurrence' must be an integer"),
        (lambda t: t.replace('"!pmd_present"', '"!pmd present"'), "replacement must be"),
        (lambda t: t.replace('id = "demo/swap"', 'id = "Demo Swap"'), "id must be lower-case"),
        (lambda t: t.replace('"mm/fault.c"', '"/etc/passwd"'), "is not a C file path"),
        (
            lambda t: (
                t.replace('edit = "replace-call"', 'edit = "drop-statement"')
                .replace('call = "pmd_none"', 'statement = "(unclosed"')
                .replace('replacement = "!pmd_present"\n', "")
            ),
            "statement is not a valid regular expression",
        ),
        (lambda t: t.replace("[[mutation]]", "[[mutations]]"), "unknown top-level key(s)"),
        (lambda t: t.replace('kind = "bug"', "kind = bug"), "invalid TOML"),
    ],
)
def test_loader_rejects_bad_recipes(tmp_path: Path, edit, problem: str) -> None:
    path = recipe_file(tmp_path, edit(BASE))
    with pytest.raises(RecipeError) as caught:
        load_recipes(path, RULE_IDS)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert problem in message, message
    assert "\n" not in message


def test_loader_names_the_recipe_and_rejects_duplicate_ids(tmp_path: Path) -> None:
    recipe_file(tmp_path, BASE, "a.toml")
    recipe_file(tmp_path, BASE, "b.toml")
    with pytest.raises(RecipeError, match=r"b\.toml: recipe 'demo/swap': duplicate id \(also in"):
        load_recipes(tmp_path, RULE_IDS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecipeError, match=r"empty: no \*\.toml recipe files"):
        load_recipes(empty, RULE_IDS)


def test_loader_reads_every_shipped_recipe() -> None:
    recipes = load_recipes(RECIPES, RULE_IDS)
    assert len({r.id for r in recipes}) == len(recipes)
    kinds = {(r.rule, r.kind) for r in recipes}
    for rule in ("PMD_PRESENT_AS_EMPTY", "COLLAPSE_WITHOUT_UFFD_CHECK"):
        bugs = [r for r in recipes if r.rule == rule and r.kind == "bug"]
        cleans = [r for r in recipes if r.rule == rule and r.kind == "clean"]
        assert (rule, "bug") in kinds and len(bugs) >= 2 and len(cleans) >= len(bugs), rule
        assert len({r.function for r in bugs}) >= 2, f"{rule}: bug sites in one function"


# -- edits ----------------------------------------------------------------------


def test_replace_call_toggles_or_sets_the_negation(tmp_path: Path) -> None:
    out = demo_recipe(tmp_path, edit="replace-call", call="pmd_none", replacement="!pmd_present")
    assert b"\tif (!pmd_present(val))\n\t\treturn 0;" in out
    out = demo_recipe(
        tmp_path, edit="replace-call", call="pmd_none", occurrence=2, replacement="!pmd_present"
    )
    assert b"if (pmd_present(val) && vma->anon_vma)" in out
    out = demo_recipe(
        tmp_path, edit="replace-call", call="pmd_none", occurrence=2, replacement="=!is_swap_pmd"
    )
    assert b"if (!is_swap_pmd(val) && vma->anon_vma)" in out


def test_drop_statement_drops_whole_lines(tmp_path: Path) -> None:
    out = demo_recipe(tmp_path, edit="drop-statement", condition=r"pte_uffd_wp")
    assert out == DEMO.replace(b"\tif (pte_uffd_wp(ptep_get(pte)))\n\t\treturn -EBUSY;\n", b"")
    out = demo_recipe(tmp_path, edit="drop-statement", statement=r"^spin_unlock")
    assert b"spin_unlock" not in out and b"\t\tret = 2;\n\t}" in out


def test_drop_statement_refuses_an_unbraced_body(tmp_path: Path) -> None:
    with pytest.raises(MutationError, match="body of a for without braces"):
        demo_recipe(tmp_path, edit="drop-statement", call="cpu_relax")


def test_drop_condition_term(tmp_path: Path) -> None:
    out = demo_recipe(tmp_path, edit="drop-condition-term", call="userfaultfd_wp")
    assert b"if (unlikely(vma->anon_vma)) {" in out
    out = demo_recipe(tmp_path, edit="drop-condition-term", condition=r"!pmd_none")
    assert b"\tif (vma->anon_vma)\n\t\tret = 1;" in out
    with pytest.raises(MutationError, match="not an operand of && or"):
        demo_recipe(tmp_path, edit="drop-condition-term", call="pte_uffd_wp")


def test_unwrap_if_keeps_the_work(tmp_path: Path) -> None:
    out = demo_recipe(tmp_path, edit="unwrap-if", call="userfaultfd_wp")
    assert b"\tret = 2;\n\tspin_unlock(ptl);\n\tif (pte_uffd_wp" in out
    assert b"userfaultfd_wp" not in out


def test_other_operations(tmp_path: Path) -> None:
    out = demo_recipe(
        tmp_path, edit="replace-argument", call="pmdp_get_lockless", argument=0, replacement="p"
    )
    assert b"pmdp_get_lockless(p);" in out
    out = demo_recipe(
        tmp_path, edit="replace-regex", pattern=r"ret = (\d)", replacement=r"ret = -\1"
    )
    assert out.count(b"ret = -") == 1
    out = demo_recipe(
        tmp_path, edit="replace-regex", pattern=r"ret = (\d)", replacement=r"ret = -\1", count=0
    )
    assert out.count(b"ret = -") == 3
    out = demo_recipe(tmp_path, edit="rename-local", name="val", to="pmdval")
    assert out.count(b"pmdval") == 3 and b"(val)" not in out
    out = demo_recipe(tmp_path, edit="insert-comment", call="pte_uffd_wp", text="markers too")
    assert b"\t/* markers too */\n\tif (pte_uffd_wp" in out


def test_rename_refuses_a_name_in_use(tmp_path: Path) -> None:
    with pytest.raises(MutationError, match="'ret' is already used"):
        demo_recipe(tmp_path, edit="rename-local", name="val", to="ret")


def test_extract_helper(tmp_path: Path) -> None:
    out = demo_recipe(
        tmp_path,
        edit="extract-helper",
        condition=r"vma->anon_vma \|\| userfaultfd_wp\(vma\)",
        name="keeps_table",
        params="struct vm_area_struct *vma",
        args="vma",
    )
    assert out.startswith(
        b"static inline bool keeps_table(struct vm_area_struct *vma)\n{\n"
        b"\treturn vma->anon_vma || userfaultfd_wp(vma);\n}\n\nstatic int demo("
    )
    assert b"if (unlikely(keeps_table(vma))) {" in out
    out = demo_recipe(
        tmp_path,
        edit="extract-helper",
        condition="pmd_none",
        name="empty",
        params="pmd_t v",
        args="val",
    )
    assert b"\treturn pmd_none(val);\n" in out and b"\tif (empty(val))\n" in out


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"function": "nothere", "edit": "drop-statement", "call": "x"}, "no function nothere()"),
        ({"edit": "drop-statement", "call": "pmd_none", "occurrence": 3}, "occurrence 3 of call"),
        ({"edit": "replace-regex", "pattern": "no such text", "replacement": "y"}, "not found"),
        (
            {"edit": "replace-regex", "pattern": "ret", "replacement": "ret"},
            "leaves the file unchanged",
        ),
        (
            {"edit": "replace-regex", "pattern": r"return ret;", "replacement": "return ret"},
            "breaks",
        ),
    ],
)
def test_edits_that_cannot_be_made(tmp_path: Path, keys: dict, problem: str) -> None:
    with pytest.raises(MutationError, match=problem):
        demo_recipe(tmp_path, **keys)


# -- scratch commits and the eval command on a small tree ---------------------


def repo_state(path: Path) -> tuple[str, ...]:
    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, capture_output=True, text=True, check=True
        ).stdout

    index = path / ".git" / "index"
    return (
        run("for-each-ref"),
        run("rev-parse", "HEAD"),
        run("status", "--porcelain", "--untracked-files=all"),
        run("count-objects", "-v"),
        str(index.stat().st_mtime_ns) if index.exists() else "",
    )


def test_scratch_commits_leave_the_tree_alone(minitree: Tree) -> None:
    before = repo_state(minitree.path)
    head = minitree.git("rev-parse", "HEAD").strip()
    with Scratch(str(minitree.path), str(minitree.path / ".git" / "objects")) as scratch:
        first = scratch.commit(head, {"mm/fault.c": b"one\n", "mm/new/x.c": b"x\n"}, "a: one\n")
        second = scratch.commit(first, {"mm/khugepaged.c": b"two\n"}, "a: two\n")
        series = scratch.format_patch(second, 2).decode()
    assert series.count("\nSubject: [PATCH 1/2] a: one") == 1
    assert "Subject: [PATCH 2/2] a: two" in series
    assert "diff --git a/mm/new/x.c b/mm/new/x.c\nnew file mode 100644" in series
    assert "+two" in series and "+one" in series
    assert repo_state(minitree.path) == before
    assert subprocess.run(["git", "cat-file", "-e", second], cwd=minitree.path).returncode != 0


def test_scratch_objects_are_the_ones_git_writes(minitree: Tree) -> None:
    head = minitree.git("rev-parse", "HEAD").strip()
    files = {"mm/fault.c": b"one\n", "mm/new/x.c": b"x\n", "mm.c": b"y\n"}
    with Scratch(str(minitree.path), str(minitree.path / ".git" / "objects")) as scratch:
        ours = scratch.commit(head, files, "a: one\n\nbody\n")
        scratch.git("read-tree", head)
        for path, text in files.items():
            blob = scratch.git("hash-object", "-w", "--stdin", stdin=text).decode().strip()
            scratch.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        tree = scratch.git("write-tree").decode().strip()
        theirs = scratch.git("commit-tree", tree, "-p", head, stdin=b"a: one\n\nbody\n")
        assert ours == theirs.decode().strip()
        assert scratch.git("fsck", "--strict", "--no-dangling").strip() == b""


def test_eval_on_a_small_tree(minitree: Tree, tmp_path: Path) -> None:
    clean = BASE.replace('"demo/swap"', '"demo/rename"').replace('kind = "bug"', 'kind = "clean"')
    clean = clean.replace(
        'edit = "replace-call"\ncall = "pmd_none"\nreplacement = "!pmd_present"',
        'edit = "rename-local"\nname = "_pmd"\nto = "pmdval"',
    )
    broken = BASE.replace('"demo/swap"', '"demo/gone"').replace("demo_must_wait", "demo_gone")
    flagged = BASE.replace('"demo/swap"', '"demo/flagged"').replace(
        'kind = "bug"', 'kind = "clean"'
    )
    missed = BASE.replace('"demo/swap"', '"demo/missed"').replace(
        '"!pmd_present"', '"pmd_clear_me"'
    )
    good = recipe_file(tmp_path, BASE + clean, "good.toml")
    before = repo_state(minitree.path)

    result = mmreview("corpus", "eval", "--tree", str(minitree.path), "--recipes", str(good))
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "PMD_PRESENT_AS_EMPTY  1/1          0/1                  0" in out
    assert "recall 1/1 (100%), false alarms 0/1, errors 0; 2 recipes in" in out
    assert repo_state(minitree.path) == before

    bad = recipe_file(tmp_path, BASE + flagged + missed, "bad.toml")
    result = mmreview(
        "corpus", "eval", "-t", str(minitree.path), "--recipes", str(bad), "-f", "json"
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["total"] == {"bugs": 2, "caught": 1, "clean": 1, "flagged": 1, "errors": 0}
    status = {r["id"]: r["status"] for r in report["recipes"]}
    assert status == {"demo/swap": "caught", "demo/flagged": "flagged", "demo/missed": "missed"}
    text = mmreview(
        "corpus", "eval", "-t", str(minitree.path), "--recipes", str(bad)
    ).stdout.decode()
    assert (
        "\nmissed:\n  demo/missed [PMD_PRESENT_AS_EMPTY] replace-call in mm/fault.c:demo_must_wait()\n    no finding at all\n"
        in text
    )
    assert (
        "\nfalse alarms:\n  demo/flagged [PMD_PRESENT_AS_EMPTY] replace-call in mm/fault.c:demo_must_wait()\n    mm/fault.c:34: WARNING:PMD_PRESENT_AS_EMPTY: pmd_none(_pmd) replaced by"
        in text
    )

    error = recipe_file(tmp_path, BASE + broken, "error.toml")
    result = mmreview("corpus", "eval", "-t", str(minitree.path), "--recipes", str(error))
    assert result.returncode == 2
    assert (
        "\nerrors:\n  demo/gone [PMD_PRESENT_AS_EMPTY] replace-call in mm/fault.c:demo_gone()\n    mm/fault.c: no function demo_gone()\n"
        in result.stdout.decode()
    )


def test_eval_usage_errors(minitree: Tree, tmp_path: Path) -> None:
    bad = recipe_file(tmp_path, BASE.replace('kind = "bug"', 'kind = "maybe"'))
    cases = [
        (["--recipes", str(bad)], f"mmreview: error: {bad}: recipe 'demo/swap': kind 'maybe'"),
        (["--recipes", str(tmp_path / "none")], f"mmreview: error: {tmp_path / 'none'}: no such"),
        (["--select", "NO_SUCH"], "mmreview: error: unknown rule 'NO_SUCH'"),
        (["-f", "xml"], "mmreview: error: --format xml: unknown format"),
    ]
    for args, message in cases:
        result = mmreview("corpus", "eval", "--tree", str(minitree.path), *args)
        assert result.returncode == 2, (args, result.stdout)
        assert result.stderr.decode().startswith(message), result.stderr
        assert result.stderr.decode().count("\n") == 1 and b"Traceback" not in result.stderr
    result = mmreview("corpus", "eval", "--tree", str(tmp_path), "--recipes", str(bad))
    assert result.returncode == 2


# -- the real 6.12 tree ---------------------------------------------------------


def test_every_recipe_on_the_real_tree(kernel_tree: Path, tmp_path: Path) -> None:
    """The regression gate: every bug recipe caught, no clean edit flagged."""
    before = repo_state(kernel_tree)
    result = mmreview("corpus", "eval", "--tree", str(kernel_tree), "-f", "json")
    assert result.stderr == b"", result.stderr.decode()
    report = json.loads(result.stdout)
    failed = [
        f"{r['id']}: {r['status']} {r['error'] or ''} "
        + "; ".join(f"{f['rule']} {f['file']}:{f['line']}" for f in r["findings"])
        for r in report["recipes"]
        if r["status"] not in ("caught", "clean")
    ]
    assert not failed, "\n".join(failed)
    assert result.returncode == 0
    assert report["total"]["bugs"] == report["total"]["caught"] > 0
    assert report["total"]["clean"] >= report["total"]["bugs"] // 2
    assert len(report["recipes"]) == len(load_recipes(RECIPES, RULE_IDS))
    assert repo_state(kernel_tree) == before


def test_scan_budget_on_the_real_tree(kernel_tree: Path) -> None:
    """Upstream code that shipped is correct until shown otherwise: no
    warning or error on mm/*.c and fs/userfaultfd.c of an unmodified 6.12."""
    result = mmreview(
        "scan", "--tree", str(kernel_tree), "mm/*.c", "fs/userfaultfd.c", "-f", "json"
    )
    assert result.returncode in (0, 1), result.stderr.decode()
    findings = json.loads(result.stdout)["findings"]
    loud = [f for f in findings if f["severity"] in ("ERROR", "WARNING")]
    per_rule: dict[str, int] = {}
    for finding in loud:
        per_rule[finding["rule"]] = per_rule.get(finding["rule"], 0) + 1
    assert not loud, f"{len(loud)} warnings/errors: {per_rule}"


def mutation_patch(kernel_tree: Path, tmp_path: Path, recipe_text: str) -> Path:
    """One recipe as a real format-patch file, made without touching the tree."""
    (recipe,) = load_recipes(recipe_file(tmp_path, recipe_text), RULE_IDS)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=kernel_tree, capture_output=True, text=True, check=True
    ).stdout.strip()
    blob = subprocess.run(
        ["git", "cat-file", "blob", f"HEAD:{recipe.file}"], cwd=kernel_tree, capture_output=True
    ).stdout
    mutated = apply(recipe, Image.of(blob))
    with Scratch(str(kernel_tree), str(kernel_tree / ".git" / "objects")) as scratch:
        commit = scratch.commit(head, {recipe.file: mutated}, f"fs/userfaultfd: {recipe.id}\n")
        patch = tmp_path / "0001.patch"
        patch.write_bytes(scratch.format_patch(commit))
    return patch


MUST_WAIT = BASE.replace("mm/fault.c", "fs/userfaultfd.c").replace(
    "demo_must_wait", "userfaultfd_must_wait"
)


def test_must_wait_swap_is_flagged_on_the_real_tree(kernel_tree: Path, tmp_path: Path) -> None:
    patch = mutation_patch(kernel_tree, tmp_path, MUST_WAIT)
    assert "-\tif (pmd_none(_pmd))\n+\tif (!pmd_present(_pmd))\n" in patch.read_text()
    result = mmreview("check", str(patch), "--tree", str(kernel_tree), "-f", "checkpatch")
    out = result.stdout.decode()
    assert result.returncode == 1, out + result.stderr.decode()
    assert out.startswith("fs/userfaultfd.c:308: WARNING:PMD_PRESENT_AS_EMPTY: pmd_none(_pmd)")
    assert out.rstrip().endswith("(in userfaultfd_must_wait())") and out.count("\n") == 1


def test_must_wait_rename_is_silent_on_the_real_tree(kernel_tree: Path, tmp_path: Path) -> None:
    rename = MUST_WAIT.replace(
        'edit = "replace-call"\ncall = "pmd_none"\nreplacement = "!pmd_present"',
        'edit = "rename-local"\nname = "_pmd"\nto = "pmdval"',
    )
    patch = mutation_patch(kernel_tree, tmp_path, rename)
    assert patch.read_text().count("\n+") >= 5
    result = mmreview("check", str(patch), "--tree", str(kernel_tree))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert "0 errors, 0 warnings, 0 checks in 1 patch" in result.stdout.decode()


def test_scan_text_ends_with_per_rule_counts(tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    collapse = (
        "static void collapse_{n}(struct vm_area_struct *vma, pmd_t *pmd, unsigned long addr)\n"
        "{{\n"
        "\tspinlock_t *pml = pmd_lock(vma->vm_mm, pmd);\n"
        "\tpmd_t old = pmdp_collapse_flush(vma, addr, pmd);\n\n"
        "\tspin_unlock(pml);\n"
        "\tpte_free_defer(vma->vm_mm, pmd_pgtable(old));\n"
        "}}\n"
    )
    (tmp_path / "mm" / "khugepaged.c").write_text(collapse.format(n=1) + collapse.format(n=2))
    result = mmreview(
        "scan", "--tree", str(tmp_path), "mm", "--select", "COLLAPSE_WITHOUT_UFFD_CHECK"
    )
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 1
    assert lines[-2:] == [
        "     2  COLLAPSE_WITHOUT_UFFD_CHECK (2 errors)",
        "2 errors, 0 warnings, 0 checks in 1 file",
    ]
