"""The kernel tree: base revisions, and the pre/post image of every file a
series touches, patch by patch.

A series is applied in a scratch index and a scratch object directory (the
tree's own objects borrowed read-only as alternates), so the user's working
tree, index, HEAD, object store and hooks are never touched.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import git

from analyzer import budget
from analyzer.budget import BudgetExceeded
from analyzer.images import FileImages, Image, changed_lines, hunks_match_post, images_from_patch
from analyzer.patches import FileDiff, InputError, Patch, Series

# Files per git apply, blobs per git cat-file: about a second each at most.
_APPLY_BATCH = 500
_BLOB_BATCH = 2000
_APPLY_FAILED_RE = re.compile(r"^error: patch failed: (.+):(\d+)$", re.MULTILINE)
_NOT_IN_INDEX_RE = re.compile(r"^error: (.+): does not exist in index$", re.MULTILINE)
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)


@dataclass
class PatchImages:
    patch: Patch
    files: list[FileImages] = field(default_factory=list)
    # The tree as this patch leaves it, for rules that read headers: files
    # the series changed so far (path -> blob id, None if deleted), all
    # others as of `read_rev`.
    state: dict[str, str | None] = field(default_factory=dict)
    read_rev: str | None = None
    # The patch's time budget ran out while it was being applied.
    unfinished: bool = False


class KernelTree:
    def __init__(self, path: str) -> None:
        try:
            self.repo = git.Repo(path, search_parent_directories=True)
        except git.NoSuchPathError:
            raise InputError(f"--tree {path}: no such directory") from None
        except git.InvalidGitRepositoryError:
            raise InputError(f"--tree {path}: not a git repository") from None
        self.top = self.repo.working_tree_dir or self.repo.git_dir
        self.git = self.repo.git
        # Nothing we run should ever start one of the user's hooks.
        self.git.set_persistent_git_options(c="core.hooksPath=/dev/null")
        self._blob_cache: dict[str, bytes] = {}
        # Path -> blob id in the scratch index of the series being applied.
        self._scratch_index: dict[str, str] = {}

    # -- revisions ---------------------------------------------------------

    def resolve(self, rev: str) -> str | None:
        try:
            return self.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}")
        except git.GitCommandError:
            return None

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
        if self.git.rev_parse("--is-shallow-repository").strip() == "true":
            return False
        try:
            return len(self.git.rev_list("--max-count=2", "HEAD").split()) > 1
        except git.GitCommandError:
            return False

    def range_commits(self, spec: str) -> list[str]:
        try:
            out = self.git.rev_list("--reverse", "--no-merges", self._range(spec))
        except git.GitCommandError as err:
            raise InputError(f"--range {spec}: {_git_error(err)}") from None
        commits = out.split()
        if not commits:
            raise InputError(f"--range {spec}: no commits in range")
        return commits

    def format_patches(self, spec: str) -> bytes:
        try:
            return self.git.format_patch("--stdout", self._range(spec), stdout_as_string=False)
        except git.GitCommandError as err:
            raise InputError(f"--range {spec}: {_git_error(err)}") from None

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

        def read_file(path: str) -> bytes | None:
            if path in images.state:
                sha = images.state[path]
                return self.blobs([sha], env).get(sha) if sha else None
            return self.read(images.read_rev or "HEAD", path)

        return read_file

    def read(self, rev: str, path: str) -> bytes | None:
        try:
            sha = self.git.rev_parse("--verify", "--quiet", f"{rev}:{path}")
        except git.GitCommandError:
            return None
        return self.blobs([sha]).get(sha)

    def blobs(self, shas: list[str], env: dict[str, str] | None = None) -> dict[str, bytes]:
        wanted = [s for s in dict.fromkeys(shas) if s not in self._blob_cache]
        if wanted:
            # The names go in from a file, not a pipe we write while git
            # writes back: with thousands of blobs both pipes fill and
            # both sides wait for ever.
            with tempfile.TemporaryFile() as names:
                names.write(("\n".join(wanted) + "\n").encode())
                names.seek(0)
                out = self.git.execute(
                    ["git", "cat-file", "--batch"],
                    istream=names,
                    env=env,
                    stdout_as_string=False,
                    strip_newline_in_stdout=False,
                )
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

    def commit_images(self, patch: Patch, commit: str) -> PatchImages:
        """Images straight from a commit already in the tree."""
        result = PatchImages(patch=patch, read_rev=commit)
        paths = [p for f in _c_files(patch) for p in (f.old_path, f.new_path) if p]
        before = self._ls_tree(f"{commit}^", paths)
        after = self._ls_tree(commit, paths)
        contents = self.blobs([*before.values(), *after.values()])
        for diff in _c_files(patch):
            pre_sha = before.get(diff.old_path or "")
            post_sha = after.get(diff.new_path or "")
            result.files.append(self._file_images(diff, pre_sha, post_sha, contents))
        return result

    @contextmanager
    def _scratch(self, series: Series, base: str) -> Iterator[dict[str, str]]:
        scratch = tempfile.mkdtemp(prefix="mmreview-")
        try:
            objects = os.path.join(scratch, "objects")
            os.makedirs(objects)
            env = {
                "GIT_INDEX_FILE": os.path.join(scratch, "index"),
                "GIT_OBJECT_DIRECTORY": objects,
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": os.path.abspath(
                    os.path.join(self.repo.common_dir, "objects")
                ),
            }
            paths = sorted(
                {
                    p
                    for patch in series.reviewable
                    for f in _c_files(patch)
                    for p in (f.old_path, f.new_path)
                    if p
                }
            )
            listing = self.git.ls_tree("-r", "--full-tree", base, "--", *paths) if paths else ""
            # The scratch index changes only by our applies: what it holds is
            # known from here on without asking git before every patch (a
            # 500-patch series paid a git process per patch for it).
            self._scratch_index = _parse_listing(listing, sha_field=2)
            index_info = os.path.join(scratch, "index-info")
            with open(index_info, "w") as handle:
                handle.write(listing + "\n" if listing else "")
            with open(index_info, "rb") as handle:
                self.git.execute(["git", "update-index", "--index-info"], istream=handle, env=env)
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
        with open(patch_file, "w", encoding="utf-8", errors="surrogateescape") as handle:
            for each in (diff, *more):
                handle.write(str(each.patched))
        status, _, stderr = self.git.execute(
            ["git", "apply", "--cached", "--whitespace=nowarn", patch_file],
            env=env,
            with_extended_output=True,
            with_exceptions=False,
        )
        if status == 0:
            return None
        return _apply_problem(stderr, diff)

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
        out = self.git.execute(["git", "diff", "-U0", "--no-color", pre_sha, post_sha], env=env)
        added: set[int] = set()
        removed: set[int] = set()
        for match in _HUNK_RE.finditer(out):
            old, old_len, new, new_len = (int(g) if g is not None else 1 for g in match.groups())
            removed.update(range(old, old + old_len))
            added.update(range(new, new + new_len))
        return frozenset(added), frozenset(removed)

    def _ls_files(self, env: dict[str, str], paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        out = self.git.execute(["git", "ls-files", "-s", "--", *paths], env=env)
        return _parse_listing(out, sha_field=1)

    def _ls_tree(self, rev: str, paths: list[str]) -> dict[str, str]:
        if not paths:
            return {}
        try:
            out = self.git.ls_tree("-r", "--full-tree", rev, "--", *paths)
        except git.GitCommandError:
            return {}
        return _parse_listing(out, sha_field=2)


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


def _apply_problem(stderr: str, diff: FileDiff) -> str:
    if match := _APPLY_FAILED_RE.search(stderr):
        line = int(match.group(2))
        for number, hunk in enumerate(diff.patched, 1):
            if hunk.source_start == line:
                where = f"@@ -{hunk.source_start},{hunk.source_length} @@"
                return f"hunk #{number} ({where}) does not apply"
        return f"does not apply at line {line}"
    if _NOT_IN_INDEX_RE.search(stderr):
        return "file is not in the tree"
    if "already exists in index" in stderr:
        return "new file already exists in the tree"
    return "does not apply: " + " ".join(stderr.replace("error:", "").split())[:120]


def _git_error(err: git.GitCommandError) -> str:
    """git's message, first line only, without its advice, cut at a word."""
    stderr = err.stderr if isinstance(err.stderr, str) else str(err.stderr)
    lines = [line.strip(" '") for line in stderr.replace("stderr:", "").splitlines()]
    text = next((line for line in lines if line and not line.startswith("hint:")), "")
    text = text.removeprefix("fatal: ").removeprefix("error: ").split(". Use '--'")[0]
    if len(text) > 160:
        text = text[:160].rsplit(" ", 1)[0] + " ..."
    return text or "git failed"
