"""Which APIs a file uses (Rule.applies_to): the regexes' answers, kept on
disk for a file of the tree and read back by its blob id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.images import git_blob_id
from analyzer.registry import all_rules
from analyzer.rule import ApiUses

APIS = sorted({rule.api for rule in all_rules() if rule.api is not None})
WORDS = st.sampled_from([b"pmd_none(", b"pte_offset_map", b" pud_val ", b"uffd", b"x", b"\n", b"_"])


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDS, max_size=12).map(b"".join))
def test_answers_are_the_regexes_answers(text: bytes) -> None:
    uses = ApiUses(text, git_blob_id(text))
    for api in APIS:
        assert uses(api) == (re.search(api.encode(), text) is not None)


def test_kept_answers_are_read_back_by_blob_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    text = b"static int f(pmd_t *pmd)\n{\n\treturn pmd_none(*pmd);\n}\n"
    blob = git_blob_id(text)
    first = ApiUses(text, blob, keep=True)
    answers = {api: first(api) for api in APIS}
    assert any(answers.values()) and not all(answers.values())
    first.keep()
    # Read back: the kept answers, not a search (this text matches nothing).
    kept = ApiUses(b"", blob, keep=True)
    assert {api: kept(api) for api in APIS} == answers
    # Not kept: searched again.
    assert not any(ApiUses(b"", blob)(api) for api in APIS)
    for bad in ('{"x": 1}', "[true]", "{"):
        for entry in tmp_path.glob("api-uses/*.json"):
            entry.write_text(bad)
        assert not any(ApiUses(b"", blob, keep=True)(api) for api in APIS)


def test_answers_are_kept_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    text = b"pmd_none(x)"
    for keep in (False, True):
        uses = ApiUses(text, git_blob_id(text), keep=keep)
        uses(APIS[0])
        uses.keep()
        assert bool(list(tmp_path.glob("api-uses/*.json"))) is keep
