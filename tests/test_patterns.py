"""A pattern compiled on first use is the pattern re.compile makes."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from analyzer import patterns
from analyzer.patterns import regex


def test_nothing_is_compiled_before_the_first_use(monkeypatch) -> None:
    compiled: list[object] = []
    real = re.compile
    monkeypatch.setattr(patterns.re, "compile", lambda *a: compiled.append(a) or real(*a))
    deferred = regex(rb"^\s*#\s*include\s*([<\"])", re.M)
    assert compiled == [] and deferred.pattern == rb"^\s*#\s*include\s*([<\"])"
    assert deferred.search(b'x\n #include "a.h"').group(1) == b'"'
    assert deferred.findall(b"#include <b.h>\n#include <c.h>") == [b"<", b"<"]
    assert deferred.groups == 1
    assert len(compiled) == 1  # once, however often it is used


@given(st.text(alphabet="ab_(){}; \n\tx", max_size=60))
def test_every_method_answers_as_the_compiled_pattern(text: str) -> None:
    source, flags = r"^\s*(\w+)\s*\(|[{};]", re.M
    deferred, compiled = regex(source, flags), re.compile(source, flags)
    assert [m.span() for m in deferred.finditer(text)] == [
        m.span() for m in compiled.finditer(text)
    ]
    assert deferred.findall(text) == compiled.findall(text)
    assert deferred.sub("-", text) == compiled.sub("-", text)
    assert deferred.split(text) == compiled.split(text)
    for method in ("search", "match", "fullmatch"):
        got, want = getattr(deferred, method)(text), getattr(compiled, method)(text)
        assert (got and got.span()) == (want and want.span())
