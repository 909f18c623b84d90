"""Reading patches as they really arrive: format-patch files, mbox series,
MIME-encoded mail, plain diffs."""

from __future__ import annotations

import gzip
import mailbox
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.patches import InputError, Subject, _only_message, read_series

DIFF = (
    "diff --git a/mm/foo.c b/mm/foo.c\n"
    "index 1111111..2222222 100644\n"
    "--- a/mm/foo.c\n"
    "+++ b/mm/foo.c\n"
    "@@ -1,3 +1,3 @@ static int foo(void)\n"
    " {\n"
    "-\treturn 0;\n"
    "+\treturn 1; /* caf\u00e9 */\n"
    " }\n"
)


def message(
    subject: str, body: str, msgid: str = "<1@example.com>", **headers: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Jane Dev <jane@example.com>"
    msg["To"] = "linux-mm@kvack.org"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 2 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = msgid
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def mbox(*messages: EmailMessage) -> bytes:
    out = b""
    for msg in messages:
        out += (
            b"From mboxrd@z Thu Jan  1 00:00:00 1970\n"
            + msg.as_bytes(policy=SMTP).replace(b"\r\n", b"\n")
            + b"\n"
        )
    return out


@pytest.mark.parametrize(
    ("raw", "counter", "total", "version", "prefixes", "text"),
    [
        ("[PATCH v2 3/7] mm: foo", 3, 7, 2, ("PATCH",), "mm: foo"),
        ("[PATCHv3 0/2] mm: cover", 0, 2, 3, ("PATCH",), "mm: cover"),
        ("[RFC PATCH mm-unstable 01/12] mm: x", 1, 12, 1, ("RFC", "PATCH", "mm-unstable"), "mm: x"),
        ("[PATCH RESEND] mm: y", None, None, 1, ("PATCH", "RESEND"), "mm: y"),
        ("[PATCH] [v4] mm: z", None, None, 4, ("PATCH",), "mm: z"),
        ("mm: no prefix", None, None, 1, (), "mm: no prefix"),
    ],
)
def test_subjects(raw, counter, total, version, prefixes, text) -> None:
    subject = Subject.parse(raw)
    assert (subject.counter, subject.total, subject.version, subject.prefixes, subject.text) == (
        counter,
        total,
        version,
        prefixes,
        text,
    )


def test_reply_is_recognised() -> None:
    assert Subject.parse("Re: [PATCH 1/2] mm: foo").is_reply
    assert not Subject.parse("[PATCH 1/2] mm: re: foo").is_reply


def test_series_ordered_by_counter_cover_skipped_replies_skipped() -> None:
    data = mbox(
        message("[PATCH v2 2/2] mm: second", f"Body two\n---\n{DIFF}", "<2@x>"),
        message("Re: [PATCH v2 1/2] mm: first", "> quoted\nLooks fine.\n", "<r@x>"),
        message(
            "[PATCH v2 0/2] mm: cover",
            "Cover text\n\nbase-commit: 0123456789abcdef0123456789abcdef01234567\n",
            "<0@x>",
        ),
        message(
            "[PATCH v2 1/2] mm: first", f"Body one\n\nSigned-off-by: Jane\n---\n{DIFF}", "<1@x>"
        ),
    )
    series = read_series(["-"], stdin=data)
    assert [(p.index, p.total, p.title) for p in series.patches] == [
        (1, 2, "mm: first"),
        (2, 2, "mm: second"),
    ]
    assert (
        series.cover is not None
        and series.base_commit == "0123456789abcdef0123456789abcdef01234567"
    )
    assert series.patches[0].commit_message == "Body one\n\nSigned-off-by: Jane"
    assert any("skipped reply" in note for note in series.notes)


def test_only_newest_revision_is_reviewed() -> None:
    data = mbox(
        message("[PATCH v1 1/1] mm: a", f"x\n---\n{DIFF}", "<a@x>"),
        message("[PATCH v2 1/1] mm: a", f"y\n---\n{DIFF}", "<b@x>"),
    )
    series = read_series(["-"], stdin=data)
    assert [p.message_id for p in series.patches] == ["<b@x>"]


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_transfer_encodings(cte: str) -> None:
    msg = message("[PATCH] mm: enc", f"Text\n---\n{DIFF}")
    msg.set_content(f"Text\n---\n{DIFF}", cte=cte)
    patch = read_series(["-"], stdin=msg.as_bytes()).patches[0]
    assert patch.error is None
    assert [line.value for hunk in patch.files[0].patched for line in hunk if line.is_added] == [
        "\treturn 1; /* caf\u00e9 */\n"
    ]


def test_latin1_charset_and_crlf() -> None:
    body = f"Text\r\n---\r\n{DIFF}".replace("\n", "\r\n").replace("\r\r\n", "\r\n")
    raw = (
        b"From: =?iso-8859-1?q?J=F6rg?= <j@example.com>\r\nSubject: [PATCH] mm: latin1\r\n"
        b"Message-ID: <l@x>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    ) + body.encode("iso-8859-1")
    patch = read_series(["-"], stdin=raw).patches[0]
    assert patch.author == "J\u00f6rg <j@example.com>"
    assert patch.files[0].path == "mm/foo.c"
    added = [line.value for hunk in patch.files[0].patched for line in hunk if line.is_added]
    assert added == ["\treturn 1; /* caf\u00e9 */\n"]


def test_multipart_with_patch_attachment() -> None:
    msg = message("[PATCH] mm: attached", "See the attachment.")
    msg.add_attachment(DIFF.encode(), maintype="text", subtype="x-patch", filename="0001-foo.patch")
    patch = read_series(["-"], stdin=msg.as_bytes()).patches[0]
    assert patch.error is None and patch.files[0].path == "mm/foo.c"


def test_gzipped_mbox() -> None:
    data = gzip.compress(mbox(message("[PATCH] mm: gz", f"x\n---\n{DIFF}")))
    assert read_series(["-"], stdin=data).patches[0].files[0].path == "mm/foo.c"


def test_plain_git_diff() -> None:
    patch = read_series(["-"], stdin=DIFF.encode()).patches[0]
    assert patch.index == 1 and patch.files[0].path == "mm/foo.c"


def test_renames_new_deleted_binary_and_non_c_files_pass_through() -> None:
    diff = (
        "diff --git a/mm/old.c b/mm/new.c\nsimilarity index 100%\nrename from mm/old.c\nrename to mm/new.c\n"
        "diff --git a/mm/added.c b/mm/added.c\nnew file mode 100644\nindex 0000000..3333333\n"
        "--- /dev/null\n+++ b/mm/added.c\n@@ -0,0 +1 @@\n+int added;\n"
        "diff --git a/mm/gone.c b/mm/gone.c\ndeleted file mode 100644\nindex 4444444..0000000\n"
        "--- a/mm/gone.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-int gone;\n"
        "diff --git a/Documentation/x.png b/Documentation/x.png\nindex 5..6 100644\n"
        "Binary files a/Documentation/x.png and b/Documentation/x.png differ\n"
        "diff --git a/Documentation/mm/x.rst b/Documentation/mm/x.rst\nindex 7..8 100644\n"
        "--- a/Documentation/mm/x.rst\n+++ b/Documentation/mm/x.rst\n@@ -1 +1 @@\n-a\n+b\n"
    )
    files = read_series(["-"], stdin=diff.encode()).patches[0].files
    summary = [(f.path, f.old_path, f.new_path, f.is_binary, f.is_c) for f in files]
    assert summary == [
        ("mm/new.c", "mm/old.c", "mm/new.c", False, True),
        ("mm/added.c", None, "mm/added.c", False, True),
        ("mm/gone.c", "mm/gone.c", None, False, True),
        ("Documentation/x.png", "Documentation/x.png", "Documentation/x.png", True, False),
        (
            "Documentation/mm/x.rst",
            "Documentation/mm/x.rst",
            "Documentation/mm/x.rst",
            False,
            False,
        ),
    ]


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd"])
def test_paths_leaving_the_tree_are_refused_per_patch(path: str) -> None:
    diff = DIFF.replace("a/mm/foo.c", f"a/{path}").replace("b/mm/foo.c", f"b/{path}")
    patch = read_series(["-"], stdin=diff.encode()).patches[0]
    assert patch.error and "refusing diff path" in patch.error


@pytest.mark.parametrize(
    ("data", "message_part"),
    [
        (b"", "empty input"),
        (b"   \n\n", "empty input"),
        (b"hello world\n", "not a patch"),
        (b"\x1f\x8b\x08garbage", "corrupt gzip"),
    ],
)
def test_unreadable_inputs(data: bytes, message_part: str) -> None:
    with pytest.raises(InputError, match=message_part):
        read_series(["-"], stdin=data)


def test_missing_file_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_series([str(tmp_path / "nope.patch")])
    with pytest.raises(InputError, match="is a directory"):
        read_series([str(tmp_path)])


_MBOX_LINES = st.sampled_from(
    [b"From ", b"From abc Mon Sep 17 00:00:00 2001", b"", b">From x", b" From y", b"x\r", b"\r"]
)


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(st.sampled_from([b"", b" ", b"\t"]), max_size=3),
    body=st.lists(st.one_of(_MBOX_LINES, st.binary(max_size=8)), max_size=8),
    end=st.sampled_from([b"", b"\n", b"\n\n", b"\n\n\n"]),
)
def test_one_message_is_read_as_mailbox_reads_it(tmp_path_factory, before, body, end) -> None:
    """The one-message shortcut gives what mailbox.mbox gives, and declines
    every input holding a second `From ` line."""
    data = b"\n".join([*before, b"From 1234 Mon Sep 17 00:00:00 2001", *body]) + end
    path = tmp_path_factory.mktemp("mbox") / "m"
    path.write_bytes(data)
    box = mailbox.mbox(path, create=False)
    expected = [box.get_bytes(key) for key in box.iterkeys()]
    box.close()
    got = _only_message(data)
    if len(expected) == 1:
        assert got == expected[0]
    else:
        assert got is None
