"""The digests module's hashes are the standard ones (git's blob ids and
the rules' version token are derived from them)."""

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from analyzer.digests import sha1, sha256
from analyzer.images import git_blob_id


@given(st.binary(max_size=4096))
def test_the_hashes_are_hashlibs(data: bytes) -> None:
    assert sha1(data).hexdigest() == hashlib.sha1(data).hexdigest()
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_blob_id_is_gits() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
