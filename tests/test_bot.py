"""The CI bot end to end: a public-inbox archive made by the real
public-inbox tools, a real SMTP server (aiosmtpd) on 127.0.0.1, series made
with real `git format-patch` against the minitree, and `mmreview bot` run as
a subprocess.

The helpers here (Inbox, SmtpSink, FakePatchwork, BotSetup) are shared with
the other tests/test_bot_*.py files.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import ROOT, Tree, build_minitree, require_program

LIST = "linux-mm@kvack.org"
PW_TOKEN = "s3cret-patchwork-token"
SMTP_PASSWORD = "s3cret-smtp-password"
SWAP = (
    "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
)
UFFD = ("vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")


# -- a public-inbox v2 archive, made and fed by the real tools ---------------


class Inbox:
    def __init__(self, root: Path, skip_epoch: int | None = None) -> None:
        require_program("public-inbox-init", "public-inbox")
        self.dir = root / "inbox"
        self._environment(root / "pi-home")
        options = ["--skip-epoch", str(skip_epoch)] if skip_epoch else []
        self._run(
            [
                "public-inbox-init",
                "-V2",
                "-L",
                "basic",
                *options,
                "linux-mm",
                str(self.dir),
                "http://lore.example/linux-mm",
                LIST,
            ]
        )
        self._run(
            ["git", "config", "-f", self.env["PI_CONFIG"], "publicinboxmda.spamcheck", "none"]
        )

    def _environment(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "HOME": str(home),
            "PI_CONFIG": str(home / "config"),
            "PI_EMERGENCY": str(home / "emergency"),
            "ORIGINAL_RECIPIENT": LIST,
        }

    def _run(self, args: list[str], input: bytes | None = None) -> None:
        out = subprocess.run(args, env=self.env, input=input, capture_output=True)
        assert out.returncode == 0, f"{args[0]}: {out.stderr.decode()}"

    def deliver(self, *messages: bytes, precheck: bool = True) -> None:
        """What the list's MTA does: pipe each message to public-inbox-mda."""
        for message in messages:
            self._run(["public-inbox-mda", *([] if precheck else ["--no-precheck"])], message)

    def copy(self, root: Path) -> Inbox:
        """The same archive under `root`, registered in its own config."""
        clone = Inbox.__new__(Inbox)
        clone.dir = root / "inbox"
        shutil.copytree(self.dir, clone.dir, symlinks=True)
        clone._environment(root / "pi-home")
        config = clone.env["PI_CONFIG"]
        for key, value in (
            ("publicinbox.linux-mm.inboxdir", str(clone.dir)),
            ("publicinbox.linux-mm.address", LIST),
            ("publicinbox.linux-mm.url", "http://lore.example/linux-mm"),
            ("publicinbox.linux-mm.indexlevel", "basic"),
            ("publicinboxmda.spamcheck", "none"),
        ):
            clone._run(["git", "config", "-f", config, key, value])
        return clone


# -- series, made with git format-patch against the minitree -----------------


@dataclass
class Series:
    name: str
    messages: list[bytes]
    flagged: list[int] = field(default_factory=list)  # patch numbers a reply is due for

    @property
    def msgids(self) -> list[str]:
        return [_msgid(m) for m in self.messages]

    def patch_msgid(self, number: int) -> str:
        for message in self.messages:
            subject = str(email.message_from_bytes(message)["Subject"])
            if re.search(rf"\b{number}/\d+\]", subject) or (
                number == 1 and "/" not in subject.split("]")[0]
            ):
                return _msgid(message)
        raise KeyError(number)

    @property
    def patch_msgids(self) -> list[str]:
        return [
            _msgid(m)
            for m in self.messages
            if not re.search(r" 0+/\d+\]", str(email.message_from_bytes(m)["Subject"]))
        ]


def _msgid(message: bytes) -> str:
    return str(email.message_from_bytes(message)["Message-ID"]).strip()


# A rename, then the PMD swap, then the dropped uffd-wp re-check: 2 and 3 flagged.
SWAP_SERIES = [
    (
        "mm/fault.c",
        "\tint present = 0;",
        "\tint nr_present = 0;",
        "mm/demo: start renaming the counter",
    ),
    ("mm/fault.c", *SWAP, "mm/demo: treat a non-present PMD as empty"),
    ("mm/khugepaged.c", *UFFD, "mm/demo: drop the uffd-wp re-check"),
]


