"""Hostile variants of real patch shapes, for the property tests
(tests/test_fuzz.py, in-process) and bench/fuzz.py (the CLI, end to end).

Seeds are patches as they arrive: `git format-patch` files, mbox series,
MIME mail, plain `git diff` output.  The kernel-style seeds below are
written for mm-review; the others are made with real git (the tests' mini
tree, or the real 6.12 tree in the benchmark).  Each category of `mutate()`
is one way input goes wrong in the wild or at the hands of an attacker; the
big ones (`long_line`, `big_hunk`, `many_files`, `deep_mime`,
`many_messages`) are sized as the issue that asked for them says.
"""

from __future__ import annotations

import gzip
import random
import re
from email.message import EmailMessage
from email.policy import SMTP

# Hand-written kernel-style seeds (not kernel text): a function-body change,
# a new file, a deletion, a rename with a change, a binary file, several
# hunks, and a commit message with trailers.
KERNEL_STYLE_DIFFS = [
    (
        "diff --git a/mm/demo_walk.c b/mm/demo_walk.c\n"
        "index 1a2b3c4..5d6e7f8 100644\n"
        "--- a/mm/demo_walk.c\n"
        "+++ b/mm/demo_walk.c\n"
        "@@ -40,8 +40,8 @@ static int demo_walk_pmd(struct vm_area_struct *vma, pmd_t *pmd,\n"
        " \tpmd_t pmdval;\n"
        " \n"
        " \tpmdval = pmdp_get_lockless(pmd);\n"
        "-\tif (pmd_none(pmdval))\n"
        "+\tif (!pmd_present(pmdval))\n"
        " \t\treturn 0;\n"
        " \tif (pmd_trans_huge(pmdval))\n"
        " \t\treturn demo_walk_huge(vma, pmd, addr);\n"
        " \treturn demo_walk_ptes(vma, pmd, addr);\n"
    ),
    (
        "diff --git a/mm/demo_new.c b/mm/demo_new.c\n"
        "new file mode 100644\n"
        "index 0000000..9abcdef\n"
        "--- /dev/null\n"
        "+++ b/mm/demo_new.c\n"
        "@@ -0,0 +1,14 @@\n"
        "+// SPDX-License-Identifier: GPL-2.0\n"
        "+#include <linux/mm.h>\n"
        "+\n"
        "+static int demo_count(struct vm_area_struct *vma, pmd_t *pmd, unsigned long addr)\n"
        "+{\n"
        "+\tspinlock_t *ptl;\n"
        "+\tpte_t *pte = pte_offset_map_lock(vma->vm_mm, pmd, addr, &ptl);\n"
        "+\tint n = 0;\n"
        "+\n"
        "+\tif (!pte_none(ptep_get(pte)))\n"
        "+\t\tn++;\n"
        "+\tpte_unmap_unlock(pte, ptl);\n"
        "+\treturn n;\n"
        "+}\n"
    ),
    (
        "diff --git a/mm/demo_old.c b/mm/demo_old.c\n"
        "deleted file mode 100644\n"
        "index 2222222..0000000\n"
        "--- a/mm/demo_old.c\n"
        "+++ /dev/null\n"
        "@@ -1,4 +0,0 @@\n"
        "-static int demo_old(void)\n"
        "-{\n"
        "-\treturn 0;\n"
        "-}\n"
    ),
    (
        "diff --git a/mm/demo_a.c b/mm/demo_b.c\n"
        "similarity index 90%\n"
        "rename from mm/demo_a.c\n"
        "rename to mm/demo_b.c\n"
        "index 3333333..4444444 100644\n"
        "--- a/mm/demo_a.c\n"
        "+++ b/mm/demo_b.c\n"
        "@@ -3,6 +3,7 @@ static void demo_retract(struct vm_area_struct *vma, pmd_t *pmd)\n"
        " \tspinlock_t *pml = pmd_lock(vma->vm_mm, pmd);\n"
        " \n"
        "-\tif (unlikely(vma->anon_vma || userfaultfd_wp(vma))) {\n"
        "+\tif (unlikely(vma->anon_vma)) {\n"
        "+\t\tVM_BUG_ON(!pmd_present(*pmd));\n"
        " \t\tspin_unlock(pml);\n"
        " \t\treturn;\n"
        " \t}\n"
    ),
    (
        "diff --git a/Documentation/mm/demo.png b/Documentation/mm/demo.png\n"
        "index 5555555..6666666 100644\n"
        "Binary files a/Documentation/mm/demo.png and b/Documentation/mm/demo.png differ\n"
        "diff --git a/include/linux/demo.h b/include/linux/demo.h\n"
        "index 7777777..8888888 100644\n"
        "--- a/include/linux/demo.h\n"
        "+++ b/include/linux/demo.h\n"
        "@@ -1,3 +1,4 @@\n"
        " #ifndef _LINUX_DEMO_H\n"
        " #define _LINUX_DEMO_H\n"
        "+spinlock_t *demo_lockptr(struct mm_struct *mm, pmd_t *pmd);\n"
        " #endif\n"
        "@@ -20,4 +21,4 @@ static inline pte_t *demo_pte(pmd_t *pmd)\n"
        " {\n"
        "-\treturn (pte_t *)pmd_page_vaddr(*pmd);\n"
        "+\treturn (pte_t *)pmd_page_vaddr(pmdp_get(pmd));\n"
        " }\n"
        " \n"
    ),
]

