"""The launcher reads plain `check` command lines without typer, exactly as
typer reads them, and hands everything else to typer."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from hypothesis import example, given
from hypothesis import strategies as st

from analyzer import checking, cli, hooks, launch
from analyzer.checking import CheckOptions
from tests.conftest import ROOT, Tree

EXAMPLE = "corpus/examples/0002-mm-demo-treat-a-non-present-PMD-as-empty.patch"

_values = st.one_of(
    st.sampled_from(["checkpatch", "json", ".", "a b", "mm/x.c", "0", "2.5", "1e3", "inf", "x=y",
                     "HEAD~1", "PMD_PRESENT_AS_EMPTY,OPEN_CODED_PTLOCK", " 3 ", "1_0"]),
    st.sampled_from(["", "-", "-q", "--all", "-1", "nan"]),
)  # fmt: skip
_spellings = st.one_of(
    st.sampled_from(list(launch.CHECK_OPTIONS)),
    st.sampled_from(list(launch.CHECK_OPTIONS)),
    st.sampled_from(["--help", "--version", "--bogus", "-x", "--", "-qf", "-tfoo", "--tre"]),
)


@st.composite
def _words(draw: st.DrawFn) -> list[str]:
    words: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["option", "option=value", "input"]))
        if kind == "input":
            words.append(draw(st.sampled_from(["-", "a.patch", "b.mbox", "x=y"])))
            continue
        spelling = draw(_spellings)
        if kind == "option=value":
            words.append(f"{spelling}={draw(_values)}")
        else:
            words.append(spelling)
            if draw(st.booleans()):
                words.append(draw(_values))
    return words


def _typer_reads(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> CheckOptions | str:
    """What typer's `check` hands on (or why it refuses the line)."""
    seen: list[CheckOptions] = []
    monkeypatch.setattr(checking, "run", lambda options: seen.append(options) or 0)
    try:
        cli.app(argv, standalone_mode=False)
    except typer.Exit:
        pass
    except Exception as err:  # click's usage errors
        return f"typer refused: {err}"
    return seen[0] if seen else "typer ran no check"


@given(_words())
@example(["-q", "--tree=.", "--rules-version=abc", "--format=checkpatch", "-"])
@example(["--select", "A", "--types=B", "--ignore", "C", "a.patch", "b.mbox"])
@example(["--time-budget", "0", "--all", "--debug", "-o", "out.json", "-f", "json"])
@example(["--tree", "a", "--tree", "b"])
def test_the_launcher_reads_a_check_line_as_typer_does(words: list[str]) -> None:
    argv = ["check", *words]
    fields = launch.check_line(argv)
    if fields is None:
        return  # typer's to read
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _typer_reads(argv, monkeypatch) == CheckOptions(**fields)


_hook_words = st.lists(
    st.one_of(
        st.sampled_from(["--headers", "--block-on", "--headers=h.txt", "--block-on=warning"]),
        st.sampled_from(["0001.patch", "h.txt", "error", "never", "-", "", "--help", "-x"]),
    ),
    max_size=5,
)


@given(_hook_words)
@example(["--block-on", "warning", "0001.patch", "--headers", "h.txt"])
@example(["0001.patch"])
def test_the_launcher_reads_a_hook_line_as_typer_does(words: list[str]) -> None:
    argv = ["hook", "sendemail-validate", *words]
    arguments = launch.hook_line(argv)
    if arguments is None:
        return
    seen: list[dict] = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(
            hooks,
            "validate_command",
            lambda patch, headers, block_on: seen.append(
                {"patch": patch, "headers": headers, "block_on": block_on}
            ),
        )
        with contextlib.suppress(typer.Exit):
            cli.app(argv, standalone_mode=False)
    assert seen == [arguments]


def test_b4s_check_line_is_read_without_typer() -> None:
    for argv in (
        ["check", "-q", "--tree=.", "--rules-version=0123abcd", "--format=checkpatch", "-"],
        ["check", "x.patch", "--tree", "/src/linux", "-q", "-f", "checkpatch"],
    ):
        assert launch.check_line(argv) is not None
    for argv in (["check", "--help"], ["--version"], ["scan"], ["check", "-qf", "json"], []):
        assert launch.check_line(argv) is None


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    """`module` run as `mmreview ARGS`, saying last on stderr whether typer
    was loaded (the launcher ends with os._exit, typer with SystemExit)."""
    code = (
        "import os, runpy, sys\n"
        "def say():\n"
        "    print('typer loaded' if 'typer' in sys.modules else 'no typer', file=sys.stderr)\n"
        "    sys.stderr.flush()\n"
        "real_exit = os._exit\n"
        "os._exit = lambda code: (say(), real_exit(code))\n"
        f"sys.argv = ['mmreview', *{list(args)!r}]\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__')\n"
        "finally:\n"
        "    say()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", EXAMPLE, "-f", "checkpatch"),
        ("check", EXAMPLE, "--format=json", "-q"),
        ("check", "no-such.patch"),
        ("check",),
        ("check", EXAMPLE, "--format=nonsense"),
    ],
)
def test_the_launcher_reviews_as_the_typer_command_line_does(args: tuple[str, ...]) -> None:
    direct, through_typer = _run("analyzer.launch", *args), _run("analyzer.cli", *args)
    assert direct.stderr.splitlines()[-1] == "no typer"
    assert through_typer.stderr.splitlines()[-1] == "typer loaded"
    assert (direct.returncode, direct.stdout, direct.stderr.splitlines()[:-1]) == (
        through_typer.returncode,
        through_typer.stdout,
        through_typer.stderr.splitlines()[:-1],
    )


