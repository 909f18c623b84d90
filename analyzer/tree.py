"""The kernel tree: base revisions, and the pre/post image of every file a
series touches, patch by patch.

git is driven a few times per review, not a few times per file: one
`git rev-parse` finds the repository, and one long-lived `git cat-file
--batch` answers every revision, every file of the base and every header a
rule reads.  A series whose hunks all apply exactly where their headers say
(what `git format-patch` against that base gives) is applied in memory;
any other series is applied by `git apply` in a scratch index and a scratch
object directory (the tree's own objects borrowed read-only as alternates).
Either way the user's working tree, index, HEAD, object store and hooks are
never touched.

GitPython stays the way to the repository for what needs more than that
(`repo`, `git`: the corpus tools, the Fixes: tag lookups); it is imported on
first use only, since importing it costs more than a whole small review.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

from analyzer import budget
from analyzer.budget import BudgetExceeded
from analyzer.images import (
    FileImages,
    Image,
    apply_exactly,
    changed_lines,
    git_blob_id,
    hunk_git_rejects,
    hunks_match_post,
    images_from_patch,
)
from analyzer.patches import FileDiff, InputError, Patch, Series
from analyzer.patterns import regex

if TYPE_CHECKING:
    import git

# Files per git apply, blobs per git cat-file: about a second each at most.
_APPLY_BATCH = 500
_BLOB_BATCH = 2000

_APPLY_FAILED_RE = regex(r"^error: patch failed: (.+):(\d+)$", re.MULTILINE)
_NOT_IN_INDEX_RE = regex(r"^error: (.+): does not exist in index$", re.MULTILINE)
_HUNK_RE = regex(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)
_FULL_SHA_RE = regex(r"^[0-9a-f]{40}$")
# What a tree entry's mode says is no blob: a directory, a submodule.
_NOT_BLOB_MODES = (b"40000", b"160000")
_KEPT_TREES = 256

# Nothing we run should ever start one of the user's hooks.
_GIT = ("git", "-c", "core.hooksPath=/dev/null")
# git's messages are parsed (`_apply_problem`): never translated.
_UNTRANSLATED = {"LC_ALL": "C", "LANGUAGE": "C"}


class GitError(InputError):
    """A git command that failed, said in one line ("git <command>: why")."""

    def __init__(self, command: str, stderr: str) -> None:
        self.command = command
        self.stderr = stderr
        super().__init__(f"git {command}: {_git_error_text(stderr)}")


class PatchImages:
    """The files of one patch before and after it, on the tree it applies to."""

    def __init__(
        self,
        patch: Patch,
        files: list[FileImages] | None = None,
        read_rev: str | None = None,
        unfinished: bool = False,
    ) -> None:
        self.patch = patch
        self.files: list[FileImages] = files if files is not None else []
        # The tree as this patch leaves it, for rules that read headers:
        # files the series changed so far (path -> blob id, None if
        # deleted), all others as of `read_rev`.
        self.state: dict[str, str | None] = {}
        self.read_rev = read_rev
        # The patch's time budget ran out while it was being applied.
        self.unfinished = unfinished


class KernelTree:
    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise InputError(f"--tree {path}: no such directory")
        where = os.path.abspath(path)
        try:
            found = subprocess.run(
                [
                    *_GIT,
                    "rev-parse",
                    "--is-bare-repository",
                    "--absolute-git-dir",
                    "--git-common-dir",
                    "--show-cdup",
                ],
                cwd=where,
                capture_output=True,
                env=_environment(),
            )
        except OSError:  # not a directory
            raise InputError(f"--tree {path}: not a git repository") from None
        lines = found.stdout.decode("utf-8", "surrogateescape").split("\n")
        if found.returncode != 0 or len(lines) < 3:
            stderr = found.stderr.decode("utf-8", "replace")
            if "not a git repository" in stderr or not stderr.strip():
                raise InputError(f"--tree {path}: not a git repository")
            raise InputError(f"--tree {path}: {_git_error_text(stderr)}")
        self.bare = lines[0] == "true"
        self.git_dir = lines[1]
        self.common_dir = os.path.normpath(os.path.join(where, lines[2]))
        # The user's spelling of the path (symbolic links kept), as GitPython has it.
        cdup = lines[3] if len(lines) > 3 else ""
        self.top = self.git_dir if self.bare else os.path.normpath(os.path.join(where, cdup))
        self._objects = _CatFile(self.top)
        self._blob_cache: dict[str, bytes] = {}
        self._commits: dict[str, str | None] = {}  # full sha (and sha^) -> commit
        self._read_cache: dict[tuple[str, str], str | None] = {}  # (full sha, path) -> blob
        # (full sha, directory) -> {name: (mode, blob or tree id)}
        self._trees: dict[tuple[str, str], dict[str, tuple[bytes, str]] | None] = {}
        # Path -> blob id in the scratch index of the series being applied.
        self._scratch_index: dict[str, str] = {}

    def close(self) -> None:
        """Stop the git processes this tree holds (also done when it is
        garbage-collected)."""
        self._objects.close()
        if "repo" in self.__dict__:
            self.repo.close()

    def __enter__(self) -> KernelTree:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @functools.cached_property
    def repo(self) -> git.Repo:
        """The repository through GitPython, for what needs more than reading."""
        import git

        return git.Repo(self.top)

    @functools.cached_property
    def git(self) -> git.Git:
        command = self.repo.git
        command.set_persistent_git_options(c="core.hooksPath=/dev/null")
        return command

    def run(
        self, *args: str, env: dict[str, str] | None = None, stdin: bytes | IO[bytes] | None = None
    ) -> bytes:
        """`git ARGS` in the tree: its output, or GitError."""
        done = self._run(*args, env=env, stdin=stdin)
        if done.returncode != 0:
            raise GitError(args[0], done.stderr.decode("utf-8", "replace"))
        return done.stdout

    def _run(
        self, *args: str, env: dict[str, str] | None = None, stdin: bytes | IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        feed: dict = (
            {"input": stdin}
            if isinstance(stdin, bytes)
            else {"stdin": stdin if stdin is not None else subprocess.DEVNULL}
        )
        return subprocess.run(
            [*_GIT, *args], cwd=self.top, env=_environment(env), capture_output=True, **feed
        )

    # -- revisions ---------------------------------------------------------

    def resolve(self, rev: str) -> str | None:
        """The commit `rev` names, or None."""
        # Commit ids never change meaning; names like HEAD may, so only
        # full ids (and their parents) are remembered.
        remember = _FULL_SHA_RE.match(rev.removesuffix("^")) is not None
        if remember and rev in self._commits:
            return self._commits[rev]
        found = self._objects.header(f"{rev}^{{commit}}")
        sha = found[0] if found is not None else None
        if remember:
            self._commits[rev] = sha
        return sha

    def choose_base(self, series: Series, base: str | None) -> tuple[str, str]:
        """The revision to apply the series to, and why it was chosen."""
        if base:
            sha = self.resolve(base)
            if sha is None:
                raise InputError(f"--base {base}: no such revision in {self.top}")
            return sha, f"--base {base}"
        if series.base_commit:
            sha = self.resolve(series.base_commit)
            if sha:
                return sha, f"base-commit {series.base_commit[:12]}"
        first = series.patches[0] if series.patches else None
        if first and first.commit and (sha := self.resolve(f"{first.commit}^")):
            return sha, f"parent of {first.commit[:12]}, the first patch's commit"
        head = self.resolve("HEAD")
        if head is None:
            raise InputError(f"--tree {self.top}: the repository has no commits")
        if series.base_commit:
            return head, f"HEAD (base-commit {series.base_commit[:12]} is not in the tree)"
        return head, "HEAD"

    @functools.cached_property
    def has_history(self) -> bool:
        """False for a shallow clone or a snapshot imported as one commit (a
        release tarball): "not in the tree" then proves nothing."""
        shallow = self._run("rev-parse", "--is-shallow-repository")
        if shallow.stdout.strip() == b"true":
            return False
        listed = self._run("rev-list", "--max-count=2", "HEAD")
        return listed.returncode == 0 and len(listed.stdout.split()) > 1

    def recent_commits(self, depth: int) -> list[tuple[str, str]]:
        """(id, subject) of the last `depth` non-merge commits of HEAD's
        history, as `git log` lists them; [] without a HEAD."""
        head = self._objects.read("HEAD^{commit}")
        if head is not None and b"\nparent " not in b"\n" + _commit_header(head[2]):
            # A root commit (a snapshot imported as one commit) is all the
            # history there is: no `git log` to start for it.
            subject = _root_subject(head[2])
            if subject is not None:
                return [(head[0], subject)]
        done = self._run("log", "--no-merges", f"-n{depth}", "--format=%H%x00%s", "HEAD")
        if done.returncode != 0:
            return []
        commits = []
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            sha, _, subject = line.partition("\0")
            commits.append((sha, subject))
        return commits

    def commit_diff(self, sha: str) -> bytes:
        """What `git show` prints of a commit's change, without its message."""
        return self.run("show", "--format=", "--no-color", sha)

    def range_commits(self, spec: str) -> list[str]:
        done = self._run("rev-list", "--reverse", "--no-merges", self._range(spec))
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace")
            raise InputError(f"--range {spec}: {_git_error_text(stderr)}")
        commits = done.stdout.decode().split()
        if not commits:
            raise InputError(f"--range {spec}: no commits in range")
        return commits

    def format_patches(self, spec: str) -> bytes:
        done = self._run("format-patch", "--stdout", self._range(spec))
        if done.returncode != 0:
            stderr = done.stderr.decode("utf-8", "replace")
            raise InputError(f"--range {spec}: {_git_error_text(stderr)}")
        return done.stdout

    def _range(self, spec: str) -> str:
        """A..B (or A...B; an empty side is HEAD) with both ends resolved
        here, so that a bad end is said in our words, not in git's."""
        separator = "..." if "..." in spec else ".."
        if separator not in spec:
            raise InputError(f"--range {spec}: expected A..B")
        ends = [end or "HEAD" for end in spec.split(separator, 1)]
        resolved = []
        for end in ends:
            if end.startswith("-") or "\0" in end:
                raise InputError(f"--range {spec}: '{end}' is not a revision")
            sha = self.resolve(end)
            if sha is None:
                raise InputError(f"--range {spec}: no revision '{end}' in {self.top}")
            resolved.append(sha)
        return separator.join(resolved)

    # -- files -------------------------------------------------------------

    def reader(self, images: PatchImages, env: dict[str, str] | None = None):
        """read_file(path) for rules: the tree as this patch leaves it."""

        blob_id = self.blob_ids(images)

        def read_file(path: str) -> bytes | None:
            sha = blob_id(path)
            # What the series made so far is in its scratch object directory.
            scratch = env if path in images.state else None
            return self.blobs([sha], scratch).get(sha) if sha else None

        return read_file

    def blob_ids(self, images: PatchImages) -> Callable[[str], str | None]:
        """blob_id(path) for rules: what read_file(path) would read, named
        without reading it (facts derived from a header are kept by blob id,
        and most of the headers a file includes are not needed)."""

        def blob_id(path: str) -> str | None:
            if path in images.state:
                return images.state[path]
            return self.blob_id(images.read_rev or "HEAD", path)

        return blob_id

    def read(self, rev: str, path: str) -> bytes | None:
        """The file `path` as of `rev`, if it is a file there."""
        sha = self.blob_id(rev, path)
        return self.blobs([sha]).get(sha) if sha else None

    def blob_id(self, rev: str, path: str) -> str | None:
        """The blob id of the file `path` as of `rev`, if it is a file there."""
        key = (rev, path)
        if key in self._read_cache:
            return self._read_cache[key]
        directory, _, name = path.rpartition("/")
        if _FULL_SHA_RE.match(rev) and all(p not in ("", ".", "..") for p in path.split("/")):
            # A rule reads a file's headers, two dozen of them in one
            # directory: git walks to the directory once, not per file.
            entry = (self._tree(rev, directory) or {}).get(name)
            sha = entry[1] if entry is not None and entry[0] not in _NOT_BLOB_MODES else None
            self._read_cache[key] = sha
            return sha
        found = self._objects.read(f"{rev}:{path}")
        sha = None
        if found is not None and found[1] == b"blob":
            sha = found[0]
            self._blob_cache[sha] = found[2]
        if _FULL_SHA_RE.match(rev):
            self._read_cache[key] = sha
        return sha

    def _tree(self, rev: str, directory: str) -> dict[str, tuple[bytes, str]] | None:
        """The entries of `directory` as of the commit `rev` (None: no such
        directory)."""
        key = (rev, directory)
        if key not in self._trees:
            if len(self._trees) >= _KEPT_TREES:
                self._trees.clear()
            found = self._objects.read(f"{rev}:{directory}" if directory else f"{rev}^{{tree}}")
            self._trees[key] = (
                _tree_entries(found[2]) if found is not None and found[1] == b"tree" else None
            )
        return self._trees[key]

    def blobs(self, shas: list[str], env: dict[str, str] | None = None) -> dict[str, bytes]:
        wanted = [s for s in dict.fromkeys(shas) if s not in self._blob_cache]
        if wanted and env is None:
            for sha, found in zip(wanted, self._objects.read_all(wanted), strict=True):
                if found is not None:
                    self._blob_cache[sha] = found[2]
        elif wanted:
            # A scratch object directory: a git of its own, once.  The names
            # go in from a file, not a pipe we write while git writes back:
            # with thousands of blobs both pipes would fill and both sides
            # wait for ever.
            import tempfile  # seldom: only a scratch object directory

            with tempfile.TemporaryFile() as names:
                names.write(("\n".join(wanted) + "\n").encode())
                names.seek(0)
                out = self.run("cat-file", "--batch", env=env, stdin=names)
            position = 0
            while position < len(out):
                end = out.index(b"\n", position)
                header = out[position:end].split()
                position = end + 1
                if len(header) == 3:  # "<sha> missing" has two
                    size = int(header[2])
                    self._blob_cache[header[0].decode()] = out[position : position + size]
                    position += size + 1
        return {s: self._blob_cache[s] for s in shas if s in self._blob_cache}

    # -- images ------------------------------------------------------------

    def images(self, series: Series, base: str) -> Iterator[PatchImages]:
        """Apply the series patch by patch; yield each patch's images (a
        patch is applied when its images are asked for, in its time budget)."""
        try:
            in_memory = self._apply_in_memory(series, base)
        except BudgetExceeded:
            # The first patch's budget ran out: git applies patch by patch,
            # each in its own budget.
            in_memory = None
        if in_memory is not None:
            # Handed out one by one and let go: a reviewed patch's images
            # are garbage (a 64-patch series held every patch's texts).
            in_memory.reverse()
            while in_memory:
                yield in_memory.pop()
            return
        state: dict[str, str | None] = {}
        with self._scratch(series, base) as scratch:
            for patch in series.reviewable:
                try:
                    result = self._apply_one(scratch, patch, base)
                except BudgetExceeded:
                    yield PatchImages(patch=patch, read_rev=base, unfinished=True)
                    continue
                state.update(result.state)
                result.state = dict(state)
                yield result

    def _apply_in_memory(self, series: Series, base: str) -> list[PatchImages] | None:
        """The series' images when every hunk of every patch applies exactly
        at its stated lines (then `git apply` would make the same files);
        None as soon as one does not, and git applies the whole series."""
        paths = _series_paths(series)
        current: dict[str, str | None] = {}
        for path, found in zip(
            paths, self._objects.read_all([f"{base}:{p}" for p in paths]), strict=True
        ):
            if found is not None and found[1] == b"blob":
                current[path] = found[0]
                self._blob_cache[found[0]] = found[2]
            else:
                current[path] = None
        results = []
        state: dict[str, str | None] = {}
        for patch in series.reviewable:
            result = PatchImages(patch=patch, read_rev=base)
            files = _c_files(patch)
            if len({f.path for f in files}) != len(files):
                return None
            for diff in files:
                budget.check()
                images = self._apply_file(diff, current)
                if images is None:
                    return None
                result.files.append(images)
            for diff in files:
                for path in (diff.old_path, diff.new_path):
                    if path:
                        state[path] = current[path]
            result.state = dict(state)
            results.append(result)
        return results

    def _apply_file(self, diff: FileDiff, current: dict[str, str | None]) -> FileImages | None:
        """One file applied in memory, `current` (path -> blob) updated; None
        when git must judge it (a rename, a missing file, a hunk that does
        not sit where it says)."""
        old, new = diff.old_path, diff.new_path
        if (old and new and old != new) or not len(diff.patched):
            return None
        pre_sha = current.get(old) if old else None
        if (old and pre_sha is None) or (not old and new and current.get(new) is not None):
            return None
        pre_text = self._blob_cache[pre_sha] if pre_sha else b""
        post_text = apply_exactly(pre_text, diff.patched)
        if (
            post_text is None
            and old == new
            and (rejected := hunk_git_rejects(pre_text, diff.patched))
        ):
            # What git apply would say, without the scratch index and the
            # three git processes it takes to hear it (a patch of a series
            # checked on its own base, as b4 does, often does not apply).
            line = diff.patched[rejected - 1].source_start
            return images_from_patch(diff.patched, _problem_at_line(diff, line))
        if post_text is None or (new is None and post_text):
            return None
        post = None
        if new is not None:
            post = Image(post_text, git_blob_id(post_text))
            if not hunks_match_post(diff.patched, post.text):
                return None
            self._blob_cache[post.blob_id] = post_text
        pre = Image(pre_text, pre_sha) if pre_sha else None
        added, removed = changed_lines(diff.patched)
        if old:
            current[old] = None
        if new:
            current[new] = post.blob_id if post else None
        return FileImages(path=diff.path, pre=pre, post=post, added=added, removed=removed)

    def commit_images(self, patch: Patch, commit: str) -> PatchImages:
        """Images straight from a commit already in the tree."""
        result = PatchImages(patch=patch, read_rev=commit)
        paths = [p for f in _c_files(patch) for p in (f.old_path, f.new_path) if p]
        before = self._blob_ids(f"{commit}^", paths)
        after = self._blob_ids(commit, paths)
        contents = self.blobs([*before.values(), *after.values()])
        for diff in _c_files(patch):
            pre_sha = before.get(diff.old_path or "")
            post_sha = after.get(diff.new_path or "")
            result.files.append(self._file_images(diff, pre_sha, post_sha, contents))
        return result

    def _blob_ids(self, rev: str, paths: list[str]) -> dict[str, str]:
        """path -> blob id of the paths that are files as of `rev`."""
        ids = {}
        unique = list(dict.fromkeys(paths))
        for path, found in zip(
            unique, self._objects.read_all([f"{rev}:{p}" for p in unique]), strict=True
        ):
            if found is not None and found[1] == b"blob":
                ids[path] = found[0]
                self._blob_cache[found[0]] = found[2]
        return ids

    @contextmanager
    def _scratch(self, series: Series, base: str) -> Iterator[dict[str, str]]:
        # Only patches that do not apply where their headers say come here:
        # a check that does not pays for neither module.
        import shutil
        import tempfile

        scratch = tempfile.mkdtemp(prefix="mmreview-")
        try:
            objects = os.path.join(scratch, "objects")
            os.makedirs(objects)
            env = {
                "GIT_INDEX_FILE": os.path.join(scratch, "index"),
                "GIT_OBJECT_DIRECTORY": objects,
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": os.path.abspath(
                    os.path.join(self.common_dir, "objects")
                ),
            }
            paths = _series_paths(series)
            listing = self.run("ls-tree", "-r", "--full-tree", base, "--", *paths) if paths else b""
            # The scratch index changes only by our applies: what it holds is
            # known from here on without asking git before every patch (a
            # 500-patch series paid a git process per patch for it).
            self._scratch_index = _parse_listing(
                listing.decode("utf-8", "surrogateescape"), sha_field=2
            )
            self.run("update-index", "--index-info", env=env, stdin=listing)
            env["MMREVIEW_SCRATCH"] = scratch
            yield env
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _apply_one(self, env: dict[str, str], patch: Patch, base: str) -> PatchImages:
        result = PatchImages(patch=patch, read_rev=base)
        files = _c_files(patch)
        paths = [p for f in files for p in (f.old_path, f.new_path) if p]
        index = self._scratch_index
        before = {p: index[p] for p in paths if p in index}
        applied: dict[str, str | None] = {}
        try:
            for start in range(0, len(files), _APPLY_BATCH):
                budget.check()
                batch = files[start : start + _APPLY_BATCH]
                # One git apply for many files when they apply (a tree-wide
                # patch of 2,000 files took 13 s file by file); file by file
                # only to say which file and hunk do not.  In batches, so
                # that the time budget is looked at between them.
                if len(batch) > 1 and self._git_apply(env, *batch) is None:
                    applied.update({diff.path: None for diff in batch})
                    continue
                for diff in batch:
                    budget.check()
                    problem = self._git_apply(env, diff)
                    if problem:
                        result.files.append(images_from_patch(diff.patched, problem))
                        continue
                    applied[diff.path] = None
        except BudgetExceeded:
            # What did apply is in the scratch index: keep its listing true.
            self._relist(env, paths)
            raise
        # Nothing applied, nothing changed: no second listing.
        after = self._relist(env, paths) if applied else before
        shas = list(dict.fromkeys([*before.values(), *after.values()]))
        contents: dict[str, bytes] = {}
        for start in range(0, len(shas), _BLOB_BATCH):
            budget.check()
            contents.update(self.blobs(shas[start : start + _BLOB_BATCH], env=env))
        for diff in files:
            if diff.path not in applied:
                continue
            budget.check()
            pre_sha = before.get(diff.old_path or "")
            post_sha = after.get(diff.new_path or "")
            result.files.append(self._file_images(diff, pre_sha, post_sha, contents, env))
        result.state = {p: after.get(p) for p in paths}
        return result

    def _relist(self, env: dict[str, str], paths: list[str]) -> dict[str, str]:
        """The scratch index's entries for `paths`, asked of git, and kept."""
        after = self._ls_files(env, paths)
        for path in paths:
            if path in after:
                self._scratch_index[path] = after[path]
            else:
                self._scratch_index.pop(path, None)
        return after

    def _git_apply(self, env: dict[str, str], diff: FileDiff, *more: FileDiff) -> str | None:
        patch_file = os.path.join(env["MMREVIEW_SCRATCH"], "one.patch")
        with open(patch_file, "wb") as handle:
            for each in (diff, *more):
                handle.write(_patch_bytes(str(each.patched)))
        done = self._run("apply", "--cached", "--whitespace=nowarn", patch_file, env=env)
        if done.returncode == 0:
            return None
        return _apply_problem(done.stderr.decode("utf-8", "replace"), diff)

    def _file_images(
        self,
        diff: FileDiff,
        pre_sha: str | None,
        post_sha: str | None,
        contents: dict[str, bytes],
        env: dict[str, str] | None = None,
    ) -> FileImages:
        pre = Image.of(contents[pre_sha], pre_sha) if pre_sha in contents else None
        post = Image.of(contents[post_sha], post_sha) if post_sha in contents else None
        if (pre is None and diff.old_path) or (post is None and diff.new_path):
            return images_from_patch(diff.patched, "file is not in the tree")
        if post is None or hunks_match_post(diff.patched, post.text):
            added, removed = changed_lines(diff.patched)
        else:
            added, removed = self._diff_lines(pre_sha, post_sha, env)
        return FileImages(path=diff.path, pre=pre, post=post, added=added, removed=removed)

    def _diff_lines(
        self, pre_sha: str | None, post_sha: str | None, env: dict[str, str] | None
    ) -> tuple[frozenset[int], frozenset[int]]:
        """Changed lines when git applied a hunk at an offset."""
        if pre_sha is None or post_sha is None:
            text = self.blobs([s for s in (pre_sha, post_sha) if s], env)
            lines = frozenset(range(1, next(iter(text.values()), b"").count(b"\n") + 1))
            return (lines, frozenset()) if pre_sha is None else (frozenset(), lines)
        out = self.run("diff", "-U0", "--no-color", pre_sha, post_sha, env=env)
        added: set[int] = set()
        removed: set[int] = set()
        for match in _HUNK_RE.finditer(out.decode("utf-8", "replace")):
            old, old_len, new, new_len = (int(g) if g is not None else 1 for g in match.groups())
            removed.update(range(old, old + old_len))
            added.update(range(new, new + new_len))
        return frozenset(added), frozenset(removed)

    def _ls_files(self, env: dict[str, str], paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        out = self.run("ls-files", "-s", "--", *paths, env=env)
        return _parse_listing(out.decode("utf-8", "surrogateescape"), sha_field=1)


def _tree_entries(tree: bytes) -> dict[str, tuple[bytes, str]]:
    """A git tree object's entries (`<mode> <name>\\0<20-byte id>` each):
    name -> (mode, hex id)."""
    # One regex pass, not a find per field: include/linux/ has 1,500 entries
    # and a header lookup reads it on every cold run.
    return {
        name.decode("utf-8", "surrogateescape"): (mode, sha.hex())
        for mode, name, sha in _TREE_ENTRY_RE.findall(tree)
    }


_TREE_ENTRY_RE = regex(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)


class _CatFile:
    """One `git cat-file --batch` for the life of a KernelTree: an object
    read is a line written and an answer read back, not a process."""

    def __init__(self, top: str) -> None:
        self._top = top
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [*_GIT, "cat-file", "--batch"],
                cwd=self._top,
                env=_environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            self._finalizer = weakref.finalize(self, _stop, self._process)
        return self._process

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._process = None

    def read(self, name: str) -> tuple[str, bytes, bytes] | None:
        """(id, type, content) of the object `name` names, or None."""
        return self.read_all([name])[0]

    def header(self, name: str) -> tuple[str, bytes] | None:
        found = self.read(name)
        return (found[0], found[1]) if found is not None else None

    def read_all(self, names: list[str]) -> list[tuple[str, bytes, bytes] | None]:
        """(id, type, content) for each name; None for a name that names
        no object (or no single one)."""
        results: list[tuple[str, bytes, bytes] | None] = []
        with self._lock:
            process = self._start()
            assert process.stdin is not None and process.stdout is not None
            # Requests go in chunks that fit any pipe's buffer, and every
            # answer to a chunk is read before the next is written: neither
            # side can wait on the other with both pipes full.
            position = 0
            while position < len(names):
                chunk: list[str] = []
                size = 0
                while position < len(names) and size < 3072:
                    chunk.append(names[position])
                    size += len(names[position]) + 1
                    position += 1
                asked = [n for n in chunk if n and "\n" not in n]
                try:
                    process.stdin.write(
                        b"".join(n.encode("utf-8", "surrogateescape") + b"\n" for n in asked)
                    )
                    process.stdin.flush()
                except BrokenPipeError:
                    raise GitError("cat-file", "git cat-file --batch exited") from None
                answers = {n: self._answer(process.stdout) for n in asked}
                results.extend(answers.get(n) for n in chunk)
        return results

    @staticmethod
    def _answer(stdout: IO[bytes]) -> tuple[str, bytes, bytes] | None:
        header = stdout.readline()
        if not header:
            raise GitError("cat-file", "git cat-file --batch exited")
        fields = header.split()
        if len(fields) != 3 or header.endswith((b" missing\n", b" ambiguous\n")):
            return None
        size = int(fields[2])
        content = stdout.read(size)
        stdout.read(1)  # the newline after the content
        return fields[0].decode(), fields[1], content


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
    finally:
        if process.stdout is not None:
            process.stdout.close()


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **_UNTRANSLATED, **(extra or {})}


