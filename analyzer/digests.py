"""SHA-1 and SHA-256 without OpenSSL's start-up.

`import hashlib` loads OpenSSL's libcrypto and asks it for every algorithm
it knows: about 4 ms of each cold `mmreview check`, more than the review of a
small patch spends hashing.  CPython's own implementations of the two hashes
used here (git's blob ids, cache keys, the rules' version token) come in
modules that load in a tenth of that; hashlib stands in where an
interpreter lacks them.
"""

from __future__ import annotations

try:
    from _sha1 import sha1
except ImportError:  # an interpreter without CPython's builtin hashes
    from hashlib import sha1
try:
    from _sha256 import sha256  # CPython 3.11
except ImportError:
    try:
        from _sha2 import sha256  # CPython 3.12 and later
    except ImportError:
        from hashlib import sha256


__all__ = ["sha1", "sha256"]
