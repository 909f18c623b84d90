"""Hostile mail in the archive: each message is skipped or reviewed within
limits with a logged reason, nothing from it is executed, the tree is not
touched, and the bot goes on to review the next series."""

from __future__ import annotations

import base64
import mailbox
import os
from pathlib import Path

from tests.test_bot import (
    LIST,
    SWAP,
    archive_template,  # noqa: F401 -- a fixture
    expected_targets,
    replies_by_target,
    tree_fingerprint,
    world,  # noqa: F401 -- a fixture
)

HEAD = (
    "From: Eve <eve@example.org>\nTo: {list}\nDate: Mon, 2 Nov 2026 10:00:00 +0000\n"
    "Message-ID: <{msgid}@example.org>\nSubject: {subject}\n"
)


def mail(msgid: str, subject: str, body: str, extra: str = "") -> bytes:
    head = HEAD.format(list=LIST, msgid=msgid, subject=subject) + extra
    return (head + "\n" + body).encode("utf-8", "surrogateescape")


def diff(path: str, old: str = "a", new: str = "b") -> str:
    return (
        f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-{old}\n+{new}\n"
    )


def mime_bomb(depth: int) -> bytes:
    lines = [
        HEAD.format(list=LIST, msgid="bomb", subject="[PATCH] mm: nested parts").rstrip("\n"),
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b0"',
        "",
    ]
    for level in range(1, depth):
        lines += [f"--b{level - 1}", f'Content-Type: multipart/mixed; boundary="b{level}"', ""]
    lines += [f"--b{depth - 1}", "Content-Type: text/plain", "", diff("mm/fault.c"), ""]
    lines += [f"--b{level}--" for level in reversed(range(depth))]
    return ("\n".join(lines) + "\n").encode()


def test_hostile_mail_is_skipped_or_bounded_and_the_bot_goes_on(
    world,  # noqa: F811 -- the fixture imported above
    tmp_path: Path,
) -> None:
    bot, sink, series = world
    marker = tmp_path / "pwned"
    bot.write(
        limits=["max_message_bytes = 400000", "max_files_per_patch = 300", "max_mime_parts = 32"]
    )
    many_files = "".join(
        f"diff --git a/mm/f{n}.c b/mm/f{n}.c\nnew file mode 100644\n--- /dev/null\n"
        f"+++ b/mm/f{n}.c\n@@ -0,0 +1 @@\n+int x{n};\n"
        for n in range(2000)
    )
    latin1 = (
        "From: Ren\xe9e <renee@example.org>\nTo: linux-mm@kvack.org\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0000\nMessage-ID: <latin1@example.org>\n"
        "Subject: [PATCH] mm/demo: caf\xe9 PMD check\n\n"
        "Commit message in Latin-1 without a charset: na\xefve.\n\n"
        "Signed-off-by: Ren\xe9e <renee@example.org>\n---\n"
        "diff --git a/mm/fault.c b/mm/fault.c\n--- a/mm/fault.c\n+++ b/mm/fault.c\n"
        "@@ -31,7 +31,7 @@\n \tpmd = pmd_offset(pud, address);\n again:\n"
        " \t_pmd = pmdp_get_lockless(pmd);\n"
        f"-{SWAP[0].splitlines()[0]}\n+{SWAP[1].splitlines()[0]}\n"
        " \t\tgoto out;\n \n \tret = false;\n"
    ).encode("latin-1")
    hostile = {
        "oversized": mail("big", "[PATCH] mm: big", diff("mm/fault.c") + "+x\n" * 250_000),
        "MIME bomb": mime_bomb(200),
        "huge base64": mail(
            "b64",
            "[PATCH] mm: attachment",
            "--s\nContent-Type: text/x-patch\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(os.urandom(150_000)).decode()
            + "--s--\n",
            'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="s"\n',
        ),
        "malformed headers": (
            b'From: "unterminated <eve@\nTo: linux-mm@kvack.org\nDate: yesterday-ish\n'
            b"Message-ID: <bad-headers@example.org>\n"
            b"Subject: =?utf-8?q?[PATCH]_bad=ZZ?= =?x-unknown?b?!!!?= \xff\xfe\n"
            b"Content-Type: text/plain; charset=no-such-charset\n\n" + diff("mm/fault.c").encode()
        ),
        "parent path": mail("dotdot", "[PATCH] mm: escape", diff("../../etc/passwd")),
        "absolute path": mail(
            "abs", "[PATCH] mm: absolute", "--- /etc/shadow\n+++ /etc/shadow\n@@ -1 +1 @@\n-a\n+b\n"
        ),
        "2000 files": mail("many", "[PATCH] mm: everything", many_files),
        "shell in msgid": mail(
            f"$(touch${{IFS}}{marker})`touch${{IFS}}{marker}`;touch", "[PATCH] mm: x", diff("a;b")
        ),
        "absurd total": mail("total", "[PATCH 1/9999] mm: counting", diff("mm/fault.c")),
        "non-UTF-8": latin1,
        # public-inbox keeps it and adds a Message-ID of its own
        "reused Message-ID": mail("question-1", "[PATCH] mm: reused id", diff("mm/fault.c")),
        "no Message-ID": b"From: a@example.org\nTo: linux-mm@kvack.org\nSubject: [PATCH] x\n\n",
    }
    bot.inbox.deliver(*hostile.values(), precheck=False)
    # A Maildir next to it with what public-inbox would not keep as is.
    maildir = mailbox.Maildir(tmp_path / "lei", create=True)
    maildir.add(b"\x00\x01\xff\xfe binary garbage\n\n\x00\x00")
    maildir.add(b"Subject: [PATCH] crlf\r\nMessage-ID: <crlf@x>\r\n\r\n" + b"\x00" * 1000)
    bot.write(
        archives=[
            f'[[archive]]\npath = "{bot.inbox.dir}"',
            f'[[archive]]\npath = "{tmp_path / "lei"}"\nname = "lei"',
        ]
    )
    before = tree_fingerprint(bot.tree)

    # And a normal series after all that.
    bot.inbox.deliver(*series[0].messages)
    log = bot.once()

    assert replies_by_target(sink).keys() >= expected_targets(series[:1])
    for reason in (
        "oversized: ",
        "MIME bomb: ",
        "<dotdot@example.org>: refusing diff path '../../etc/passwd': path leaves the tree",
        "<abs@example.org>: refusing diff path '/etc/shadow': absolute path",
        "<b64@example.org>: 'mm: attachment' has no diff",
        "touches 2000 files (limit 300); not reviewed",
        "series of 9999 patches (limit 100)",
    ):
        assert reason in log, reason
    assert "event=reused_message_id msgid=<question-1@example.org>" in log
    assert 'title="mm: reused id"' in log
    assert not marker.exists()
    assert tree_fingerprint(bot.tree) == before
    # The Latin-1 patch was reviewed like any other, and its finding sent.
    assert "<latin1@example.org>" in replies_by_target(sink)
    assert "Traceback" not in log
    status = bot.status()
    assert "series: " in status and "failed" not in status.split("series: ")[1].split("\n")[0]
