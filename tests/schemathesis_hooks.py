"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in tests/integration/contract.rs.

- tus PATCH and creation-with-upload bodies are application/offset+octet-stream:
  raw bytes, sent as schemathesis sends application/octet-stream.
- `Upload-Checksum` has the custom format `tus-checksum` (its pattern says the
  same): an algorithm and the base64 of a digest of that algorithm's length.
- `Upload-Metadata` has the custom format `tus-metadata` (below).
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


# `Upload-Metadata` (format `tus-metadata`): unique keys, each with the
# base64 of UTF-8 text without NUL; none of the keys that mark an upload as
# onboarding content or firmware, which only admins send, naming a firmware.
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=64,
)
_KEYS = st.lists(
    st.sampled_from(["filename", "filetype", "title", "name", "app-version"]),
    unique=True,
    max_size=4,
)


def _metadata(keys, values):
    pairs = [f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in zip(keys, values)]
    return ",".join(pairs)


schemathesis.openapi.format(
    "tus-metadata",
    _KEYS.flatmap(lambda keys: st.lists(_TEXT, min_size=len(keys), max_size=len(keys)).map(
        lambda values: _metadata(keys, values)
    )),
)
