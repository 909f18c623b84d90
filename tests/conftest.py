"""Shared fixtures: a small kernel-style git tree built with real git, and the
real Linux 6.12 tree from Debian's linux-source-6.12 package."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent

# The property tests' slice in every pytest run: the same examples each time
# (derandomized), nothing remembered between runs, no per-example deadline
# (the properties bound time themselves).  HYPOTHESIS_PROFILE=fuzz for a
# long run with fresh randomness.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=200)
settings.register_profile("fuzz", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
MINITREE = Path(__file__).parent / "minitree"
# As installed: the launcher, which reads plain check lines itself.
MMREVIEW = [sys.executable, "-m", "analyzer.launch"]

AUTHOR = {
    "GIT_AUTHOR_NAME": "Jane Dev",
    "GIT_AUTHOR_EMAIL": "jane@example.com",
    "GIT_COMMITTER_NAME": "Jane Dev",
    "GIT_COMMITTER_EMAIL": "jane@example.com",
    "GIT_AUTHOR_DATE": "2026-11-02T10:00:00+0000",
    "GIT_COMMITTER_DATE": "2026-11-02T10:00:00+0000",
}


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    env = {**os.environ, **AUTHOR, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    out = subprocess.run(
        ["git", "-c", "init.defaultBranch=master", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        env=env,
        input=input,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


def mmreview(
    *args: str, cwd: Path | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*MMREVIEW, *args],
        cwd=cwd or ROOT,
        env=env,
        input=input,
        capture_output=True,
        text=False,
    )


class Tree:
    """A kernel-style git tree in a temp directory, edited with real git."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str, input: bytes | None = None) -> str:
        return git(self.path, *args, input=input)

    def edit(self, relpath: str, old: str, new: str, count: int = 1) -> None:
        file = self.path / relpath
        text = file.read_text()
        assert old in text, f"{relpath}: {old!r} not found"
        file.write_text(text.replace(old, new, count))

    def commit(self, subject: str, body: str = "") -> str:
        self.git(
            "commit",
            "-q",
            "-a",
            "-m",
            f"{subject}\n\n{body}\n\nSigned-off-by: Jane Dev <jane@example.com>",
        )
        return self.git("rev-parse", "HEAD").strip()

    def format_patch(self, *args: str) -> bytes:
        return git(self.path, "format-patch", "--stdout", *args).encode()


def build_minitree(root: Path) -> Tree:
    """tests/minitree as a git repository at root/linux, one commit "base"."""
    path = root / "linux"
    shutil.copytree(MINITREE, path)
    tree = Tree(path)
    tree.git("init", "-q")
    tree.git("add", ".")
    tree.git("commit", "-q", "-m", "base")
    return tree


@pytest.fixture
def minitree(tmp_path: Path) -> Tree:
    return build_minitree(tmp_path)


# corpus/fetch-kernel's exit status when apt cannot give it the package.
FETCH_KERNEL_NO_APT = 3


@pytest.fixture(scope="session")
def kernel_tree(request: pytest.FixtureRequest) -> Path:
    """The real 6.12 tree.  The first run downloads about 150 MB and unpacks
    about 2.2 GB; fetch-kernel's progress is shown on the terminal, through
    pytest's capture.  Where apt cannot work (no apt-get, no network), the
    tests that need the tree are skipped with the reason (a failure in CI);
    any other failure fails them."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        code, stdout, stderr = run_fetch_kernel(os.environ, sys.stderr)
    return kernel_tree_or_skip(code, stdout, stderr)


def run_fetch_kernel(
    environ: Mapping[str, str], terminal: TextIO, cache: Path | None = None
) -> tuple[int, str, str]:
    """corpus/fetch-kernel [cache], its stderr relayed to `terminal` as it
    comes (a progress bar when that is a terminal, else a line per step)."""
    env = {
        **environ,
        "MMREVIEW_PYTHON": sys.executable,
        "MMREVIEW_PROGRESS": "bar" if terminal.isatty() else "lines",
    }
    command = [str(ROOT / "corpus" / "fetch-kernel"), *([str(cache)] if cache else [])]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as process:
        assert process.stderr is not None and process.stdout is not None
        said = b""
        while chunk := process.stderr.read1(4096):
            said = (said + chunk)[-8192:]
            terminal.write(chunk.decode("utf-8", "replace"))
            terminal.flush()
        stdout = process.stdout.read().decode()
    return process.returncode, stdout, said.decode("utf-8", "replace")


def kernel_tree_or_skip(code: int, stdout: str, stderr: str) -> Path:
    if code == 0:
        return Path(stdout.strip().splitlines()[-1])
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    reason = lines[-1].strip() if lines else f"corpus/fetch-kernel exited {code}"
    if code == FETCH_KERNEL_NO_APT and not os.environ.get("CI"):
        pytest.skip(f"the real 6.12 tree cannot be had here: {reason}")
    pytest.fail(f"corpus/fetch-kernel failed: {reason}")


def require_program(name: str, package: str) -> str:
    """The path of a system program a test drives for real.  Missing in CI is
    a failure (.ci/run installs it); missing on a developer's machine is a skip
    that says what to install.  git's own programs (git-send-email) are
    looked for in `git --exec-path` too."""
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True).stdout
    path = shutil.which(name) or shutil.which(name, path=exec_path.strip() or None)
    if path:
        return path
    message = f"{name} not installed (apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
