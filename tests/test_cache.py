"""The derived cache is keyed by the code that derived its facts: an edit to
that code is a new key, and the same code the same key."""

from __future__ import annotations

import os
from pathlib import Path

from analyzer import cache


def test_the_code_digest_follows_the_code(tmp_path: Path) -> None:
    source = tmp_path / "summaries.py"
    source.write_text("KEPT = 1\n")
    first = cache.code_digest(str(source))
    assert cache.code_digest(str(source)) == first
    # An edit of the same size, at another time, as an editor saves it.
    source.write_text("KEPT = 2\n")
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    edited = cache.code_digest(str(source))
    assert edited != first
    source.write_text("KEPT = 22\n")
    assert cache.code_digest(str(source)) not in (first, edited)


def test_a_fact_kept_is_read_back_and_damage_is_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMREVIEW_CACHE_DIR", str(tmp_path))
    cache.store("facts", "0123abcd", {"pte_offset_map_lock": [1, 2]})
    assert cache.load("facts", "0123abcd") == {"pte_offset_map_lock": [1, 2]}
    (tmp_path / "facts" / "0123abcd.json").write_bytes(b"{\x00 damaged")
    assert cache.load("facts", "0123abcd") is None
    assert cache.load("facts", "absent") is None
