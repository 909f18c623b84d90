"""The bot's pure parts: series assembly from threading headers, the header
inspection of untrusted mail, the configuration, and what a review plans to
send.  (The archive, SMTP and crash behaviour are in tests/test_bot*.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer.bot.config import ConfigError, load
from analyzer.bot.delivery import plan
from analyzer.bot.mail import Rejected, inspect
from analyzer.bot.threads import PatchMail, assemble
from analyzer.engine import review
from analyzer.patches import Subject, read_series
from analyzer.registry import select_rules
from analyzer.rule import Severity
from tests.conftest import Tree


def mail(
    msgid: str,
    subject: str,
    reply_to: str | None = None,
    refs: tuple[str, ...] = (),
    author: str = "jane@example.com",
    seen: float = 0.0,
    series_id: int | None = None,
) -> PatchMail:
    parsed = Subject.parse(subject)
    return PatchMail(
        msgid=msgid,
        counter=parsed.counter if parsed.counter is not None else 1,
        total=parsed.total or 1,
        version=parsed.version,
        flags=",".join(p for p in ("RFC", "RESEND") if p in parsed.prefixes),
        author=author,
        title=parsed.text,
        in_reply_to=reply_to,
        references=refs or ((reply_to,) if reply_to else ()),
        seen_at=seen,
        series_id=series_id,
    )


def groups(mails: list[PatchMail]) -> list[list[str]]:
    return [[m.msgid for m in c.mails] for c in assemble(mails)]


def sendemail(prefix: str, total: int, tag: str, cover: bool = True, **kw) -> list[PatchMail]:
    """What `git send-email --thread [--no-chain-reply-to]` posts."""
    first = f"<{tag}-0>" if cover else f"<{tag}-1>"
    out = [mail(first, f"[{prefix} 0/{total}] cover", **kw)] if cover else []
    for n in range(1, total + 1):
        if not cover and n == 1:
            out.append(mail(first, f"[{prefix} 1/{total}] one", **kw))
        else:
            out.append(mail(f"<{tag}-{n}>", f"[{prefix} {n}/{total}] p{n}", first, **kw))
    return out


def test_send_email_threads_become_series_in_any_order() -> None:
    v1 = sendemail("PATCH", 3, "a")
    nocover = sendemail("PATCH", 2, "b", cover=False)
    mixed = [v1[3], nocover[1], v1[1], nocover[0], v1[2], v1[0]]
    assert groups(mixed) == [["<a-0>", "<a-1>", "<a-2>", "<a-3>"], ["<b-1>", "<b-2>"]]


def test_chain_reply_to_is_one_series() -> None:
    chained = [mail("<c-0>", "[PATCH 0/3] cover")]
    for n in range(1, 4):
        parents = tuple(f"<c-{k}>" for k in range(n))
        chained.append(mail(f"<c-{n}>", f"[PATCH {n}/3] p", parents[-1], parents))
    assert groups(chained) == [["<c-0>", "<c-1>", "<c-2>", "<c-3>"]]


def test_patches_whose_cover_has_not_arrived_stay_together() -> None:
    siblings = sendemail("PATCH", 3, "d")[1:]
    candidate = assemble(siblings)
    assert [[m.msgid for m in c.mails] for c in candidate] == [["<d-1>", "<d-2>", "<d-3>"]]
    # Complete, but the patches reply to a message not seen yet (the cover,
    # with base-commit:): wait for it, until the grace period is over.
    assert candidate[0].readiness(10, 60, known=lambda m: False) is None
    assert candidate[0].readiness(10, 60, known=lambda m: True) == "complete"
    assert candidate[0].readiness(61, 60, known=lambda m: False) == "grace period over"


def test_reroll_in_reply_to_old_cover_is_a_new_series() -> None:
    v1 = sendemail("PATCH", 2, "e")
    v2_cover = mail("<f-0>", "[PATCH v2 0/2] cover", "<e-0>")
    v2 = [v2_cover] + [
        mail(f"<f-{n}>", f"[PATCH v2 {n}/2] p", "<f-0>", ("<e-0>", "<f-0>")) for n in (1, 2)
    ]
    assert groups(v1 + v2) == [["<e-0>", "<e-1>", "<e-2>"], ["<f-0>", "<f-1>", "<f-2>"]]
    assert Subject.parse("[PATCHv2 1/2] x").version == 2


def test_resend_rfc_and_other_authors_are_apart() -> None:
    base = sendemail("PATCH", 2, "g")
    resend = [
        mail(m.msgid.replace("g", "h"), f"[PATCH RESEND {m.counter}/2] p", "<g-0>") for m in base
    ]
    rfc = mail("<i-1>", "[RFC PATCH 1/2] p", "<g-0>")
    other = mail("<j-1>", "[PATCH 1/2] p", "<g-0>", author="bob@example.com")
    found = groups([*base, *resend, rfc, other])
    assert ["<g-0>", "<g-1>", "<g-2>"] in found
    assert ["<i-1>"] in found and ["<j-1>"] in found
    assert len(found) == 4


def test_unnumbered_patches_in_one_thread_stay_single() -> None:
    report = "<bug-report@example.com>"
    one = mail("<k-1>", "[PATCH] mm: fix a", report)
    two = mail("<k-2>", "[PATCH] mm: fix b", report)
    three = mail("<k-3>", "[PATCH] mm: fix a (again)", "<k-1>")
    assert sorted(groups([one, two, three])) == [["<k-1>"], ["<k-2>"], ["<k-3>"]]
    assert all(c.readiness(0, 60, lambda m: False) == "complete" for c in assemble([one, two]))


def test_gaps_duplicates_and_late_mail() -> None:
    series = sendemail("PATCH", 3, "l")
    dup = mail("<l-2-again>", "[PATCH 2/3] p2", "<l-0>", seen=5)
    candidate = assemble([series[0], series[1], series[3]])[0]
    assert candidate.missing == [2]
    assert candidate.readiness(59, 60, lambda m: True) is None
    assert candidate.readiness(60, 60, lambda m: True) == "grace period over"
    both = assemble([*series, dup])[0]
    assert [m.msgid for m in both.duplicates] == ["<l-2-again>"]
    # Its series already recorded: late mail is attached to it, not reviewed alone.
    recorded = [
        mail(m.msgid, f"[PATCH {m.counter}/3] p", m.in_reply_to, series_id=7)
        for m in (series[0], series[1], series[3])
    ]
    late = assemble([*recorded, series[2]])
    assert [(c.existing_series, [m.msgid for m in c.mails]) for c in late] == [(7, ["<l-2>"])]


HEADERS = (
    b"From: Jane Dev <jane@example.com>\nTo: linux-mm@kvack.org\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0000\n"
)


def test_inspect_reads_threading_headers_and_kind() -> None:
    from analyzer.bot.config import LimitsConfig

    limits = LimitsConfig()
    raw = HEADERS + (
        b"Message-ID: <p2@x>\nIn-Reply-To: <p0@x>\nReferences: <v1@x>\n <p0@x>\n"
        b"Subject: =?utf-8?q?=5BPATCH_v2_2/3=5D_mm=3A_caf=C3=A9?=\n\nbody\n"
    )
    info = inspect(raw, limits)
    assert (info.msgid, info.in_reply_to, info.references) == (
        "<p2@x>",
        "<p0@x>",
        ["<v1@x>", "<p0@x>"],
    )
    assert info.raw_subject == "[PATCH v2 2/3] mm: café" and info.kind == "patch"
    assert (info.subject.counter, info.subject.total, info.subject.version) == (2, 3, 2)
    assert (
        inspect(HEADERS + b"Message-ID: <r@x>\nSubject: Re: [PATCH] x\n\n", limits).kind == "reply"
    )
    assert (
        inspect(HEADERS + b"Message-ID: <o@x>\nSubject: mm: question\n\n", limits).kind == "other"
    )
    assert (
        inspect(HEADERS + b"Message-ID: <c@x>\nSubject: [PATCH 0/2] x\n\n", limits).kind == "cover"
    )
    # What public-inbox does to a reused Message-ID: it adds its own.
    reused = inspect(HEADERS + b"Message-ID: <a@x>\nSubject: x\nMessage-ID: <b@z>\n\n", limits)
    assert (reused.msgid, reused.aliases) == ("<a@x>", ["<b@z>"])
    latin = inspect(HEADERS + b"Message-ID: <l@x>\nSubject: [PATCH] caf\xe9\n\n", limits)
    assert latin.raw_subject == "[PATCH] caf\ufffd" and latin.kind == "patch"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (HEADERS + b"Subject: [PATCH] x\n\n", "no usable Message-ID"),
        (HEADERS + b"Message-ID: <a@x>\n\n" + b"x" * 2000, "oversized: 2"),
        (
            HEADERS
            + b"Message-ID: <a@x>\nContent-Type: multipart/mixed; boundary=b\n\n"
            + b"--b\nContent-Type: multipart/mixed; boundary=c\n\n" * 5,
            "MIME bomb: 6 multipart containers",
        ),
        (
            HEADERS
            + b"Message-ID: <a@x>\nContent-Type: multipart/mixed; boundary=b\n\n"
            + b"--b\nContent-Type: text/plain\n\nx\n" * 30
            + b"--b--\n",
            "MIME bomb: more than 16 parts",
        ),
    ],
)
def test_inspect_rejects_with_a_reason(raw: bytes, reason: str) -> None:
    from analyzer.bot.config import LimitsConfig

    with pytest.raises(Rejected, match=reason):
        inspect(raw, LimitsConfig(max_message_bytes=2000, max_mime_parts=4))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text)
    return path


MINIMAL = '[tree]\npath = "linux"\n[[archive]]\npath = "/srv/lore/linux-mm"\n'


def test_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL))
    assert config.tree.path == tmp_path / "linux"
    assert config.state == tmp_path / "mmreview-bot.sqlite3"
    assert config.archives[0].name == "linux-mm" and config.archives[0].start == "beginning"
    assert config.policy.recipients == "author"
    assert config.policy.min_severity is Severity.WARNING
    assert config.patchwork is None
    assert config.smtp.user_env == "MMREVIEW_SMTP_USER"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[policy]\nrecipient = 'thread'\n", "[policy] recipient: unknown key"),
        ("[policy]\nrecipients = 'everyone'\n", "'everyone' is not one of author, thread"),
        ("[smtp]\nport = '25'\n", "[smtp] port: expected an integer"),
        ("[smtp]\nssl = true\nstarttls = true\n", "ssl and starttls exclude each other"),
        ("[patchwork]\nurl = 'http://pw'\n", "[patchwork] project: missing"),
        ("[policy]\nmin_severity = 'fatal'\n", "is not one of error, warning, check"),
        ("[limits]\nmax_message_bytes = -1\n", "must not be negative"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(write(tmp_path, MINIMAL + extra))


def test_config_needs_an_archive_and_valid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\[\\[archive\\]\\] to follow"):
        load(write(tmp_path, '[tree]\npath = "x"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[tree\n"))


def test_plan_is_deterministic_and_follows_the_policy(minitree: Tree, tmp_path: Path) -> None:
    minitree.edit("mm/fault.c", "\tif (pmd_none(_pmd))", "\tif (!pmd_present(_pmd))")
    minitree.commit("mm/demo: treat a non-present PMD as empty")
    path = tmp_path / "p.patch"
    path.write_bytes(minitree.format_patch("-1", "--to=linux-mm@kvack.org", "--cc=rev@example.org"))
    result = review(read_series([str(path)]), select_rules(), tree=None)
    assert [f.severity for f in result.findings] == [Severity.WARNING]

    from analyzer.bot.delivery import list_composer

    config = load(write(tmp_path, MINIMAL + "[policy]\nfrom = 'bot <bot@bot.example>'\n"))
    first = plan(result, "<series>", config, list_composer(config))
    again = plan(result, "<series>", config, list_composer(config))
    assert [o.message_id for o in first] == [o.message_id for o in again]
    (reply,) = first
    assert reply.message_id and reply.message_id.endswith("@bot.example>")
    assert reply.recipients == ["jane@example.com"]  # author only by default
    assert b"\nCc:" not in reply.payload
    assert (
        plan(result, "<another series>", config, list_composer(config))[0].message_id
        != reply.message_id
    )

    thread = load(write(tmp_path, MINIMAL + "[policy]\nrecipients = 'thread'\ncc = ['v@x.org']\n"))
    (to_all,) = plan(result, "<series>", thread, list_composer(thread))
    assert to_all.recipients == [
        "jane@example.com",
        "linux-mm@kvack.org",
        "rev@example.org",
        "v@x.org",
    ]

    errors_only = load(write(tmp_path, MINIMAL + "[policy]\nmin_severity = 'error'\n"))
    assert plan(result, "<series>", errors_only, list_composer(errors_only)) == []
