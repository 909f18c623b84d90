"""The sendemail-validate hook under the real `git send-email`, sending to a
real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import MMREVIEW, ROOT, Tree, require_program


class Inbox:
    """Keeps every message the SMTP server accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"

    @property
    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "NO_COLOR": "1",
        "PYTHONPATH": str(ROOT),
    }
    for key, value in [("user.name", "Jane Dev"), ("user.email", "jane@example.com")]:
        subprocess.run(["git", "config", "--global", key, value], env=env, check=True)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def hook(tree: Tree, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run([*MMREVIEW, "hook", *args], tree.path, env)


def send(
    tree: Tree, env: dict[str, str], port: int, patches: list[Path], *options: str
) -> subprocess.CompletedProcess:
    require_program("git-send-email", "git-email")
    return run(
        [
            "git",
            "send-email",
            *options,
            "--confirm=never",
            "--smtp-server=127.0.0.1",
            f"--smtp-server-port={port}",
            "--smtp-encryption=none",
            "--no-smtp-auth",
            "--from=Jane Dev <jane@example.com>",
            "--to=linux-mm@kvack.org",
            "--suppress-cc=all",
            *map(str, patches),
        ],
        tree.path,
        env,
    )


def series(tree: Tree, out: Path, bad: bool) -> list[Path]:
    """A 3-patch series with a cover letter; `bad` makes patch 3 drop the
    uffd-wp check (an ERROR finding), else it is a harmless rename."""
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint nr_present = 0;")
    text = (tree.path / "mm/fault.c").read_text()
    (tree.path / "mm/fault.c").write_text(
        text.replace("present++;", "nr_present++;").replace("return present;", "return nr_present;")
    )
    tree.commit("mm/demo: rename the counter")
    tree.edit("mm/fault.c", "unsigned long addr;", "unsigned long address;")
    text = (tree.path / "mm/fault.c").read_text()
    (tree.path / "mm/fault.c").write_text(
        text.replace(
            "for (addr = start; addr < end; addr += PMD_SIZE",
            "for (address = start; address < end; address += PMD_SIZE",
        )
    )
    tree.commit("mm/demo: spell out the address")
    if bad:
        tree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
        tree.commit("mm/demo: drop the uffd-wp re-check")
    else:
        tree.edit(
            "mm/khugepaged.c",
            "spin_lock_nested(ptl, SINGLE_DEPTH_NESTING);",
            "spin_lock_nested(ptl, SINGLE_DEPTH_NESTING); /* pte lock */",
        )
        tree.commit("mm/demo: say which lock")
    tree.git("format-patch", "-q", "--cover-letter", "--thread", "-o", str(out), "-3")
    cover = out / "0000-cover-letter.patch"
    cover.write_text(
        cover.read_text()
        .replace("*** SUBJECT HERE ***", "mm/demo: small clean-ups")
        .replace("*** BLURB HERE ***", "Three small clean-ups.")
    )
    return sorted(out.iterdir())


def test_bad_patch_stops_the_whole_send(
    minitree: Tree, env: dict[str, str], smtp, tmp_path: Path
) -> None:
    inbox, port = smtp
    patches = series(minitree, tmp_path / "out", bad=True)
    installed = hook(minitree, env, "install")
    assert installed.returncode == 0, installed.stderr
    result = send(minitree, env, port, patches)
    assert result.returncode != 0
    assert inbox.messages == []
    output = result.stdout + result.stderr
    assert "ERROR" in output or "error:" in output
    assert "[COLLAPSE_WITHOUT_UFFD_CHECK]" in output and "mm/khugepaged.c:32" in output
    assert "rejected by sendemail-validate hook" in output
    assert "git send-email --no-validate" in output
    # The bypass the message names does send.
    forced = send(minitree, env, port, patches, "--no-validate")
    assert forced.returncode == 0, forced.stderr
    assert len(inbox.messages) == 4


def test_clean_series_goes_through(
    minitree: Tree, env: dict[str, str], smtp, tmp_path: Path
) -> None:
    inbox, port = smtp
    patches = series(minitree, tmp_path / "out", bad=False)
    assert hook(minitree, env, "install").returncode == 0
    result = send(minitree, env, port, patches)
    assert result.returncode == 0, result.stdout + result.stderr
    assert inbox.subjects == [
        "[PATCH 0/3] mm/demo: small clean-ups",
        "[PATCH 1/3] mm/demo: rename the counter",
        "[PATCH 2/3] mm/demo: spell out the address",
        "[PATCH 3/3] mm/demo: say which lock",
    ]
    assert "mm-review" not in result.stdout + result.stderr


def test_warnings_pass_unless_asked_to_block(
    minitree: Tree, env: dict[str, str], smtp, tmp_path: Path
) -> None:
    inbox, port = smtp
    minitree.edit(
        "mm/fault.c",
        "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
        "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    )
    minitree.commit("mm/demo: treat a non-present PMD as empty")
    minitree.git("format-patch", "-q", "-o", str(tmp_path / "out"), "-1")
    patches = sorted((tmp_path / "out").iterdir())
    assert hook(minitree, env, "install").returncode == 0
    result = send(minitree, env, port, patches)
    assert result.returncode == 0, result.stderr
    assert "[PMD_PRESENT_AS_EMPTY]" in result.stderr and "sending anyway" in result.stderr
    assert len(inbox.messages) == 1
    assert hook(minitree, env, "install", "--block-on=warning").returncode == 0
    blocked = send(minitree, env, port, patches)
    assert blocked.returncode != 0 and "nothing was sent" in blocked.stderr
    assert len(inbox.messages) == 1


def test_an_existing_hook_still_runs_first_and_comes_back(
    minitree: Tree, env: dict[str, str], smtp, tmp_path: Path
) -> None:
    inbox, port = smtp
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint present = 0; /* PMDs seen */")
    minitree.commit("mm/demo: say what is counted")
    minitree.git("format-patch", "-q", "-o", str(tmp_path / "out"), "-1")
    patches = sorted((tmp_path / "out").iterdir())
    hooks_dir = minitree.path / ".git/hooks"
    theirs = hooks_dir / "sendemail-validate"
    log = tmp_path / "patatt.log"
    # Shaped like patatt's hook: it gets the same arguments and can veto.
    original = (
        "#!/bin/sh\n"
        f'echo "$# $(basename "$1")" >> "{log}"\n'
        f'[ -e "{tmp_path}/veto" ] && {{ echo "patatt: no signature" >&2; exit 1; }}\n'
        "exit 0\n"
    )
    theirs.write_text(original)
    theirs.chmod(0o750)
    before = theirs.stat()
    installed = hook(minitree, env, "install")
    assert "runs first" in installed.stdout
    assert (hooks_dir / "sendemail-validate.pre-mmreview").read_text() == original
    result = send(minitree, env, port, patches)
    assert result.returncode == 0, result.stderr
    assert len(inbox.messages) == 1
    # "$#" is 1 on git < 2.41 and 2 (the headers file) after.
    calls = [line.split() for line in log.read_text().splitlines()]
    assert [name for _, name in calls] == [p.name for p in patches]
    assert {count for count, _ in calls} <= {"1", "2"}
    # The old hook's veto still stops the send.
    (tmp_path / "veto").touch()
    vetoed = send(minitree, env, port, patches)
    assert vetoed.returncode != 0 and "patatt: no signature" in vetoed.stderr
    assert len(inbox.messages) == 1
    # Installing twice keeps the original aside, once.
    assert hook(minitree, env, "install").returncode == 0
    assert (hooks_dir / "sendemail-validate.pre-mmreview").read_text() == original
    removed = hook(minitree, env, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert theirs.read_text() == original
    after = theirs.stat()
    assert stat.S_IMODE(after.st_mode) == 0o750 and after.st_ino == before.st_ino
    assert not (hooks_dir / "sendemail-validate.pre-mmreview").exists()
    again = hook(minitree, env, "uninstall")
    assert again.returncode == 2
    assert again.stderr.endswith("sendemail-validate: not installed by mmreview; left alone\n")


def test_core_hooks_path_is_honoured(minitree: Tree, env: dict[str, str]) -> None:
    minitree.git("config", "core.hooksPath", "githooks")
    listing = sorted(p.name for p in (minitree.path / ".git/hooks").iterdir())
    assert hook(minitree, env, "install").returncode == 0
    hook_file = minitree.path / "githooks/sendemail-validate"
    assert os.access(hook_file, os.X_OK)
    assert sorted(p.name for p in (minitree.path / ".git/hooks").iterdir()) == listing
    assert hook(minitree, env, "uninstall").returncode == 0
    # The directory it had to create is gone again.
    assert not (minitree.path / "githooks").exists()


def test_headers_argument_of_newer_git(minitree: Tree, env: dict[str, str], tmp_path: Path) -> None:
    """git >= 2.41 passes the SMTP headers as $2 (this machine's git may be
    older): the installed script hands them on, and the subject in them
    names the patch."""
    minitree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    minitree.commit("mm/demo: drop the uffd-wp re-check")
    minitree.git("format-patch", "-q", "-o", str(tmp_path / "out"), "-1")
    [patch] = (tmp_path / "out").iterdir()
    headers = tmp_path / ".gitsendemail.header.abc123"
    headers.write_text(
        "From: Jane Dev <jane@example.com>\nTo: linux-mm@kvack.org\n"
        "Subject: [PATCH v3 7/9] mm/demo: drop the uffd-wp re-check\n"
        "Message-ID: <20261102100000.1-jane@example.com>\n"
    )
    assert hook(minitree, env, "install").returncode == 0
    script = minitree.path / ".git/hooks/sendemail-validate"
    result = run([str(script), str(patch), str(headers)], minitree.path, env)
    assert result.returncode == 1
    assert "([PATCH v3 7/9] mm/demo: drop the uffd-wp re-check): nothing was sent" in result.stderr
    older = run([str(script), str(patch)], minitree.path, env)
    assert older.returncode == 1
    assert "([PATCH] mm/demo: drop the uffd-wp re-check): nothing was sent" in older.stderr
