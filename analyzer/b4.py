"""b4 integration: what b4's check commands need beyond `mmreview check`.

b4 runs a per-patch check command (`b4.prep-perpatch-check-cmd`,
`b4.am-perpatch-check-cmd`, `b4.review-perpatch-check-cmd`) with one message
on stdin and the tree top as cwd.  Three things follow:

- `b4 prep --check` sends each commit of the prep branch as a message with
  no `From <sha>` line, and HEAD already holds the whole series: applied to
  HEAD the patch would not apply.  `find_own_commits()` finds each patch's
  own commit in HEAD's recent history (same subject, same patch-id), so the
  patch is reviewed exactly as it sits in the branch.
- b4 caches a check's result for 30 days under the command line, so the
  command carries a token of the installed rules (`version_token()`); a
  rule change without a new token would leave old results in b4's cache.
  `mmreview b4 setup` writes the command lines with the current token.
- b4 takes any stderr output as a failure: the command runs with `-q`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import analyzer
import rules as rules_package
from analyzer import config as tree_config
from analyzer.digests import sha256
from analyzer.patches import Series
from analyzer.registry import all_rules
from analyzer.tree import KernelTree

# How far back in HEAD's history a prep branch's commits are looked for.
HISTORY_DEPTH = 500

CHECK_KEYS = {
    "prep": "b4.prep-perpatch-check-cmd",
    "am": "b4.am-perpatch-check-cmd",
    "review": "b4.review-perpatch-check-cmd",
}
# b4's default per-patch command when none is configured; setting ours
# replaces the default, so setup keeps checkpatch explicitly.
CHECKPATCH_DEFAULT = {
    "prep": "{top}/scripts/checkpatch.pl -q --terse --no-summary --mailback --showfile",
    "am": "{top}/scripts/checkpatch.pl -q --terse --no-summary --mailback",
    "review": "_builtin_checkpatch",
}


def version_token(config: Path | None = None) -> str:
    """A short hash of the installed rule set: mm-review's version, the rule
    ids and every rule module's source, and the tree's `.mmreview.toml`
    (`config`) when it has one.  A new, changed or dropped rule changes it;
    so do a release and an edit of the configuration."""
    digest = sha256(analyzer.__version__.encode())
    if config is not None and config.is_file():
        digest.update(b"config\0" + config.read_bytes())
    digest.update(" ".join(r.id for r in all_rules()).encode())
    root = Path(rules_package.__file__).parent
    for path in sorted(root.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def stale_token_warning(given: str | None, config: Path | None = None) -> str | None:
    """One line for b4 to show (as a warning) when the command line carries
    an old token: b4 may be serving results cached under it."""
    if given is None:
        return None
    current = version_token(config)
    if given == current:
        return None
    return (
        f"mm-review: WARNING: --rules-version={given} is not the installed rules' token "
        f"({current}); run 'mmreview b4 setup' so that b4 stops using old cached results"
    )


def find_own_commits(tree: KernelTree, series: Series, depth: int = HISTORY_DEPTH) -> bool:
    """Point every patch at its own commit when HEAD's recent history holds
    all of them (a b4 prep branch, a branch being reviewed); then review
    each as that commit.  Returns whether it did."""
    patches = series.reviewable
    if not patches or all(p.commit and tree.resolve(p.commit) for p in patches):
        return False
    by_subject: dict[str, list[str]] = {}
    for sha, subject in tree.recent_commits(depth):
        by_subject.setdefault(subject, []).append(sha)
    found: dict[int, str] = {}
    for number, patch in enumerate(patches):
        candidates = by_subject.get(patch.title, [])
        # A git patch-id only for a patch whose subject HEAD's history has.
        wanted = (
            _patch_id(tree, patch.diff.encode("utf-8", "surrogateescape")) if candidates else None
        )
        for sha in candidates:
            diff = tree.commit_diff(sha).removesuffix(b"\n")
            if wanted and _patch_id(tree, diff) == wanted:
                found[number] = sha
                break
        else:
            return False
    for number, sha in found.items():
        patches[number].commit = sha
    # The commits say more than a base-commit: trailer, which b4 puts on
    # the last patch of the branch only.
    series.base_commit = None
    return True


def _patch_id(tree: KernelTree, diff: bytes) -> str | None:
    out = subprocess.run(
        ["git", "patch-id", "--stable"], cwd=tree.top, input=diff, capture_output=True
    )
    fields = out.stdout.split()
    return fields[0].decode() if out.returncode == 0 and fields else None


def mmreview_command() -> str:
    """The mmreview that is running, by absolute path: b4 runs the check
    command without the user's virtualenv activated."""
    beside = Path(sys.executable).parent / "mmreview"
    if beside.is_file():
        return str(beside)
    import shutil  # `b4 setup` only

    return shutil.which("mmreview") or "mmreview"


def check_commands(command: str | None = None, config: Path | None = None) -> dict[str, str]:
    """The command line for each b4 check key, with the current token."""
    token = version_token(config)
    base = f"{command or mmreview_command()} check -q --tree=. --rules-version={token}"
    return {
        "prep": f"{base} --format=checkpatch -",
        "am": f"{base} --format=checkpatch -",
        "review": f"{base} --format=b4-review -",
    }


def setup(
    top: str, which: list[str], command: str | None = None, scope: str = "--local"
) -> list[str]:
    """Write (or refresh) the check commands in git config; returns the
    `git config` lines it ran, for the user to see.  An earlier mm-review
    command is replaced; other commands (checkpatch) are kept, and added
    when b4's checkpatch default would otherwise be lost."""
    commands = check_commands(command, tree_config.find(top))
    checkpatch = Path(top, "scripts", "checkpatch.pl")
    done = []
    for name in which:
        key = CHECK_KEYS[name]
        current = _git_config(top, scope, "--get-all", key).splitlines()
        if not current and checkpatch.is_file() and checkpatch.stat().st_mode & 0o111:
            default = CHECKPATCH_DEFAULT[name].format(top=top)
            _git_config(top, scope, "--add", key, default)
            done.append(f"git config {scope} --add {key} '{default}'")
        # Replace every value naming mmreview, or add one.
        _git_config(top, scope, "--replace-all", key, commands[name], r"mmreview|analyzer\.cli")
        done.append(f"git config {scope} --replace-all {key} '{commands[name]}' mmreview")
    return done


def _git_config(top: str, *args: str) -> str:
    out = subprocess.run(["git", "config", *args], cwd=top, capture_output=True, text=True)
    # 1: --get-all found nothing, which is not an error here.
    if out.returncode not in (0, 1):
        import git  # GitPython's error, for the one-line report of `main()`

        raise git.GitCommandError(["git", "config", *args], out.returncode, out.stderr)
    return out.stdout
