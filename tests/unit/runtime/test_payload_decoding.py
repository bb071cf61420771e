"""A claimed payload is decoded without json.loads's whitespace checks, with the same result
and the same errors for anything that is not one bare document."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgqueue.runtime.attempts import decode_payload

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(value=JSON, spaced=st.booleans())
def test_any_document_decodes_as_json_loads_does(value: object, spaced: bool) -> None:
    text = json.dumps(value, separators=(", ", ": ") if spaced else (",", ":"))
    assert decode_payload(text) == json.loads(text)
    assert decode_payload(f" \n{text}\t ") == json.loads(text)  # whitespace around: json.loads


@pytest.mark.parametrize("text", ['{"a": 1} x', "", "  ", "[1,", "nul"])
def test_anything_else_fails_as_json_loads_fails(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        decode_payload(text)
    assert str(got.value) == str(expected.value)
