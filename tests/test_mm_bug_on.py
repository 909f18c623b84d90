"""MM_BUG_ON's severity tiers and its silence on code as it already is."""

from __future__ import annotations

from pathlib import Path

from analyzer.engine import scan_functions
from analyzer.images import Image
from analyzer.parsing import parse
from analyzer.registry import get_rule
from analyzer.rule import ReviewContext
from tests import fixture_harness

FIXTURE = Path(__file__).parent / "fixtures" / "rules" / "mm_bug_on.patchlet"


def test_racy_state_warns_and_plain_assertions_are_left_to_checkpatch() -> None:
    fixture = fixture_harness.load(FIXTURE)
    post = fixture.images.post.text.decode().split("\n")
    found = {
        post[f.line - 1].strip(): (f.severity.value, f.confidence.value)
        for f in fixture_harness.run(fixture)
    }
    assert found == {
        "BUG_ON(pmd_none(*dst_pmd));": ("WARNING", "MEDIUM"),
        "VM_BUG_ON(pmd_trans_huge(dst_pmdval));": ("WARNING", "HIGH"),
        "VM_BUG_ON(!pte_none(ptep_get(pte)));": ("WARNING", "MEDIUM"),
        "VM_BUG_ON_FOLIO(folio_ref_count(folio) != 2, folio);": ("WARNING", "MEDIUM"),
        "VM_BUG_ON_FOLIO(folio_ref_count(folio) > 1, folio);": ("WARNING", "MEDIUM"),
        "VM_BUG_ON_FOLIO(!folio_test_anon(folio), folio);": ("WARNING", "HIGH"),
    }


def test_scan_reports_no_existing_assertion() -> None:
    # A whole file, as `mmreview scan` reads it: every assertion in it is
    # upstream's, not a patch's.
    text = fixture_harness.load(FIXTURE).images.post.text
    rule = get_rule("MM_BUG_ON")
    assert rule is not None
    parsed = parse(Image.of(text))
    assert scan_functions(parsed, "mm/userfaultfd.c", [rule], ReviewContext()) == []