KERNEL_STYLE_MESSAGE = (
    "mm/demo: skip non-present PMDs in the walk\n\n"
    "A non-present PMD has nothing to walk.\n\n"
    'Fixes: 0123456789ab ("mm/demo: add the walk")\n'
    "Signed-off-by: Jane Dev <jane@example.com>\n"
)


def format_patch_mail(
    diff: str,
    subject: str = "[PATCH] mm/demo: skip non-present PMDs in the walk",
    number: int = 1,
    base: str | None = "0123456789abcdef0123456789abcdef01234567",
) -> str:
    """A mail in `git format-patch` shape around a diff."""
    trailer = f"\nbase-commit: {base}\n" if base else ""
    return (
        f"From {'%040x' % (0xABCDEF + number)} Mon Sep 17 00:00:00 2001\n"
        f"From: Jane Dev <jane@example.com>\n"
        f"Date: Mon, 2 Nov 2026 10:00:0{number % 10} +0000\n"
        f"Subject: {subject}\n"
        f"Message-ID: <demo-{number}@example.com>\n\n"
        f"{KERNEL_STYLE_MESSAGE.split(chr(10), 2)[2]}---\n"
        f" 1 file changed\n\n"
        f"{diff}-- \n2.47.0\n{trailer}"
    )


def kernel_style_seeds() -> dict[str, bytes]:
    """name -> bytes: each hand-written diff plain, as a mail, as a MIME
    attachment; and all of them as one mbox series."""
    seeds: dict[str, bytes] = {}
    total = len(KERNEL_STYLE_DIFFS)
    for number, diff in enumerate(KERNEL_STYLE_DIFFS, 1):
        seeds[f"diff-{number}"] = diff.encode()
        seeds[f"patch-{number}"] = format_patch_mail(diff, number=number).encode()
        seeds[f"mime-{number}"] = mime_mail(diff, random.Random(number), wrong_charset=False)
    seeds["mbox"] = "".join(
        format_patch_mail(diff, f"[PATCH v2 {n}/{total}] mm/demo: part {n}", n) + "\n"
        for n, diff in enumerate(KERNEL_STYLE_DIFFS, 1)
    ).encode()
    return seeds


CHARSETS = ["utf-8", "iso-8859-1", "us-ascii", "koi8-r", "utf-16", "x-unknown-charset"]


