"""mm-review under the real b4: `b4 prep --check` and `b4 am -k` (line
protocol), `b4 review`'s JSON protocol, and `mmreview b4 setup`.

b4's config, cache and data live in a temp HOME; any HTTP request b4 might
try goes to a closed port on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MMREVIEW, ROOT, Tree

B4 = str(Path(sys.executable).parent / "b4")
SWAP = (
    "\tif (pmd_none(_pmd))\n\t\tgoto out;\n\n\tret = false;",
    "\tif (!pmd_present(_pmd))\n\t\tgoto out;\n\n\tret = false;",
)
PMD_LINE = (
    "mm/fault.c:34: WARNING:PMD_PRESENT_AS_EMPTY: pmd_none(_pmd) replaced by !pmd_present(_pmd)"
)
UFFD_LINE = "mm/khugepaged.c:32: ERROR:COLLAPSE_WITHOUT_UFFD_CHECK: patch removes"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "NO_COLOR": "1",
        "PYTHONPATH": str(ROOT),
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    for key, value in [
        ("user.name", "Jane Dev"),
        ("user.email", "jane@example.com"),
        ("commit.gpgsign", "false"),
    ]:
        subprocess.run(["git", "config", "--global", key, value], env=env, check=True)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def b4(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = run([B4, "--offline-mode", *args], cwd, env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def three_patches(tree: Tree) -> None:
    tree.edit("mm/fault.c", *SWAP)
    tree.commit("mm/demo: treat a non-present PMD as empty")
    tree.edit("mm/khugepaged.c", "vma->anon_vma || userfaultfd_wp(vma)", "vma->anon_vma")
    tree.commit("mm/demo: drop the uffd-wp re-check")
    tree.edit("mm/fault.c", "\tint present = 0;", "\tint nr_present = 0;")
    text = (tree.path / "mm/fault.c").read_text()
    (tree.path / "mm/fault.c").write_text(
        text.replace("present++;", "nr_present++;").replace("return present;", "return nr_present;")
    )
    tree.commit("mm/demo: rename the counter")


def config_values(tree: Tree, key: str, env: dict[str, str]) -> list[str]:
    return run(["git", "config", "--get-all", key], tree.path, env).stdout.splitlines()


def setup(tree: Tree, env: dict[str, str], *args: str) -> str:
    out = run([*MMREVIEW, "b4", "setup", *args], tree.path, env)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return out.stdout


def token(env: dict[str, str]) -> str:
    return run([*MMREVIEW, "rules", "--version-token"], ROOT, env).stdout.strip()


def test_b4_prep_check_shows_the_findings_of_each_commit(
    minitree: Tree, env: dict[str, str]
) -> None:
    b4(["prep", "-n", "demo"], minitree.path, env)
    three_patches(minitree)
    setup(minitree, env)
    out = b4(["prep", "--check"], minitree.path, env)
    # Each commit reviewed as it sits in the prep branch: no "does not
    # apply" note (which would be a failure on stderr anyway).
    assert f"mmreview: {PMD_LINE}" in out
    assert f"mmreview: {UFFD_LINE}" in out
    assert "Success: 1, Warning: 1, Error: 1" in out
    assert "does not apply" not in out and "rules' token" not in out


def test_stale_token_is_flagged_and_setup_gets_b4_to_run_again(
    minitree: Tree, env: dict[str, str]
) -> None:
    b4(["prep", "-n", "demo"], minitree.path, env)
    three_patches(minitree)
    old = f"{sys.executable} -m analyzer.cli check -q --tree=. --rules-version=0ld --format=checkpatch -"
    run(["git", "config", "b4.prep-perpatch-check-cmd", old], minitree.path, env)
    out = b4(["prep", "--check"], minitree.path, env)
    assert "--rules-version=0ld is not the installed rules' token" in out
    # b4 counts lines: the stale-token line is a warning on every patch.
    assert "Success: 0, Warning: 4, Error: 1" in out
    assert list((Path(env["XDG_CACHE_HOME"]) / "b4").glob("*.checks"))

    setup(minitree, env)
    [value] = config_values(minitree, "b4.prep-perpatch-check-cmd", env)
    assert f"--rules-version={token(env)}" in value
    # A new command line is a new cache key: b4 runs mm-review again.
    out = b4(["prep", "--check"], minitree.path, env)
    assert "rules' token" not in out and "Success: 1, Warning: 1, Error: 1" in out


def test_setup_keeps_other_commands_and_b4s_checkpatch_default(
    minitree: Tree, env: dict[str, str]
) -> None:
    checkpatch = minitree.path / "scripts/checkpatch.pl"
    checkpatch.parent.mkdir()
    checkpatch.write_text("#!/bin/sh\nexit 0\n")
    checkpatch.chmod(0o755)
    run(["git", "config", "--add", "b4.am-perpatch-check-cmd", "/bin/true"], minitree.path, env)
    printed = setup(minitree, env, "--for", "prep", "--for", "am")
    setup(minitree, env, "--for", "prep", "--for", "am")  # refresh: nothing doubles
    mine = f"check -q --tree=. --rules-version={token(env)} --format=checkpatch -"
    prep = config_values(minitree, "b4.prep-perpatch-check-cmd", env)
    assert (
        prep[0]
        == f"{minitree.path}/scripts/checkpatch.pl -q --terse --no-summary --mailback --showfile"
    )
    assert len(prep) == 2 and prep[1].endswith(mine)
    am = config_values(minitree, "b4.am-perpatch-check-cmd", env)
    assert am[0] == "/bin/true" and len(am) == 2 and am[1].endswith(mine)
    assert config_values(minitree, "b4.review-perpatch-check-cmd", env) == []
    assert "git config --local --replace-all b4.prep-perpatch-check-cmd" in printed
    bad = run([*MMREVIEW, "b4", "setup", "--for", "shazam"], minitree.path, env)
    assert (
        bad.returncode == 2
        and bad.stderr == "mmreview: error: --for shazam: choose from prep, am, review\n"
    )


def test_b4_am_check_reviews_the_list_messages(
    minitree: Tree, env: dict[str, str], tmp_path: Path
) -> None:
    three_patches(minitree)
    series = tmp_path / "series.mbox"
    series.write_bytes(minitree.format_patch("--thread", "--cover-letter", "-3"))
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    setup(minitree, env, "--for", "am")
    out = b4(["am", "-k", "-m", str(series), "-o", str(tmp_path / "am")], minitree.path, env)
    assert f"mmreview: {PMD_LINE}" in out
    assert f"mmreview: {UFFD_LINE}" in out
    assert "mmreview: passed all checks" in out


REVIEW_RUNNER = """
import argparse, email, json, sys
import b4
from b4.review import checks
b4.setup_config(argparse.Namespace(config={}))
perpatch, _ = checks.load_check_cmds()
results = {}
for path in sys.argv[1:]:
    with open(path, "rb") as handle:
        msg = email.message_from_binary_file(handle, policy=b4.emlpolicy)
    results.update(checks.run_perpatch_checks([(path, msg)], perpatch, "."))
