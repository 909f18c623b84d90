"""The sanitizer's fast scans against its definition.

`analyzer.parsing.sanitize()` finds its idioms with literal searches and
regexes that start with a literal (a cold review sanitizes two whole files).
What it must blank is defined by the plain regexes below, run over the
whole text; both must give the same bytes, on hand-written cases and on
every C file of the real tree's mm/ and include/linux/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analyzer import parsing


def reference(source: bytes) -> bytes:
    """The sanitizer's definition: each idiom one regex over the whole text."""
    annotation = re.compile(
        rb"\b(?:" + b"|".join(re.escape(a.encode()) for a in parsing._BARE_ANNOTATIONS) + rb")\b"
    )
    call_annotation = re.compile(
        rb"\b(?:" + b"|".join(re.escape(a.encode()) for a in parsing._CALL_ANNOTATIONS) + rb")\s*\("
    )
    iterator = re.compile(rb"^([ \t]*)((?:\w*_)?for_each\w*)(\s*\()", re.MULTILINE)
    type_argument = re.compile(rb"(?<=[(,])(\s*)(struct|union|enum)(\s+\w+\s*)(?=[,)])")
    syscall = re.compile(rb"^(SYSCALL_DEFINE\d|COMPAT_SYSCALL_DEFINE\d)\((\w+)", re.MULTILINE)
    directive = re.compile(rb"^[ \t]*#.*?(?:\\\r?\n.*?)*$", re.MULTILINE)

    buf = bytearray(source)
    spans = [(m.start(), m.end()) for m in directive.finditer(source)]

    def in_directive(pos: int) -> bool:
        return any(start <= pos <= end for start, end in spans)

    def blank(start: int, end: int) -> None:
        for i in range(start, end):
            if buf[i] not in (0x0A, 0x0D):
                buf[i] = 0x20

    def balanced_end(open_paren: int) -> int:
        depth = 0
        for i in range(open_paren, len(source)):
            depth += {0x28: 1, 0x29: -1}.get(source[i], 0)
            if source[i] == 0x29 and depth == 0:
                return i + 1
        return open_paren + 1

    for match in call_annotation.finditer(source):
        if not in_directive(match.start()):
            blank(match.start(), balanced_end(match.end() - 1))
    for match in annotation.finditer(source):
        if not in_directive(match.start()):
            blank(match.start(), match.end())
    for match in iterator.finditer(source):
        if not in_directive(match.start()):
            buf[match.start(2) : match.start(2) + 5] = b"while"
            blank(match.start(2) + 5, match.end(2))
    for match in type_argument.finditer(source):
        if not in_directive(match.start()):
            blank(match.start(2), match.end(2))
    for match in syscall.finditer(source):
        parsing._rewrite_syscall(buf, source, match)
    return bytes(buf)


CASES = [
    # Annotations only where a word starts, never inside an identifier.
    b"static int __init demo(void) __must_hold(&mm->lock)\n",
    b"int foo__init; int x__must_hold(a); int __initdata_not;\n",
    b"void f(void) __acquires(x) __releases(((y)))\n{\n}\n",
    b"__must_hold(unbalanced\n",
    b"noinline notrace asmlinkage noinline_for_stack void g(void);\nint nonotrace, xnoinline;\n",
    # Iterators: the first word of a line only.
    b"\tlist_for_each_entry(p, h, m) {\n\t\tx = list_for_each(a);\n\t}\n",
    b"  for_each_online_cpu(cpu)\n  foo_for_each_bar\n\t(x) {\nhlist_for_each(a) for_each(b)\n",
    b"for_each\nx(\n",
    # Types as macro arguments, after "(" or "," and before "," or ")".
    b"p = container_of(q, struct demo, page); r = (struct demo *)s; f(union u);\n",
    b"g(a,struct x ,enum  y\t, struct z)\n",
    # Syscall definitions at the start of a line.
    b"SYSCALL_DEFINE3(madvise, unsigned long, start, size_t, len, int, behavior)\n{\n}\n",
    b"COMPAT_SYSCALL_DEFINE0(demo)\n  SYSCALL_DEFINE1(indented, int, a)\nXSYSCALL_DEFINE1(x, int, a)\n",
    # Directives are left alone, continuation lines or not.
    b"#define DEMO(x) __must_hold(x) list_for_each(x)\n# define B \\\n\t__init(struct s, y)\n",
    b"  #if defined(__init)\nint __init z;\n#endif /* __init */\n",
    b"",
    b"__init",
    b"\r\n__init\r\n\tlist_for_each(a)\r\n",
]


@pytest.mark.parametrize("source", CASES)
def test_fast_scans_blank_what_the_definition_does(source: bytes) -> None:
    assert parsing.sanitize(source) == reference(source)


def test_whole_files_of_the_real_tree(kernel_tree: Path) -> None:
    files = sorted((kernel_tree / "mm").rglob("*.[ch]"))
    files += sorted((kernel_tree / "include" / "linux").glob("*.h"))
    assert len(files) > 500
    differ = [
        str(path.relative_to(kernel_tree))
        for path in files
        if parsing.sanitize(data := path.read_bytes()) != reference(data)
    ]
    assert differ == []
