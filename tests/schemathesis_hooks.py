"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in tests/integration/contract.rs.

- tus PATCH and creation-with-upload bodies are application/offset+octet-stream:
  raw bytes, sent as schemathesis sends application/octet-stream.
- `Upload-Checksum` has the custom format `tus-checksum` (its pattern says the
  same): an algorithm and the base64 of a digest of that algorithm's length.
- `Upload-Metadata` has the custom format `tus-metadata` (below).
- CPython 3.11.7's `ast.parse` can fail with "SystemError: AST constructor
  recursion depth mismatch" when a conversion runs inside another (its
  depth counter was shared; fixed upstream in 3.11.8, gh-106905). Hypothesis
  reaches it through `inspect.signature` while generating cases, and
  schemathesis then reports a runtime error of its own, not a finding about
  the api. The parse is simply run again (below).
"""

import ast
import base64

import schemathesis
from hypothesis import strategies as st

_parse = ast.parse


def _parse_again_on_the_interpreter_bug(*args, **kwargs):
    for attempt in range(3):
        try:
            return _parse(*args, **kwargs)
        except SystemError as error:
            if "AST constructor recursion depth mismatch" not in str(error) or attempt == 2:
                raise
    raise AssertionError("unreachable")


ast.parse = _parse_again_on_the_interpreter_bug

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