def mime_mail(diff: str, rng: random.Random, wrong_charset: bool = True) -> bytes:
    """A patch mail as mail clients send it: the diff inline or attached,
    in some transfer encoding, with its charset declared right or (with
    `wrong_charset`, sometimes) wrong."""
    message = EmailMessage()
    message["From"] = "J\u00f6rg Dev <jorg@example.com>"
    message["To"] = "linux-mm@kvack.org"
    message["Subject"] = "[PATCH] mm/demo: caf\u00e9 walk"
    message["Message-ID"] = f"<mime-{rng.randrange(1 << 30)}@example.com>"
    message["Date"] = "Mon, 2 Nov 2026 10:00:00 +0000"
    body = KERNEL_STYLE_MESSAGE.split("\n", 2)[2] + "---\n"
    cte = rng.choice(["7bit", "8bit", "base64", "quoted-printable"])
    if rng.random() < 0.5:
        message.set_content(body + diff, cte=cte if diff.isascii() or cte != "7bit" else "8bit")
    else:
        message.set_content(body)
        message.add_attachment(
            diff.encode(), maintype="text", subtype="x-patch", filename="0001-demo.patch"
        )
        # The email package draws boundaries from the random module.
        message.set_boundary(f"==demo-{rng.randrange(1 << 30)}==")
    data = message.as_bytes(policy=SMTP)
    if not wrong_charset:
        return data
    declared = rng.choice(CHARSETS)
    # A wrong charset declared for the bytes that are there.
    return re.sub(rb"charset=\"?[\w-]+\"?", f"charset={declared}".encode(), data, count=1)


CATEGORIES = [
    "clean",
    "truncate",
    "flip_bytes",
    "insert_bytes",
    "delete_bytes",
    "hunk_counts",
    "duplicate_diff_git",
    "missing_diff_git",
    "dotdot_path",
    "absolute_path",
    "nul_bytes",
    "invalid_utf8",
    "wrong_charset",
    "missing_headers",
    "counter_9999",
    "binary_garbage",
    "c_garbage",
    "long_line",
    "big_hunk",
    "many_files",
    "deep_mime",
    "many_messages",
    "corrupt_gzip",
    "truncated_gzip",
]
# The ones that make big inputs (seconds each): fewer of them.
BIG = {"long_line", "big_hunk", "many_files", "deep_mime", "many_messages"}

_HUNK_RE = re.compile(rb"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@", re.MULTILINE)
_DIFF_GIT_RE = re.compile(rb"^diff --git [^\n]*\n", re.MULTILINE)
_PATH_RE = re.compile(rb"^(diff --git a/|--- a/|\+\+\+ b/)(\S+)", re.MULTILINE)
_HEADER_RE = re.compile(
    rb"^(From|Subject|Message-I[Dd]|Date|Content-Type|MIME-Version): [^\n]*\n", re.M
)
_C_TOKENS = [
    "{",
    "}",
    "(",
    ")",
    ";",
    "if",
    "else",
    "while (",
    "for (;;)",
    "pmd_none(",
    "*pmd",
    "#if CONFIG_X",
    "#else",
    "#endif",
    "struct",
    "->",
    "=",
    "0",
    "goto out;",
    "out:",
    "__must_hold(",
    "list_for_each_entry(",
    "SYSCALL_DEFINE3(",
    '"',
    "'",
    "/*",
    "*/",
    "\\",
    "pte_offset_map(",
    "return",
    "static int f(void)",
]


def mutate(data: bytes, category: str, rng: random.Random) -> bytes:
    """`data` gone wrong in the way `category` names."""
    return _MUTATIONS[category](data, rng)


def _clean(data: bytes, rng: random.Random) -> bytes:
    return data


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _insert(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 64)) + data[at:]


