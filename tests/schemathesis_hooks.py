"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in tests/integration/contract.rs.

- tus PATCH and creation-with-upload bodies are application/offset+octet-stream:
  raw bytes, sent as schemathesis sends application/octet-stream.
- `Upload-Checksum` has the custom format `tus-checksum` (its pattern says the
  same): an algorithm and the base64 of a digest of that algorithm's length.
"""

import base64

import schemathesis
from hypothesis import strategies as st

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


def _checksum(algorithm: str, size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(
        lambda digest: f"{algorithm} {base64.b64encode(digest).decode()}"
    )


schemathesis.openapi.format("tus-checksum", st.one_of(_checksum("sha1", 20), _checksum("sha256", 32)))
