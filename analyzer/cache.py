"""Facts derived from a file's content, kept on disk between runs.

A cold `mmreview check` would otherwise re-parse the same kernel headers on
every invocation (b4 runs it once per patch).  Entries are JSON, keyed by the
content's git blob id and by a digest of the code that derived them (its
files' sizes and times), so an upgrade never reads a stale entry.  The cache
is an optimisation only: any error reading or writing it is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analyzer.digests import sha1


def cache_root() -> Path:
    if explicit := os.environ.get("MMREVIEW_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mm-review" / "derived"


def code_digest(*paths: str) -> str:
    """A digest of the source files whose logic produced a cached fact: of
    their names, sizes and modification times, which is what Python trusts
    its own byte code by (reading and hashing 400 KB of the flow layer's
    source was 1-3 ms of every check)."""
    digest = sha1()
    for path in paths:
        status = os.stat(path)
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:12]


def load(namespace: str, key: str) -> Any | None:
    import json

    # A check reads some fifty entries: bytes and a joined string, not a
    # text stream and three Path objects each.
    path = os.path.join(cache_root(), namespace, key + ".json")
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def store(namespace: str, key: str, value: Any) -> None:
    import json

    _write(namespace, f"{key}.json", json.dumps(value).encode())


def load_bytes(namespace: str, key: str) -> bytes | None:
    try:
        with open(cache_root() / namespace / key, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def store_bytes(namespace: str, key: str, data: bytes) -> None:
    _write(namespace, key, data)


def _write(namespace: str, name: str, data: bytes) -> None:
    import tempfile  # a warm cache is read, seldom written

    directory = cache_root() / namespace
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, directory / name)
    except OSError:
        pass