def make_series(
    tree: Tree,
    name: str,
    edits: list[tuple[str, str, str, str]],
    *options: str,
    flagged: list[int] | None = None,
) -> Series:
    """Commits on a branch from master (one per edit: path, old, new,
    subject), formatted as send-email would post them."""
    tree.git("checkout", "-q", "-b", name, "master")
    for path, old, new, subject in edits:
        tree.edit(path, old, new)
        tree.commit(subject, f"Part of {name}.")
    out = tree.path.parent / f"out-{name}"
    tree.git(
        "format-patch",
        "-q",
        "--thread",
        f"--to={LIST}",
        "--cc=Reviewer <rev@example.org>",
        "--base=master",
        "-o",
        str(out),
        *options,
        f"-{len(edits)}",
    )
    tree.git("checkout", "-q", "master")
    messages = []
    for file in sorted(out.iterdir()):
        # format-patch names a cover letter after the current second only;
        # series formatted within one second would share its Message-ID.
        text = file.read_text().replace("<cover.", f"<cover.{name}.")
        if "*** SUBJECT HERE ***" in text:
            text = text.replace("*** SUBJECT HERE ***", f"{name}: a demo series")
            text = text.replace("*** BLURB HERE ***", "A series made for mm-review's bot tests.")
        messages.append(text.encode())
    return Series(name, messages, flagged or [])


def standard_series(tree: Tree) -> list[Series]:
    """Three series: one with findings in two of its three patches (v2, cover
    letter), one clean single patch, one without cover letter whose second
    patch has a finding."""
    return [
        make_series(
            tree,
            "demo-swap",
            SWAP_SERIES,
            "--cover-letter",
            "-v2",
            flagged=[2, 3],
        ),
        make_series(
            tree,
            "demo-clean",
            [
                (
                    "mm/fault.c",
                    " * A small, kernel-style fault path",
                    " * A small kernel-style fault path",
                    "mm/demo: comment wording",
                )
            ],
        ),
        make_series(
            tree,
            "demo-nocover",
            [
                (
                    "mm/khugepaged.c",
                    "Kernel-style collapse paths",
                    "Kernel-style collapse code",
                    "mm/demo: khugepaged comment",
                ),
                ("mm/khugepaged.c", *UFFD, "mm/demo: retract without the uffd-wp re-check"),
            ],
            flagged=[2],
        ),
    ]


def plain_mail(subject: str, msgid: str, in_reply_to: str | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = "Rev Iewer <rev@example.org>"
    message["To"] = LIST
    message["Subject"] = subject
    message["Date"] = "Mon, 02 Nov 2026 12:00:00 +0000"
    message["Message-ID"] = msgid
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content("Looks plausible, but did you test it with THP migration?\n")
    return message.as_bytes()


# -- a real SMTP server on 127.0.0.1 -------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpSink:
    """aiosmtpd on 127.0.0.1, keeping what it accepts.  With `inbox`, mail
    to the list is also delivered to the archive, as the list would."""

    def __init__(
        self,
        port: int | None = None,
        inbox: Inbox | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        pytest.importorskip("aiosmtpd")
        self.port = port or free_port()
        self.inbox = inbox
        self.tls = tls  # (certificate, key): STARTTLS required, login only after it
        self.received: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self._lock = threading.Lock()
        self.controller = None

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        content = envelope.original_content or envelope.content
        if self.inbox is not None and LIST in envelope.rcpt_tos:
            self.inbox.deliver(content)
        with self._lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), content))
        return "250 OK"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == b"bot" and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        options: dict = {"auth_require_tls": False}
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            options = {"tls_context": context, "require_starttls": True}
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            **options,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        with self._lock:
            raw = [content for _, _, content in self.received]
        return [email.message_from_bytes(r, policy=email.policy.default) for r in raw]

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"SMTP sink got {len(self.received)} messages, expected {count}")


# -- a fake patchwork: the two REST endpoints the bot uses ---------------------