def test_a_line_for_typer_still_gets_typers_answer() -> None:
    result = _run("analyzer.launch", "check", "--bogus")
    assert result.returncode == 2
    assert "No such option: --bogus" in result.stderr
    assert result.stderr.splitlines()[-1] == "typer loaded"


def test_the_hook_line_runs_without_typer_as_through_it(tmp_path) -> None:
    patch = tmp_path / "0001.patch"
    patch.write_bytes((ROOT / EXAMPLE).read_bytes())
    for args in (
        ("hook", "sendemail-validate", str(patch)),
        ("hook", "sendemail-validate", "--block-on", "sometimes", str(patch)),
    ):
        direct, through_typer = _run("analyzer.launch", *args), _run("analyzer.cli", *args)
        assert direct.stderr.splitlines()[-1] == "no typer"
        assert (direct.returncode, direct.stdout, direct.stderr.splitlines()[:-1]) == (
            through_typer.returncode,
            through_typer.stdout,
            through_typer.stderr.splitlines()[:-1],
        )


def test_a_check_against_a_tree_waits_for_its_git(minitree: Tree, tmp_path) -> None:
    """The launcher skips the interpreter's teardown, so the check itself
    must wait for the tree's `git cat-file --batch` (whose CPU time is then
    the check's, as a user's time(1) counts it), and the report be out."""
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint nr = 0;")
    minitree.commit("one")
    patch = tmp_path / "0001.patch"
    patch.write_bytes(minitree.format_patch("-1", "--stdout"))
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    # A git whose cat-file takes a while to go once its input ends.
    shim = tmp_path / "bin"
    shim.mkdir()
    done = tmp_path / "cat-file-done"
    real = shutil.which("git")
    (shim / "git").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *cat-file*) "{real}" "$@"; sleep 0.3; touch "{done}"; exit 0;; esac\n'
        f'exec "{real}" "$@"\n'
    )
    (shim / "git").chmod(0o755)
    environment = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    args = ["check", str(patch), "--tree", str(minitree.path), "-f", "json"]
    direct = subprocess.run(
        [sys.executable, "-m", "analyzer.launch", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.exists(), "mmreview exited before its git cat-file"
    assert direct.returncode == 0 and '"findings"' in direct.stdout, direct.stderr


def _modules_left_out(
    args: list[str], cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a check with warm caches; the last line of its stderr lists the
    modules a check has no use for that it loaded (a module standing in sys.modules until
    first used, analyzer.launch.ON_FIRST_USE, is not loaded)."""
    code = (
        "import os, runpy, sys\n"
        "real_exit = os._exit\n"
        "def leave(code):\n"
        f"    unused = {UNUSED_BY_A_CHECK!r}\n"
        "    loaded = [m for m in unused if type(sys.modules.get(m)) is type(sys)]\n"
        "    print(sorted(loaded), file=sys.stderr)\n"
        "    sys.stderr.flush()\n"
        "    real_exit(code)\n"
        "os._exit = leave\n"
        f"sys.argv = ['mmreview', {', '.join(map(repr, args))}]\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "runpy.run_module('analyzer.launch', run_name='__main__')\n"
    )
    # The first run fills the caches a check writes (compiled patterns,
    # derived facts): a check that writes them loads tempfile to do it.
    for _warm_then_measured in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=cwd, input=stdin, capture_output=True, check=False
        )
    return done


# OpenSSL (hashlib's _hashlib) and importlib.resources (tree-sitter-c's
# package) cost a cold run milliseconds that a review does not need; so do
# tempfile (with shutil, bz2, lzma, random) and mailbox where nothing is
# spooled, written to a file or read as a series.
UNUSED_BY_A_CHECK = (
    "_hashlib",
    "importlib.resources",
    "typer",
    "git",
    "tempfile",
    "shutil",
    "mailbox",
    # inspect's own imports
    "ast",
    "dis",
    "pkgutil",
    *launch.ON_FIRST_USE,
)


def test_a_check_leaves_out_what_it_does_not_use() -> None:
    done = _modules_left_out(["check", EXAMPLE, "-q", "-f", "checkpatch"], ROOT)
    assert done.returncode == 1 and done.stdout  # the example's findings
    assert done.stderr.splitlines()[-1] == b"[]"


def test_a_check_the_b4_way_leaves_out_what_it_does_not_use(minitree: Tree) -> None:
    # b4's per-patch check: one message on stdin, the tree top as cwd.
    minitree.edit("mm/fault.c", "\tint present = 0;", "\tint nr = 0;")
    minitree.commit("one")
    message = minitree.format_patch("-1", "--stdout")
    minitree.git("reset", "-q", "--hard", "HEAD~1")
    args = ["check", "-q", "--tree=.", "--format=checkpatch", "-"]
    done = _modules_left_out(args, minitree.path, message)
    assert done.returncode == 0, done.stderr  # reviewed, nothing found
    assert done.stderr.splitlines()[-1] == b"[]"


def test_inspect_loads_where_it_is_first_used() -> None:
    code = (
        "import sys\n"
        "from analyzer import launch\n"
        "launch._load_on_first_use()\n"
        "import dataclasses, inspect\n"
        "assert 'ast' not in sys.modules and 'dis' not in sys.modules\n"
        "@dataclasses.dataclass\n"
        "class Undocumented:\n"
        "    size: int\n"
        "assert Undocumented.__doc__ == 'Undocumented(size: int)', Undocumented.__doc__\n"
        "assert type(sys.modules['inspect']) is type(sys), sys.modules['inspect']\n"
        "assert inspect.signature(len).parameters\n"
        "from inspect import Parameter\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.stdout == "ok\n", done.stderr