def _commit_header(commit: bytes) -> bytes:
    return commit.split(b"\n\n", 1)[0]


def _root_subject(commit: bytes) -> str | None:
    """`git log --format=%s` of a commit object: the first paragraph of its
    message, lines joined by spaces; None for a message git would
    re-encode (an `encoding` header)."""
    header, _, message = commit.partition(b"\n\n")
    if any(line.startswith(b"encoding ") for line in header.split(b"\n")):
        return None
    lines = message.split(b"\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    subject = []
    for line in lines:
        line = line.rstrip()
        if not line:
            break
        subject.append(line)
    return b" ".join(subject).decode("utf-8", "replace")


def _parse_listing(out: str, sha_field: int) -> dict[str, str]:
    entries = {}
    for line in out.splitlines():
        meta, _, path = line.partition("\t")
        fields = meta.split()
        if len(fields) > sha_field:
            entries[path] = fields[sha_field]
    return entries


def _c_files(patch: Patch) -> list[FileDiff]:
    return [f for f in patch.files if f.is_c and not f.is_binary]


def _series_paths(series: Series) -> list[str]:
    return sorted(
        {
            p
            for patch in series.reviewable
            for f in _c_files(patch)
            for p in (f.old_path, f.new_path)
            if p
        }
    )


def _patch_bytes(text: str) -> bytes:
    """A diff's text as the bytes it was read from (undecodable bytes come
    back through surrogateescape); a surrogate that is no escaped byte (a
    mail decoded in a wrong charset) becomes "?", and git says whether
    the hunk still applies."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _apply_problem(stderr: str, diff: FileDiff) -> str:
    if match := _APPLY_FAILED_RE.search(stderr):
        return _problem_at_line(diff, int(match.group(2)))
    if _NOT_IN_INDEX_RE.search(stderr):
        return "file is not in the tree"
    if "already exists in index" in stderr:
        return "new file already exists in the tree"
    return "does not apply: " + " ".join(stderr.replace("error:", "").split())[:120]


def _problem_at_line(diff: FileDiff, line: int) -> str:
    """git's "patch failed: <file>:<line>", the line being a hunk's first."""
    for number, hunk in enumerate(diff.patched, 1):
        if hunk.source_start == line:
            where = f"@@ -{hunk.source_start},{hunk.source_length} @@"
            return f"hunk #{number} ({where}) does not apply"
    return f"does not apply at line {line}"


def _git_error_text(stderr: str) -> str:
    """git's message, first line only, without its advice, cut at a word."""
    lines = [line.strip(" '") for line in stderr.replace("stderr:", "").splitlines()]
    text = next((line for line in lines if line and not line.startswith("hint:")), "")
    text = text.removeprefix("fatal: ").removeprefix("error: ").split(". Use '--'")[0]
    if len(text) > 160:
        text = text[:160].rsplit(" ", 1)[0] + " ..."
    return text or "git failed"
