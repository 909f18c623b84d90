"""The `git send-email` pre-send hook (`sendemail-validate`).

git send-email runs `$(git rev-parse --git-path hooks)/sendemail-validate`
once per file before it sends anything (`$1` the file; `$2` a file with the
SMTP headers since git 2.41); a non-zero exit aborts the whole send.  There
is one such file per hooks directory and other tools install one too
(`patatt install-hook`), so `install()` moves an existing hook aside as
`sendemail-validate.pre-mmreview` and ours runs it first, with the same
arguments; `uninstall()` puts it back.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from analyzer import config as tree_config
from analyzer.b4 import find_own_commits
from analyzer.checking import UsageError
from analyzer.patches import InputError, Series, printable, read_series
from analyzer.registry import select_rules
from analyzer.rule import Severity
from analyzer.tree import KernelTree

HOOK = "sendemail-validate"
SAVED = f"{HOOK}.pre-mmreview"
MARKER = "# installed by mmreview"
CREATED_DIR = "# mmreview created this hooks directory"
BLOCK_LEVELS = tree_config.BLOCK_LEVELS

_SCRIPT = """\
#!/bin/sh
{marker}: 'mmreview hook uninstall' puts back what was here before.
{created}# Runs the hook that was here first (with the same arguments), then
# mm-review on the patch.  Skip all of it with: git send-email --no-validate
prev="$(dirname "$0")/{saved}"
if [ -x "$prev" ]; then
	"$prev" "$@" || exit $?
fi
exec {command} hook {hook}{options} "$1" ${{2:+--headers "$2"}}
"""


class HookError(Exception):
    """Cannot install or uninstall: said in one line."""


@dataclass(frozen=True)
class HookPaths:
    directory: Path
    hook: Path
    saved: Path


def hook_paths(repo: str) -> HookPaths:
    """Where git looks for hooks in `repo` (core.hooksPath honoured)."""
    out = subprocess.run(
        ["git", "rev-parse", "--git-path", "hooks"], cwd=repo, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise HookError(f"{repo}: not a git repository")
    directory = Path(repo, out.stdout.strip())
    return HookPaths(directory, directory / HOOK, directory / SAVED)


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(errors="replace")
    except OSError:
        return False


def install(repo: str, command: str, block_on: str | None = None) -> str:
    """Install (or refresh) the hook; returns what was done, in one line."""
    paths = hook_paths(repo)
    created = not paths.directory.exists()
    moved = False
    if paths.hook.exists() or paths.hook.is_symlink():
        if is_ours(paths.hook):
            created = CREATED_DIR in paths.hook.read_text()
        elif paths.saved.exists() or paths.saved.is_symlink():
            raise HookError(
                f"{paths.hook} exists and so does {paths.saved}; move one of them away first"
            )
        else:
            os.replace(paths.hook, paths.saved)
            moved = True
    paths.directory.mkdir(parents=True, exist_ok=True)
    options = f" --block-on={block_on}" if block_on else ""
    script = _SCRIPT.format(
        marker=MARKER,
        created=f"{CREATED_DIR}\n" if created else "",
        saved=SAVED,
        command=shlex.quote(command),
        hook=HOOK,
        options=options,
    )
    temporary = paths.hook.with_name(f".{HOOK}.mmreview-tmp")
    temporary.write_text(script)
    temporary.chmod(0o755)
    os.replace(temporary, paths.hook)
    if moved:
        return f"installed {paths.hook}; the hook that was there runs first, as {paths.saved}"
    return f"installed {paths.hook}"


def uninstall(repo: str) -> str:
    paths = hook_paths(repo)
    if not (paths.hook.exists() and is_ours(paths.hook)):
        raise HookError(f"{paths.hook}: not installed by mmreview; left alone")
    created = CREATED_DIR in paths.hook.read_text()
    paths.hook.unlink()
    if paths.saved.exists() or paths.saved.is_symlink():
        os.replace(paths.saved, paths.hook)
        return f"removed mm-review's hook; {paths.hook} is the previous one again"
    if created and not any(paths.directory.iterdir()):
        paths.directory.rmdir()
    return f"removed {paths.hook}"


def sent_subject(message_file: bytes, headers_file: bytes | None) -> str:
    """The Subject the patch goes out with: the header file's (git >= 2.41
    passes the SMTP headers as $2), else the message's own."""
    from email import message_from_bytes, policy

    for data in (headers_file, message_file):
        if data:
            subject = message_from_bytes(data, policy=policy.default).get("Subject")
            if subject:
                return " ".join(str(subject).split())
    return ""