class FakePatchwork:
    """GET /api/1.3/patches/?project=&msgid= and GET/POST
    /api/1.3/patches/{id}/checks/ -- what a real Patchwork 3.x answers, for
    the patches it was told about.  (A real Patchwork needs Django and a
    database server.)"""

    def __init__(self, msgids: list[str]) -> None:
        self.ids = {m.strip("<>"): n for n, m in enumerate(msgids, 100)}
        self.checks: dict[int, list[dict]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next = 0
        self.bad_auth = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, code: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                fake.requests.append((method, self.path))
                if fake.fail_next > 0:
                    fake.fail_next -= 1
                    self._reply(503, {"detail": "maintenance"})
                    return
                if url.path == "/api/1.3/patches/" and method == "GET":
                    query = parse_qs(url.query)
                    assert query["project"] == ["linux-mm"]
                    msgid = query["msgid"][0]
                    found = (
                        [{"id": fake.ids[msgid], "msgid": f"<{msgid}>"}]
                        if msgid in fake.ids
                        else []
                    )
                    self._reply(200, found)
                    return
                match = re.fullmatch(r"/api/1\.3/patches/(\d+)/checks/", url.path)
                if not match or int(match.group(1)) not in fake.ids.values():
                    self._reply(404, {"detail": "Not found."})
                    return
                patch = int(match.group(1))
                if method == "GET":
                    context = parse_qs(url.query).get("context", [None])[0]
                    self._reply(
                        200,
                        [c for c in fake.checks.get(patch, []) if context in (None, c["context"])],
                    )
                    return
                if self.headers.get("Authorization") != f"Token {PW_TOKEN}":
                    fake.bad_auth += 1
                    self._reply(403, {"detail": "You do not have permission."})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if (
                    body.get("state") not in ("pending", "success", "warning", "fail")
                    or not re.fullmatch(r"[-a-zA-Z0-9_]{1,255}", body.get("context") or "")
                    or len(body.get("target_url") or "") > 200
                ):
                    self._reply(400, {"detail": "invalid"})
                    return
                fake.checks.setdefault(patch, []).append(body)
                self._reply(201, {"id": sum(len(c) for c in fake.checks.values()), **body})

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def states(self) -> dict[str, list[str]]:
        by_id = {n: m for m, n in self.ids.items()}
        return {f"<{by_id[p]}>": [c["state"] for c in checks] for p, checks in self.checks.items()}


# -- the bot, configured and run ----------------------------------------------


class BotSetup:
    def __init__(self, root: Path, inbox: Inbox, tree: Tree, **settings: object) -> None:
        self.root = root
        self.inbox = inbox
        self.tree = tree
        self.config = root / "bot.toml"
        self.state = root / "state" / "bot.sqlite3"
        self.outbox = root / "outbox"
        self.settings = settings
        self.write()

    def write(self, **changes: object) -> None:
        self.settings.update(changes)
        s = self.settings
        lines = [
            f'state = "{self.state}"',
            f'outbox = "{self.outbox}"',
            "[tree]",
            f'path = "{self.tree.path}"',
            'base = "master"',
            *s.get("archives", [f'[[archive]]\npath = "{self.inbox.dir}"\nlist = "{LIST}"']),
            "[smtp]",
            f"port = {s.get('smtp_port', 25)}",
            'user_env = "BOT_SMTP_USER"',
            'password_env = "BOT_SMTP_PASSWORD"',
            "timeout = 5",
            *(["starttls = true"] if s.get("starttls") else []),
            *([f'ca_file = "{s["ca_file"]}"'] if s.get("ca_file") else []),
            "[policy]",
            'from = "mm-review bot <mm-review@bot.example>"',
            f'recipients = "{s.get("recipients", "author")}"',
            f"grace_minutes = {s.get('grace_minutes', 0)}",
            f"max_replies_per_run = {s.get('max_replies', 20)}",
            "[retry]",
            f"base_seconds = {s.get('retry_base', 0.2)}",
            "max_seconds = 1",
            f"confirm_minutes = {s.get('confirm_minutes', 10)}",
        ]
        if "patchwork" in s:
            lines += [
                "[patchwork]",
                f'url = "{s["patchwork"]}"',
                'project = "linux-mm"',
                'target_url = "https://lore.example/r/{message_id}"',
            ]
        if "limits" in s:
            lines += ["[limits]", *s["limits"]]  # type: ignore[misc]
        self.config.write_text("\n".join(lines) + "\n")

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
        return subprocess.run(
            [sys.executable, "-m", "analyzer.cli", "bot", *args, "--config", str(self.config)],
            cwd=ROOT,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MMREVIEW_BOT", "BOT_"))}
        env.update(
            NO_COLOR="1",
            PYTHONPATH=str(ROOT),
            BOT_SMTP_USER="bot",
            BOT_SMTP_PASSWORD=SMTP_PASSWORD,
            MMREVIEW_PATCHWORK_TOKEN=PW_TOKEN,
        )
        env.update(extra or {})
        return env

    def once(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = self.run("run", "--once", *args, env=env)
        assert result.returncode == 0, result.stderr
        return result.stderr

    def status(self) -> str:
        result = self.run("status")
        assert result.returncode == 0, result.stderr
        return result.stdout


def replies_by_target(sink: SmtpSink) -> dict[str, list[str]]:
    """In-Reply-To -> the Message-IDs of the replies to it."""
    found: dict[str, list[str]] = {}
    for message in sink.messages:
        found.setdefault(str(message["In-Reply-To"]), []).append(str(message["Message-ID"]))
    return found


def expected_targets(series: list[Series]) -> set[str]:
    return {s.patch_msgid(n) for s in series for n in s.flagged}


# -- fixtures ----------------------------------------------------------------------


_TEMPLATE: list[tuple[Path, Inbox, list[Series]]] = []


@pytest.fixture(scope="session")
def archive_template(tmp_path_factory: pytest.TempPathFactory):
    """The standard series, a review reply and an unrelated mail, delivered
    once to a real public-inbox archive; tests work on copies.  (Built once
    per session even though each tests/test_bot_*.py imports the fixture.)"""
    if not _TEMPLATE:
        _TEMPLATE.append(_build_template(tmp_path_factory.mktemp("bot-template")))
    return _TEMPLATE[0]


def _build_template(root: Path) -> tuple[Path, Inbox, list[Series]]:
    tree = build_minitree(root)
    series = standard_series(tree)
    inbox = Inbox(root)
    swap = series[0]
    inbox.deliver(
        *swap.messages,
        plain_mail(
            "Re: [PATCH v2 2/3] mm/demo: treat a non-present PMD as empty",
            "<reply-1@example.org>",
            swap.patch_msgid(2),
        ),
        plain_mail("mm: a question about THP and migration", "<question-1@example.org>"),
        *series[1].messages,
        *series[2].messages,
    )
    return root, inbox, series


@pytest.fixture
def world(tmp_path: Path, archive_template):
    """A private copy of the archive and the tree, and the bot set up on them."""
    root, inbox, series = archive_template
    shutil.copytree(root / "linux", tmp_path / "linux", symlinks=True)
    tree = Tree(tmp_path / "linux")
    copy = inbox.copy(tmp_path)
    sink = SmtpSink().start()
    bot = BotSetup(tmp_path, copy, tree, smtp_port=sink.port)
    yield bot, sink, series
    sink.stop()


def tree_fingerprint(tree: Tree) -> tuple[str, str, str, bytes]:
    git_dir = tree.path / ".git"
    return (
        tree.git("rev-parse", "HEAD"),
        tree.git("status", "--porcelain", "--ignored"),
        tree.git("for-each-ref"),
        (git_dir / "index").read_bytes(),
    )


# -- tests -------------------------------------------------------------------------


def test_reviews_each_series_and_replies_once(world) -> None:
    bot, sink, series = world
    patchwork = FakePatchwork([m for s in series for m in s.patch_msgids])
    bot.write(patchwork=patchwork.url)
    before = tree_fingerprint(bot.tree)
    try:
        log = bot.once()
        assert replies_by_target(sink).keys() == expected_targets(series)
        assert all(len(ids) == 1 for ids in replies_by_target(sink).values())
        for message in sink.messages:
            # Author only (the default policy): no Cc, To is the patch author.
            assert message["To"] == "Jane Dev <jane@example.com>"
            assert message["Cc"] is None
            assert message["From"] == "mm-review bot <mm-review@bot.example>"
            assert str(message["Subject"]).startswith("Re: [PATCH")
            assert re.fullmatch(r"<mmreview-[0-9a-f]{24}@bot\.example>", message["Message-ID"])
            assert str(message["References"]).endswith(str(message["In-Reply-To"]))
        bodies = {str(m["In-Reply-To"]): m.get_content() for m in sink.messages}
        swap, clean, nocover = series
        assert "PMD_PRESENT_AS_EMPTY" in bodies[swap.patch_msgid(2)]
        assert "COLLAPSE_WITHOUT_UFFD_CHECK" in bodies[swap.patch_msgid(3)]
        assert "COLLAPSE_WITHOUT_UFFD_CHECK" in bodies[nocover.patch_msgid(2)]
        # SMTP login came from the environment and is never logged.
        assert sink.logins == [(b"bot", SMTP_PASSWORD.encode())]
        assert SMTP_PASSWORD not in log and PW_TOKEN not in log
        # One patchwork check per patch, with the token from the environment.
        assert patchwork.states() == {
            swap.patch_msgid(1): ["success"],
            swap.patch_msgid(2): ["warning"],
            swap.patch_msgid(3): ["fail"],
            clean.patch_msgid(1): ["success"],
            nocover.patch_msgid(1): ["success"],
            nocover.patch_msgid(2): ["fail"],
        }
        check = patchwork.checks[patchwork.ids[swap.patch_msgid(2).strip("<>")]][0]
        reply = next(m for m in sink.messages if m["In-Reply-To"] == swap.patch_msgid(2))
        assert check["context"] == "mm-review"
        assert check["target_url"] == f"https://lore.example/r/{reply['Message-ID'].strip('<>')}"
        assert "PMD_PRESENT_AS_EMPTY" in check["description"]
        # Replies and other mail are ignored; the log says what happened.
        assert "event=series_reviewed" in log and "<reply-1@example.org>" not in log
        status = bot.status()
        assert "series: 3 reviewed" in status
        assert "outbox: 9 sent" in status
        assert "messages: 1 cover, 1 other, 6 patch, 1 reply" in status

        # A second run sends nothing again.
        bot.once()
        assert len(sink.received) == 3
        assert sum(len(c) for c in patchwork.checks.values()) == 6
        assert tree_fingerprint(bot.tree) == before
    finally:
        patchwork.stop()


def test_a_new_version_is_a_new_series_linked_to_the_old(world) -> None:
    bot, sink, series = world
    bot.once()
    assert len(sink.received) == 3
    # v3 of the first series: reworded commits, posted in reply to the v2
    # cover letter as `git send-email --in-reply-to` does.
    swap = series[0]
    v3 = make_series(
        bot.tree,
        "demo-swap-v3",
        SWAP_SERIES,
        "--cover-letter",
        "-v3",
        f"--in-reply-to={swap.msgids[0]}",
        flagged=[2, 3],
    )
    v3.messages = [m.replace(b"demo-swap-v3: a demo", b"demo-swap: a demo") for m in v3.messages]
    bot.inbox.deliver(*v3.messages)
    log = bot.once()
    assert "previous=1" in log
    assert {t for t in replies_by_target(sink) if t in v3.msgids} == expected_targets([v3])
    status = bot.status()
    assert "v3 demo-swap: a demo series (follows #1)" in status
    assert "series: 4 reviewed" in status


def test_incomplete_series_waits_for_grace_then_notes_the_gap(world) -> None:
    bot, sink, _ = world
    bot.write(grace_minutes=0.03)  # 1.8 s
    bot.once()  # the standard series; they are complete, no grace needed
    assert len(sink.received) == 3
    gappy = make_series(
        bot.tree,
        "demo-gap",
        [
            ("mm/fault.c", "\tint present = 0;", "\tint nr_present = 0;", "mm/demo: one"),
            ("mm/fault.c", *SWAP, "mm/demo: two"),
            ("mm/khugepaged.c", *UFFD, "mm/demo: three"),
        ],
        "--cover-letter",
        flagged=[2, 3],
    )
    cover, one, two, three = gappy.messages
    bot.inbox.deliver(three, cover, one)  # out of order, 2/3 missing
    bot.once()
    assert len(sink.received) == 3
    assert "waiting: 3 patch mails" in bot.status()
    time.sleep(1.9)
    log = bot.once()
    assert "missing=2" in log and "grace period over" in log
    assert {str(m["In-Reply-To"]) for m in sink.messages[3:]} == {gappy.patch_msgid(3)}
    # 2/3 turns up after the review: noted, not reviewed on its own.
    bot.inbox.deliver(two)
    log = bot.once()
    assert "event=late_mail" in log
    assert len(sink.received) == 4
    assert "missing 2" in bot.status()


def test_thread_policy_replies_to_all_and_cap_defers(world) -> None:
    bot, sink, _ = world
    bot.write(recipients="thread", max_replies=2)
    log = bot.once()
    assert len(sink.received) == 2
    assert "event=replies_deferred count=1 cap=2" in log
    assert "1 queued" in bot.status()
    bot.once()
    assert len(sink.received) == 3
    for mail_from, recipients, _ in sink.received:
        assert mail_from == "mm-review@bot.example"
        assert set(recipients) == {"jane@example.com", LIST, "rev@example.org"}
    assert all(m["Cc"] for m in sink.messages)


def test_dry_run_writes_the_outbox_and_sends_nothing(world) -> None:
    bot, sink, series = world
    bot.once("--dry-run")
    assert sink.received == []
    files = sorted(bot.outbox.glob("*.eml"))
    assert len(files) == 3
    replies = [email.message_from_bytes(f.read_bytes()) for f in files]
    assert {str(r["In-Reply-To"]) for r in replies} == expected_targets(series)
    assert all(
        f.name.split("-", 1)[1] == r["Message-ID"].strip("<>") + ".eml"
        for f, r in zip(files, replies, strict=True)
    )
    assert "outbox: 3 queued" in bot.status()
    bot.once("--dry-run")  # nothing new to preview
    assert len(list(bot.outbox.iterdir())) == 3
    # Without --dry-run, exactly what was previewed is sent.
    bot.once()
    assert sorted(m.as_bytes() for m in sink.messages) == sorted(
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default).as_bytes()
        for f in files
    )


def test_mbox_and_maildir_sources(world, tmp_path: Path) -> None:
    """What `b4 mbox` and `lei q -o maildir:` leave behind."""
    import mailbox

    bot, sink, series = world
    mbox_path = tmp_path / "b4.mbx"
    box = mailbox.mbox(mbox_path)
    for message in series[0].messages:
        box.add(message)
    box.close()
    maildir = mailbox.Maildir(tmp_path / "lei", create=True)
    for message in series[2].messages + series[1].messages:
        maildir.add(message)
    bot.write(
        archives=[
            f'[[archive]]\npath = "{mbox_path}"\nname = "b4"',
            f'[[archive]]\npath = "{tmp_path / "lei"}"\nname = "lei"',
        ]
    )
    bot.once()
    assert replies_by_target(sink).keys() == expected_targets(series)
    # lei rewrites its output on every query: the same mail again is no news.
    for message in series[2].messages:
        maildir.add(message)
    bot.once()
    assert len(sink.received) == 3


def test_start_at_the_end_skips_the_backlog(world, tmp_path: Path) -> None:
    import mailbox

    bot, sink, series = world
    maildir = mailbox.Maildir(tmp_path / "lei", create=True)
    maildir.add(series[0].messages[0])
    bot.write(
        archives=[
            f'[[archive]]\npath = "{bot.inbox.dir}"\nstart = "end"',
            f'[[archive]]\npath = "{tmp_path / "lei"}"\nname = "lei"\nstart = "end"',
        ]
    )
    log = bot.once()
    assert "event=epoch_skipped_to_end" in log and "event=archive_skipped_to_end" in log
    assert "event=series_ready" not in log and "messages: none" in bot.status()
    fresh = make_series(
        bot.tree, "demo-fresh", [("mm/fault.c", *SWAP, "mm/demo: fresh")], flagged=[1]
    )
    bot.inbox.deliver(*fresh.messages)
    maildir.add(fresh.messages[0].replace(b"Message-Id: <", b"Message-Id: <copy-"))
    bot.once()
    assert sorted(replies_by_target(sink)) == sorted(
        [fresh.patch_msgid(1), fresh.patch_msgid(1).replace("<", "<copy-")]
    )


def test_new_epochs_are_picked_up(world, tmp_path: Path) -> None:
    bot, sink, series = world
    bot.once()
    # An archive whose messages land in epoch 1, mirrored into ours the way
    # a lore mirror gets a new epoch: a clone appearing as git/1.git.
    later = Inbox(tmp_path / "later", skip_epoch=1)
    extra = make_series(
        bot.tree, "demo-epoch", [("mm/fault.c", *SWAP, "mm/demo: epoch one")], flagged=[1]
    )
    later.deliver(*extra.messages)
    subprocess.run(
        [
            "git",
            "clone",
            "-q",
            "--mirror",
            str(later.dir / "git" / "1.git"),
            str(bot.inbox.dir / "git" / "1.git"),
        ],
        check=True,
    )
    bot.once()
    assert replies_by_target(sink).keys() == expected_targets([*series, extra])
    assert "epoch 1:" in bot.status()


def test_config_and_usage_errors_are_one_line(world, tmp_path: Path) -> None:
    bot, _, _ = world
    result = bot.run("run")
    assert result.returncode == 2
    assert (
        result.stderr
        == "mmreview: error: give exactly one of --once (cron) or --follow (long-running)\n"
    )
    bot.config.write_text(bot.config.read_text() + "[policy2]\nx = 1\n")
    result = bot.run("run", "--once")
    assert result.returncode == 2
    assert result.stderr == f"mmreview: error: {bot.config}: policy2: unknown key\n"
    bot.config.write_text(
        bot.config.read_text()
        .replace('base = "master"', 'base = "nope"')
        .replace("[policy2]\nx = 1\n", "")
    )
    result = bot.run("run", "--once")
    assert result.returncode == 2
    assert result.stderr == f"mmreview: error: {bot.config}: [tree] base nope: no such revision\n"
    missing = tmp_path / "nowhere.toml"
    result = subprocess.run(
        [sys.executable, "-m", "analyzer.cli", "bot", "status", "-c", str(missing)],
        cwd=ROOT,
        env=bot.env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == f"mmreview: error: {missing}: no such file or directory\n"


def test_starttls_and_login_and_json_logs(world, tmp_path: Path) -> None:
    bot, sink, series = world
    require_program("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    sink.stop()
    secure = SmtpSink(tls=(cert, key)).start()
    try:
        # A certificate the system does not trust is a delivery failure,
        # retried later...
        bot.write(smtp_port=secure.port, starttls=True)
        log = bot.once("--log-format", "json")
        events = [json.loads(line) for line in log.splitlines()]
        retries = [e for e in events if e["event"] == "delivery_retry" and e["kind"] == "email"]
        assert retries and "CERTIFICATE_VERIFY_FAILED" in retries[0]["error"]
        assert secure.received == []
        # ...delivered once the CA is configured; login happens inside TLS.
        bot.write(ca_file=cert)
        time.sleep(0.3)
        bot.once("--log-format", "json")
        assert replies_by_target(secure).keys() == expected_targets(series)
        assert secure.logins == [(b"bot", SMTP_PASSWORD.encode())]
    finally:
        secure.stop()


def test_permanent_failures_wait_for_bot_retry(world) -> None:
    bot, _, series = world
    patchwork = FakePatchwork([m for s in series for m in s.patch_msgids])
    bot.write(patchwork=patchwork.url)
    try:
        log = bot.once(env={"MMREVIEW_PATCHWORK_TOKEN": "wrong"})
        assert "event=delivery_failed" in log and "403" in log
        assert patchwork.bad_auth == 6 and patchwork.checks == {}
        status = bot.status()
        assert "outbox: 6 failed, 3 sent" in status and "[patchwork POST" in status
        assert bot.run("retry").stdout == "queued 6 failed deliveries\n"
        bot.once()
        assert len(patchwork.states()) == 6
        assert "outbox: 9 sent" in bot.status()
    finally:
        patchwork.stop()