def _delete(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[at + rng.randint(1, 200) :]


def _hunk_counts(data: bytes, rng: random.Random) -> bytes:
    def wrong(match: re.Match[bytes]) -> bytes:
        counts = [rng.choice([0, 1, 2, 7, 99999, 2**31, 10**30]) for _ in range(2)]
        return b"@@ -%s,%d +%s,%d @@" % (match.group(1), counts[0], match.group(3), counts[1])

    return _HUNK_RE.sub(wrong, data)


def _duplicate_diff_git(data: bytes, rng: random.Random) -> bytes:
    starts = [m.start() for m in _DIFF_GIT_RE.finditer(data)]
    if not starts:
        return data
    start = rng.choice(starts)
    end = next((s for s in starts if s > start), _section_end(data, start))
    section = data[start:end]
    return data[:end] + section * rng.randint(1, 3) + data[end:]


def _section_end(data: bytes, start: int) -> int:
    tail = data.find(b"\n-- \n", start)
    return tail + 1 if tail != -1 else len(data)


def _missing_diff_git(data: bytes, rng: random.Random) -> bytes:
    return _DIFF_GIT_RE.sub(b"", data, count=rng.randint(1, 5))


def _dotdot(data: bytes, rng: random.Random) -> bytes:
    return _PATH_RE.sub(lambda m: m.group(1) + b"../../" + m.group(2), data)


def _absolute(data: bytes, rng: random.Random) -> bytes:
    return _PATH_RE.sub(lambda m: m.group(1)[:-2] + b"/etc/" + m.group(2), data)


def _nul(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        out.insert(rng.randrange(len(out) + 1), 0)
    # In a path too: it reaches git arguments there.
    return _PATH_RE.sub(lambda m: m.group(1) + m.group(2)[:3] + b"\0" + m.group(2)[3:], bytes(out))


def _invalid_utf8(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 10)):
        out.insert(rng.randrange(len(out) + 1), rng.choice([0x80, 0xC3, 0xFF, 0xFE, 0xED]))
    return bytes(out)


def _wrong_charset(data: bytes, rng: random.Random) -> bytes:
    charset = rng.choice([*CHARSETS, "base64", "idna", "rot13", "utf-7", "", "\u00e9"])
    header = f"Content-Type: text/plain; charset={charset}\n".encode("utf-8", "replace")
    if re.search(rb"^Content-Type:", data, re.M | re.I):
        return re.sub(rb"(?mi)^Content-Type:[^\n]*\n", header, data, count=1)
    if (at := data.find(b"\nSubject:")) != -1:
        return data[: at + 1] + b"MIME-Version: 1.0\n" + header + data[at + 1 :]
    return header + data


def _missing_headers(data: bytes, rng: random.Random) -> bytes:
    headers = list(_HEADER_RE.finditer(data))
    for match in sorted(
        rng.sample(headers, rng.randint(0, len(headers))), key=lambda m: -m.start()
    ):
        data = data[: match.start()] + data[match.end() :]
    return data


def _counter(data: bytes, rng: random.Random) -> bytes:
    counter = rng.choice([b"9999/3", b"0/0", b"3/1", b"1/0", b"99999/99999", b"-1/2", b"01/02"])
    replaced = re.sub(rb"\[PATCH[^\]]*\]", b"[PATCH " + counter + b"]", data)
    if replaced == data:
        return b"Subject: [PATCH " + counter + b"] mm: odd\n\n---\n" + data
    return replaced


def _binary_garbage(data: bytes, rng: random.Random) -> bytes:
    garbage = rng.randbytes(rng.randint(1, 4096))
    return rng.choice([garbage, data[: len(data) // 2] + garbage, garbage + data])


def _c_garbage(data: bytes, rng: random.Random) -> bytes:
    """Added lines of token soup inside a function: the parser recovers
    everywhere."""
    lines = [
        "+" + " ".join(rng.choice(_C_TOKENS) for _ in range(rng.randint(1, 12)))
        for _ in range(rng.randint(50, 3000))
    ]
    return _add_lines(data, lines)


def _long_line(data: bytes, rng: random.Random) -> bytes:
    size = rng.choice([64 << 10, 1 << 20])
    return _add_lines(data, ["+\tx = " + "a+" * (size // 2) + "1;"])


def _big_hunk(data: bytes, rng: random.Random) -> bytes:
    count = rng.choice([20000, 50000])
    return _add_lines(
        data, [f"+\tif (pmd_none(*pmd{n % 97}))\n+\t\treturn {n};" for n in range(count // 2)]
    )


def _add_lines(data: bytes, lines: list[str]) -> bytes:
    """Lines added at the end of the first hunk, its header made to agree."""
    match = _HUNK_RE.search(data)
    added = ("\n".join(lines) + "\n").encode()
    if match is None:
        return data + b"@@ -1,1 +1,%d @@ demo(void)\n " % (added.count(b"\n") + 1) + b"{\n" + added
    old = int(match.group(2)[1:]) if match.group(2) else 1
    new = int(match.group(4)[1:]) if match.group(4) else 1
    header = b"@@ -%s,%d +%s,%d @@" % (
        match.group(1),
        old,
        match.group(3),
        new + added.count(b"\n"),
    )
    end_of_header = data.index(b"\n", match.start()) + 1
    body_end = _hunk_end(data, end_of_header)
    return data[: match.start()] + header + data[match.end() : body_end] + added + data[body_end:]


def _hunk_end(data: bytes, start: int) -> int:
    position = start
    while position < len(data) and data[position : position + 1] in (b" ", b"+", b"-", b"\\"):
        newline = data.find(b"\n", position)
        position = len(data) if newline == -1 else newline + 1
    return position


def _many_files(data: bytes, rng: random.Random) -> bytes:
    """The first file's section again and again, 2,000 files in all."""
    match = _DIFF_GIT_RE.search(data)
    if match is None:
        return data
    end = next((m.start() for m in _DIFF_GIT_RE.finditer(data, match.end())), None)
    end = end if end is not None else _section_end(data, match.start())
    section = data[match.start() : end]
    path = _PATH_RE.search(section)
    name = path.group(2) if path else b"mm/x.c"
    copies = [
        section.replace(
            name, name.replace(b".", b"_%d." % n, 1) if b"." in name else name + b"%d" % n
        )
        for n in range(2000)
    ]
    return data[: match.start()] + b"".join(copies) + data[end:]


def _deep_mime(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([64, 200])
    head = (
        b"From: Jane Dev <jane@example.com>\nSubject: [PATCH] mm/demo: deep\n"
        b"Message-ID: <deep@example.com>\nMIME-Version: 1.0\n"
    )
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (n, n) for n in range(depth)
    )
    closing = b"".join(b"\n--b%d--\n" % n for n in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\n\n" + data + closing


def _many_messages(data: bytes, rng: random.Random) -> bytes:
    """500 messages: the input's (as a mail) numbered 1/500 to 500/500."""
    if not data.startswith(b"From "):
        data = format_patch_mail(data.decode("utf-8", "replace"), "[PATCH] x").encode()
    first = data.split(b"\nFrom ", 1)[0] + b"\n"
    return b"".join(
        re.sub(
            rb"(?m)^Subject: [^\n]*", b"Subject: [PATCH %d/500] mm: part %d" % (n, n), first
        ).replace(b"Message-ID: <", b"Message-ID: <%d." % n, 1)
        for n in range(1, 501)
    )


def _corrupt_gzip(data: bytes, rng: random.Random) -> bytes:
    packed = bytearray(gzip.compress(data))
    for _ in range(rng.randint(1, 16)):
        at = rng.randrange(10, len(packed)) if len(packed) > 10 else 0
        packed[at] = rng.randrange(256)
    return bytes(packed)


def _truncated_gzip(data: bytes, rng: random.Random) -> bytes:
    packed = gzip.compress(data)
    return packed[: rng.randrange(2, max(len(packed), 3))]


_MUTATIONS = {
    "clean": _clean,
    "truncate": _truncate,
    "flip_bytes": _flip,
    "insert_bytes": _insert,
    "delete_bytes": _delete,
    "hunk_counts": _hunk_counts,
    "duplicate_diff_git": _duplicate_diff_git,
    "missing_diff_git": _missing_diff_git,
    "dotdot_path": _dotdot,
    "absolute_path": _absolute,
    "nul_bytes": _nul,
    "invalid_utf8": _invalid_utf8,
    "wrong_charset": _wrong_charset,
    "missing_headers": _missing_headers,
    "counter_9999": _counter,
    "binary_garbage": _binary_garbage,
    "c_garbage": _c_garbage,
    "long_line": _long_line,
    "big_hunk": _big_hunk,
    "many_files": _many_files,
    "deep_mime": _deep_mime,
    "many_messages": _many_messages,
    "corrupt_gzip": _corrupt_gzip,
    "truncated_gzip": _truncated_gzip,
}
assert set(_MUTATIONS) == set(CATEGORIES)