def validate_command(patch: str, headers: str | None, block_on: str | None) -> int:
    """`mmreview hook sendemail-validate`: the exit code for the hook."""
    check_block_level(block_on)
    return validate(patch, headers, block_on, sys.stderr)


def check_block_level(value: str | None) -> None:
    if value is not None and value not in BLOCK_LEVELS:
        raise UsageError(f"--block-on {value}: choose from {', '.join(BLOCK_LEVELS)}")


def validate(patch_file: str, headers_file: str | None, block_on: str | None, out: TextIO) -> int:
    """Review one file git send-email is about to send, against the
    repository the hook runs in (and its `.mmreview.toml`); 1 (do not
    send) when a finding is at or above `block_on` (default: the file's
    `[hook] block-on`, else error)."""
    config = tree_config.load(os.getcwd())
    block_on = block_on or config.block_on or "error"
    try:
        with open(patch_file, "rb") as handle:
            data = handle.read()
        headers = Path(headers_file).read_bytes() if headers_file else None
    except OSError as err:
        out.write(f"mm-review: {printable(str(err.filename))}: {err.strerror}; not reviewed\n")
        return 0
    name = os.path.basename(patch_file)
    try:
        series = read_series([patch_file])
    except InputError as err:
        # Not a patch (a cover letter alone, a reply): nothing to review,
        # and no reason to stop the send.
        out.write(f"mm-review: {printable(str(err))}; not reviewed\n")
        return 0
    if not series.reviewable:
        for patch in series.patches:
            out.write(f"mm-review: {printable(str(patch.error))}; not reviewed\n")
        return 0
    try:
        tree: KernelTree | None = KernelTree(os.getcwd())
    except InputError:
        tree = None
    from analyzer.engine import review

    try:
        if tree is not None:
            _review_as_own_commit(tree, series)
        select, ignore = config.rules(None, None)
        result = config.apply(review(series, select_rules(select, ignore), tree=tree))
    finally:
        if tree is not None:
            tree.close()  # git is waited for now (the launcher skips the teardown)
    if not result.findings:
        return 0
    # The text reporter (rich) only for a patch that has something to say.
    from analyzer.reporters import text

    text.render(result, out)
    counts = {s: sum(1 for f in result.findings if f.severity is s) for s in Severity}
    blocking = [s for s in Severity if s.rank >= _BLOCK_RANK[block_on] and counts[s]]
    what = printable(f"{name} ({sent_subject(data, headers) or series.patches[0].title})")
    if blocking:
        out.write(
            f"mm-review: {_count(counts, blocking)} in {what}: nothing was sent.\n"
            "mm-review: fix the patch, or send anyway with: git send-email --no-validate ...\n"
        )
        return 1
    out.write(f"mm-review: {_count(counts, list(Severity))} in {what}; sending anyway\n")
    return 0


# Severity ranks: ERROR 3, WARNING 2; "never" is above every rank.
_BLOCK_RANK = {"error": 3, "warning": 2, "never": 4}


def _count(counts: dict[Severity, int], which: list[Severity]) -> str:
    parts = [
        f"{counts[s]} {s.value.lower()}{'s' if counts[s] != 1 else ''}" for s in which if counts[s]
    ]
    return ", ".join(parts)


def _review_as_own_commit(tree: KernelTree, series: Series) -> None:
    """git format-patch output of the branch being sent: review each patch
    as its commit (its parent holds the earlier patches, which a per-file
    hook does not see), not at the series' base-commit."""
    if all(p.commit and tree.resolve(p.commit) for p in series.reviewable):
        series.base_commit = None
    else:
        find_own_commits(tree, series)
