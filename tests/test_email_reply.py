"""`--format email`: review replies in the list's conventions, read back with
the stdlib, b4's own reply parser, and the real `git send-email`."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import os
import re
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from b4 import LoreMessage
from b4.review._review import _extract_comments_from_quoted_reply, _resolve_comment_positions

from analyzer.engine import review
from analyzer.patches import read_series
from analyzer.registry import select_rules
from analyzer.reporters.email_reply import compose_replies, render_mbox
from tests.conftest import Tree, mmreview, require_program

REVIEWER = "Rhea Viewer <rhea@example.org>"
TRAILER_LIKE = re.compile(r"^\s*(\w\S+):\s+(\S.*)")


def flagged_series(tree: Tree) -> bytes:
    """v2 of a 3-patch series: 1/3 is clean, 2/3 and 3/3 break a lesson."""
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint nr_present = 0;")
    tree.commit("mm/demo: start renaming the counter")
    tree.edit(
        "mm/fault.c",
        "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
        "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    )
    tree.commit("mm/demo: treat a non-present PMD as empty")
    tree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    tree.commit("mm/demo: drop the uffd-wp re-check")
    return tree.format_patch(
        "--cover-letter",
        "-v2",
        "--base=HEAD~3",
        "--thread",
        "--to=linux-mm@kvack.org",
        "--cc=Andrew Morton <akpm@linux-foundation.org>",
        "--cc=Rhea Viewer <rhea@example.org>",
        "--cc=linux-mm@kvack.org",
        "-3",
    )


def originals(mbox_bytes: bytes) -> dict[str, EmailMessage]:
    messages = [
        email.message_from_bytes(b"From " + part, policy=email.policy.default)
        for part in mbox_bytes.split(b"\nFrom ")
    ]
    return {str(m["Subject"]).split("] ")[0] + "]": m for m in messages}


def read_mbox(path: Path) -> list[EmailMessage]:
    box = mailbox.mbox(
        path, factory=lambda f: email.message_from_binary_file(f, policy=email.policy.default)
    )
    try:
        return list(box)
    finally:
        box.close()


@pytest.fixture
def replies(minitree: Tree, tmp_path: Path) -> tuple[list[EmailMessage], list[str], dict]:
    mbox_bytes = flagged_series(minitree)
    commits = minitree.git("rev-list", "--reverse", "-3", "HEAD").split()
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    series = tmp_path / "series.mbox"
    series.write_bytes(mbox_bytes)
    out = tmp_path / "replies.mbox"
    result = mmreview(
        "check",
        str(series),
        "--tree",
        str(minitree.path),
        "-f",
        "email",
        "--from",
        REVIEWER,
        "-o",
        str(out),
    )
    assert result.returncode == 1 and result.stderr == b"", result.stderr
    findings = json.loads(
        mmreview("check", str(series), "--tree", str(minitree.path), "-f", "json").stdout
    )["findings"]
    by_patch = {f["patch"]["index"]: f for f in findings}
    return read_mbox(out), {"mbox": mbox_bytes, "commits": commits}, by_patch


def test_one_threaded_reply_per_flagged_patch(replies) -> None:
    messages, series, _ = replies
    orig = originals(series["mbox"])
    assert [m["Subject"] for m in messages] == [
        "Re: [PATCH v2 2/3] mm/demo: treat a non-present PMD as empty",
        "Re: [PATCH v2 3/3] mm/demo: drop the uffd-wp re-check",
    ]
    cover_id = orig["[PATCH v2 0/3]"]["Message-Id"]
    for reply, key in zip(messages, ["[PATCH v2 2/3]", "[PATCH v2 3/3]"], strict=True):
        patch = orig[key]
        assert reply["In-Reply-To"] == patch["Message-Id"]
        assert reply["References"].split() == [cover_id, patch["Message-Id"]]
        assert reply["From"] == REVIEWER
        assert reply["To"] == "Jane Dev <jane@example.com>"
        # The patch's To and Cc, once each, without the reviewer herself.
        assert reply["Cc"] == "linux-mm@kvack.org, Andrew Morton <akpm@linux-foundation.org>"
        assert reply["Date"].datetime is not None
        assert reply.get_content_type() == "text/plain"
        assert reply.get_content_charset() == "us-ascii"
    message_ids = [m["Message-ID"] for m in messages]
    assert len(set(message_ids)) == 2
    assert all(re.fullmatch(r"<[^<>@\s]+@example\.org>", i) for i in message_ids)


def body_of(message: EmailMessage) -> str:
    return message.get_content()


def test_comment_sits_under_its_line_in_a_trimmed_quote(replies) -> None:
    messages, _, _ = replies
    body = body_of(messages[0])
    above, _, signature = body.partition("\n-- \n")
    assert signature.startswith("mm-review ") and "PMD_PRESENT_AS_EMPTY" in signature
    assert "On Mon, 2 Nov 2026 10:00:00 +0000, Jane Dev <jane@example.com> wrote:" in above
    lines = above.splitlines()
    quoted = [line for line in lines if line.startswith(">")]
    assert quoted[:4] == [
        "> diff --git a/mm/fault.c b/mm/fault.c",
        "> --- a/mm/fault.c",
        "> +++ b/mm/fault.c",
        "> @@ -31,7 +31,7 @@ static bool demo_must_wait(struct demo_ctx *ctx, unsigned long address,",
    ]
    # Trimmed: the hunk ends at the commented line, nothing of the
    # unrelated first patch or the commit message is quoted.
    assert quoted[-1] == "> +\tif (!pmd_present(_pmd))"
    assert len(quoted) - 4 <= 6
    at = lines.index(quoted[-1])
    assert lines[at + 1] == ""
    comment = lines[at + 2]
    assert comment.startswith("pmd_none(_pmd) replaced by !pmd_present(_pmd)")
    prose = " ".join(lines[at + 2 :])
    assert "Shouldn't this test pmd_none()" in prose and prose.count("?") == 1
    assert 'See commit a365ac09d334 ("mm, userfaultfd, THP: avoid waiting when PMD under' in prose
    assert "https://lore.kernel.org/all/" in prose
    assert all(len(line) <= 100 for line in lines)

    # b4's own parser of inline review replies finds the comment at the
    # finding's line of the real diff.
    parsed = _extract_comments_from_quoted_reply(body)
    assert len(parsed) == 1 and parsed[0]["text"].startswith("pmd_none(_pmd) replaced")


def test_b4_places_every_comment_on_the_flagged_line(replies, minitree: Tree) -> None:
    messages, series, findings = replies
    for reply, index in zip(messages, [2, 3], strict=True):
        comments = _extract_comments_from_quoted_reply(body_of(reply))
        assert len(comments) == 1
        # Resolve against the real diff of that patch, as `b4 review` does.
        commit = series["commits"][index - 1]
        _resolve_comment_positions(minitree.git("diff", f"{commit}~1", commit), comments)
        assert comments[0]["path"] == f"b/{findings[index]['file']}"
        assert comments[0]["line"] == findings[index]["line"]


def test_no_trailer_like_line_above_the_signature(replies) -> None:
    messages, _, _ = replies
    for reply in messages:
        above = body_of(reply).split("\n-- \n", 1)[0]
        assert not [line for line in above.splitlines() if TRAILER_LIKE.match(line)]
        trailers, _ = LoreMessage.find_trailers(body_of(reply), followup=True)
        assert trailers == []


def test_trailer_like_wording_in_a_message_never_starts_a_line(minitree: Tree) -> None:
    mbox_bytes = flagged_series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    result = review(read_series(["-"], stdin=mbox_bytes), select_rules(), tree=None)
    assert result.findings
    # A message whose wrapping would put "Fixes: ..." and "Reviewed-by: ..."
    # at the start of a line.
    sneaky = (
        "x" * 60 + ' and Fixes: 0123456789ab ("mm: foo") ' + "y" * 62 + " Reviewed-by: A <a@b.c>"
    )
    doctored = result.replace(findings=[replace(f, message=sneaky) for f in result.findings])
    for reply in compose_replies(doctored, REVIEWER):
        body = reply.get_content()
        above = body.split("\n-- \n", 1)[0]
        assert "Fixes: 0123456789ab" in " ".join(above.split())
        assert not [line for line in above.splitlines() if TRAILER_LIKE.match(line)]
        assert LoreMessage.find_trailers(body, followup=True)[0] == []


def test_clean_patch_gets_no_reply(minitree: Tree, tmp_path: Path) -> None:
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint nr_present = 0;")
    minitree.commit("mm/demo: start renaming the counter")
    patch = minitree.format_patch("--thread", "-1")
    result = mmreview("check", "-", "-f", "email", "--from", REVIEWER, input=patch)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b""


def test_mbox_is_mboxrd_escaped() -> None:
    message = EmailMessage()
    message["Subject"] = "Re: x"
    message.set_content("From here on\n>From there\nnot From\n")
    data = render_mbox([message, message])
    assert data.count(b"\nFrom mm-review ") == 1 and data.startswith(b"From mm-review ")
    assert b"\n>From here on\n>>From there\nnot From\n" in data


def test_default_sender_comes_from_the_trees_git_config(
    minitree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analyzer.reporters.email_reply import DEFAULT_SENDER, default_sender

    monkeypatch.setenv("HOME", str(minitree.path.parent))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    assert default_sender(str(minitree.path)) == DEFAULT_SENDER
    minitree.git("config", "user.name", "Rhea Viewer")
    minitree.git("config", "user.email", "rhea@example.org")
    assert default_sender(str(minitree.path)) == REVIEWER


def test_git_send_email_sends_the_replies_threaded(replies, tmp_path: Path) -> None:
    require_program("git-send-email", "git-email")
    messages, _, _ = replies
    mbox = tmp_path / "out.mbox"
    mbox.write_bytes(render_mbox(messages))
    # A sendmail-compatible program that keeps what it is given.
    spool = tmp_path / "spool"
    spool.mkdir()
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f'#!/bin/sh\ncat > "{spool}/$(date +%s%N)"\n')
    sendmail.chmod(0o755)
    env = {**os.environ, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    # send-email sends one message per file: split the mbox first, as the
    # README says.
    split = tmp_path / "replies"
    split.mkdir()
    subprocess.run(
        ["git", "mailsplit", "--mboxrd", f"-o{split}", str(mbox)],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [
            "git",
            "send-email",
            "--confirm=never",
            "--no-validate",
            f"--smtp-server={sendmail}",
            "--suppress-cc=all",
            f"--from={REVIEWER}",
            str(split),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    sent = sorted(spool.iterdir())
    assert len(sent) == 2
    for path, reply in zip(sent, messages, strict=True):
        got = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert got["Subject"] == reply["Subject"]
        assert got["In-Reply-To"] == reply["In-Reply-To"]
        assert got["References"].split() == reply["References"].split()
        assert got["Message-ID"] == reply["Message-ID"]
        assert got.get_content().rstrip("\n") == reply.get_content().rstrip("\n")


def test_reply_to_and_re_subject_are_honoured(minitree: Tree) -> None:
    mbox_bytes = flagged_series(minitree)
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    series = read_series(["-"], stdin=mbox_bytes)
    patch = series.patches[1]
    assert patch.message is not None
    patch.message["Reply-To"] = "Jane at home <jane@home.example>"
    result = review(series, select_rules())
    now = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    replies = compose_replies(result, "mm-review <mm-review@localhost>", now=now)
    assert replies[0]["To"] == "Jane at home <jane@home.example>"
    assert replies[0]["Date"] == "Tue, 03 Nov 2026 09:00:00 +0000"
    # Replying to a reply does not stack "Re:".
    del patch.message["Subject"]
    patch.message["Subject"] = "RE: [PATCH v2 2/3] mm/demo: treat a non-present PMD as empty"
    again = compose_replies(result, "mm-review <mm-review@localhost>", now=now)
    assert again[0]["Subject"] == "RE: [PATCH v2 2/3] mm/demo: treat a non-present PMD as empty"


def test_commit_message_finding_is_quoted_from_the_message(minitree: Tree) -> None:
    minitree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    minitree.commit(
        "mm/demo: drop the uffd-wp re-check",
        "The caller checked already.\n\nFixes: e1e267c79 (khugepaged: skip collapse)",
    )
    patch_bytes = minitree.format_patch("--thread", "-1")
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    result = review(read_series(["-"], stdin=patch_bytes), select_rules(), tree=None)
    [code] = [f for f in result.findings if f.rule == "COLLAPSE_WITHOUT_UFFD_CHECK"]
    # A finding on the commit message: path COMMIT_MSG, line 5 = the Fixes: line.
    on_message = replace(code, path="COMMIT_MSG", line=5, message="Fixes: tag lacks a subject")
    [reply] = compose_replies(result.replace(findings=[on_message, code]), REVIEWER)
    body = reply.get_content()
    lines = body.splitlines()
    at = lines.index("> Fixes: e1e267c79 (khugepaged: skip collapse)")
    assert lines[at - 2 : at] == ["> The caller checked already.", ">"]
    assert lines[at + 1] == "" and "tag lacks a subject" in lines[at + 2]
    assert lines.index("> diff --git a/mm/khugepaged.c b/mm/khugepaged.c") > at
    assert not [line for line in body.split("\n-- \n")[0].splitlines() if TRAILER_LIKE.match(line)]
