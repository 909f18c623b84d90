"""Every rule against its annotated fixtures: a miss and a false alarm both fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.registry import all_rules
from tests import fixture_harness

FIXTURES = Path(__file__).parent / "fixtures" / "rules"
FILES = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".c", ".patchlet", ".msg"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fixture(path: Path) -> None:
    fixture = fixture_harness.load(path)
    problems = fixture_harness.mismatches(fixture, fixture_harness.run(fixture))
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_rule_has_both_kinds_of_cases(rule) -> None:
    expectations = [
        e for path in FILES for e in fixture_harness.load(path).expectations if e.rule == rule.id
    ]
    assert sum(e.kind == "ruleid" for e in expectations) >= 2, f"{rule.id}: needs 2+ ruleid cases"
    assert sum(e.kind == "ok" for e in expectations) >= 2, f"{rule.id}: needs 2+ ok cases"


def test_fixture_ids_exist() -> None:
    known = {r.id for r in all_rules()}
    for path in FILES:
        unknown = fixture_harness.load(path).rules - known
        assert not unknown, f"{path.name}: unknown rule ids {unknown}"


def test_harness_catches_misses_and_false_alarms(tmp_path: Path) -> None:
    fixture = tmp_path / "probe.patchlet"
    fixture.write_text(
        " static int probe(pmd_t *pmdp)\n"
        " {\n"
        "-\tif (pmd_none(*pmdp))\n"
        "+\t/* ok: PMD_PRESENT_AS_EMPTY */\n"
        "+\tif (!pmd_present(*pmdp))\n"
        "+\t\treturn 0;\n"
        "+\t/* ruleid: PMD_PRESENT_AS_EMPTY */\n"
        "+\treturn 1;\n"
        " }\n"
    )
    loaded = fixture_harness.load(fixture)
    problems = fixture_harness.mismatches(loaded, fixture_harness.run(loaded))
    assert any("not reported" in p for p in problems)
    assert any("on an ok line" in p for p in problems)


def test_misplaced_annotation_is_rejected(tmp_path: Path) -> None:
    fixture = tmp_path / "bad.c"
    fixture.write_text("int x; /* ruleid: PMD_PRESENT_AS_EMPTY */\n")
    with pytest.raises(ValueError, match="alone"):
        fixture_harness.load(fixture)