print(json.dumps(results))
"""


def test_b4_review_json_protocol(minitree: Tree, env: dict[str, str], tmp_path: Path) -> None:
    three_patches(minitree)
    out_dir = tmp_path / "patches"
    minitree.git("format-patch", "-q", "-o", str(out_dir), "-3")
    minitree.git("reset", "-q", "--hard", "HEAD~3")
    setup(minitree, env, "--for", "review")
    patches = sorted(str(p) for p in out_dir.iterdir())
    # b4's own loader and runner: what `b4 review` does for each patch.
    ran = run([sys.executable, "-c", REVIEW_RUNNER, *patches], minitree.path, env)
    assert ran.returncode == 0, ran.stderr
    results = json.loads(ran.stdout)
    first, second, third = ([r for r in results[p] if r["tool"] == "mm-review"] for p in patches)
    assert [(r["status"], r["summary"]) for r in first] == [("warn", "1 warning")]
    assert [(r["status"], r["summary"]) for r in second] == [("fail", "1 error")]
    assert [(r["status"], r["summary"]) for r in third] == [("pass", "passed all checks")]
    [finding] = json.loads(first[0]["details"])
    assert finding["status"] == "warn"
    assert finding["description"].startswith(PMD_LINE)
    assert finding["srcline"] == "if (!pmd_present(_pmd))"
    assert finding["url"].startswith("https://lore.kernel.org/all/")
    assert first[0]["url"] == finding["url"]


def test_line_protocol_is_silent_on_stderr(minitree: Tree, env: dict[str, str]) -> None:
    """A patch that does not apply is still reviewed (from the patch alone)
    and says nothing on stderr with -q: b4 reads any stderr as a failure."""
    minitree.edit("mm/fault.c", *SWAP)
    minitree.commit("mm/demo: treat a non-present PMD as empty")
    message = minitree.format_patch("-1")
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    minitree.edit("mm/fault.c", "again:\n", "retry:\n")
    minitree.commit("mm/demo: unrelated local change")
    # One message, no mbox From line: what b4 writes to the command's stdin.
    message = message.split(b"\n", 1)[1]
    out = subprocess.run(
        [*MMREVIEW, "check", "-q", "--tree=.", "--format=checkpatch", "-"],
        cwd=minitree.path,
        env=env,
        input=message,
        capture_output=True,
    )
    assert out.stderr == b""
    assert out.stdout.decode().startswith("mm/fault.c:34: WARNING:PMD_PRESENT_AS_EMPTY:")
    clean = subprocess.run(
        [*MMREVIEW, "check", "-q", "--tree=.", "--format=checkpatch", "-"],
        cwd=minitree.path,
        env=env,
        input=minitree.format_patch("-1").split(b"\n", 1)[1],
        capture_output=True,
    )
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, b"", b"")
