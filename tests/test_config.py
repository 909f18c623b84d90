""".mmreview.toml at the tree top: rule choice, severities, the hook's
blocking level and the reply sender; command-line options win; mistakes are
one line naming the file and the key."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest

from tests.conftest import Tree, mmreview

SWAP = (
    "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
)


def swap_patch(tree: Tree, tmp_path: Path) -> Path:
    """A format-patch file whose only finding is a PMD_PRESENT_AS_EMPTY warning."""
    tree.edit("mm/fault.c", *SWAP)
    tree.commit("mm/demo: treat a non-present PMD as empty")
    patch = tmp_path / "0001-swap.patch"
    patch.write_bytes(tree.format_patch("--thread", "-1"))
    tree.git("reset", "-q", "--hard", "HEAD~1")
    return patch


def configure(tree: Tree, text: str) -> Path:
    path = tree.path / ".mmreview.toml"
    path.write_text(text)
    return path


def check(tree: Tree, patch: Path, *args: str):
    return mmreview("check", str(patch), "--tree", str(tree.path), *args)


def test_severity_flows_into_every_format_and_the_exit_status(
    minitree: Tree, tmp_path: Path
) -> None:
    patch = swap_patch(minitree, tmp_path)
    assert check(minitree, patch, "-f", "checkpatch").returncode == 1
    configure(minitree, '[severity]\npmd-present-as-empty = "check"\n')
    result = check(minitree, patch, "-f", "checkpatch")
    assert result.returncode == 0
    assert result.stdout.decode().startswith("mm/fault.c:34: CHECK:PMD_PRESENT_AS_EMPTY: ")
    report = json.loads(check(minitree, patch, "-f", "json").stdout)
    assert [f["severity"] for f in report["findings"]] == ["CHECK"]
    log = json.loads(check(minitree, patch, "-f", "sarif").stdout)
    [result_object] = log["runs"][0]["results"]
    assert result_object["level"] == "note"
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["PMD_PRESENT_AS_EMPTY"]["defaultConfiguration"]["level"] == "note"
    [diagnostic] = check(minitree, patch, "-f", "rdjsonl").stdout.decode().splitlines()
    assert json.loads(diagnostic)["severity"] == "INFO"
    assert "check:" in check(minitree, patch).stdout.decode()
    html = check(minitree, patch, "-f", "html").stdout.decode()
    assert '<div class="note check"><span class="sev">check</span>' in html

    configure(minitree, '[severity]\nPMD_PRESENT_AS_EMPTY = "error"\n')
    result = check(minitree, patch, "-f", "b4-review")
    assert result.returncode == 1
    [entry] = json.loads(result.stdout)
    assert (entry["status"], entry["summary"]) == ("fail", "1 error")


def test_rule_choice_and_command_line_override(minitree: Tree, tmp_path: Path) -> None:
    patch = swap_patch(minitree, tmp_path)
    configure(minitree, 'ignore = ["PMD_PRESENT_AS_EMPTY"]\n')
    quiet = check(minitree, patch, "-f", "checkpatch")
    assert (quiet.returncode, quiet.stdout) == (0, b"")
    # --select replaces the file's rule choice as a whole.
    chosen = check(minitree, patch, "-f", "checkpatch", "--select", "PMD_PRESENT_AS_EMPTY")
    assert chosen.returncode == 1 and b"PMD_PRESENT_AS_EMPTY" in chosen.stdout
    configure(minitree, 'select = ["COLLAPSE_WITHOUT_UFFD_CHECK"]\n')
    assert check(minitree, patch, "-f", "checkpatch").stdout == b""


def test_hook_blocking_level_and_reply_sender(minitree: Tree, tmp_path: Path) -> None:
    patch = swap_patch(minitree, tmp_path)

    def validate(*args: str):
        return mmreview("hook", "sendemail-validate", str(patch), *args, cwd=minitree.path)

    assert validate().returncode == 0  # a warning does not stop the send
    configure(
        minitree,
        '[hook]\nblock-on = "warning"\n\n[reply]\nfrom = "Rhea Viewer <rhea@example.org>"\n',
    )
    blocked = validate()
    assert blocked.returncode == 1 and b"nothing was sent" in blocked.stderr
    # The hook script's --block-on wins over the file.
    assert validate("--block-on=error").returncode == 0
    reply = check(minitree, patch, "-f", "email")
    message = email.message_from_bytes(reply.stdout.split(b"\n", 1)[1], policy=email.policy.default)
    assert message["From"] == "Rhea Viewer <rhea@example.org>"
    again = check(minitree, patch, "-f", "email", "--from", "Other <other@example.org>")
    assert b"\nFrom: Other <other@example.org>\n" in again.stdout


def test_config_change_changes_the_b4_token(minitree: Tree) -> None:
    def token() -> bytes:
        return mmreview("rules", "--version-token", cwd=minitree.path).stdout

    before = token()
    configure(minitree, '[severity]\nPMD_PRESENT_AS_EMPTY = "check"\n')
    assert token() != before and len(token().strip()) == 12


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("colour = 1\n", "colour: unknown key (known: hook, ignore, reply, select, severity)"),
        ("select = [\n", "invalid TOML: "),
        ('select = "PMD_PRESENT_AS_EMPTY"\n', "select: expected a list of rule ids"),
        (
            'ignore = ["NO_SUCH_RULE"]\n',
            "ignore: unknown rule 'NO_SUCH_RULE' (see 'mmreview rules')",
        ),
        ("severity = 3\n", "severity: expected a table ([severity])"),
        (
            '[severity]\nPMD_PRESENT_AS_EMPTY = "fatal"\n',
            "severity.PMD_PRESENT_AS_EMPTY: 'fatal' is not one of error, warning, check",
        ),
        ('[severity]\nNO_SUCH_RULE = "check"\n', "severity.NO_SUCH_RULE: unknown rule"),
        (
            '[hook]\nblock-on = "always"\n',
            "hook.block-on: 'always' is not one of error, warning, never",
        ),
        ('[hook]\nblock = "error"\n', "hook.block: unknown key (known: block-on)"),
        ('[reply]\nfrom = "nobody"\n', "reply.from: 'nobody' is not a mail address"),
    ],
)
def test_mistakes_are_one_line_naming_file_and_key(
    minitree: Tree, tmp_path: Path, text: str, problem: str
) -> None:
    patch = swap_patch(minitree, tmp_path)
    path = configure(minitree, text)
    for args in (["check", str(patch), "--tree", str(minitree.path)], ["scan", "--tree", "."]):
        result = mmreview(*args, cwd=minitree.path)
        assert result.returncode == 2
        stderr = result.stderr.decode()
        assert stderr.startswith(f"mmreview: error: {path}: {problem}")
        assert stderr.count("\n") == 1 and "Traceback" not in stderr
