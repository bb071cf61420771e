"""The array literals the result writer builds for its hot path (``int_array``,
``bare_array``, ``float_array``, ``text_array`` in ``pgqueue/store/operations/claims.py``) read
back on the server as the lists they were built from, whatever the texts hold."""

from __future__ import annotations

import math

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgqueue.store.operations import bare_array, float_array, int_array, text_array
from tests.conftest import Database

# PostgreSQL's text holds any character but NUL, in UTF-8 (which has no lone surrogates: a
# string holding one cannot be sent at all).
TEXTS = st.lists(
    st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00")), max_size=8
)
FLOATS = st.lists(st.floats(allow_nan=False, width=64), max_size=8)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(texts=TEXTS)
def test_any_texts_round_trip(empty_schema: Database, texts: list[str | None]) -> None:
    with psycopg.connect(empty_schema.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT %s::text[]", (text_array(texts),)).fetchone()
    assert row is not None and row[0] == texts


@SETTINGS
@given(values=FLOATS)
def test_floats_round_trip(empty_schema: Database, values: list[float]) -> None:
    with psycopg.connect(empty_schema.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT %s::float8[]", (float_array(values),)).fetchone()
    assert row is not None and row[0] == values


def test_special_floats_ints_and_bare_words_round_trip(empty_schema: Database) -> None:
    with psycopg.connect(empty_schema.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT %s::float8[], %s::int[], %s::bigint[], %s::text[], %s::uuid[]::text[]",
            (
                float_array([math.inf, -math.inf, math.nan, 1e-300, 5]),
                int_array([0, -3, 2**31 - 1]),
                int_array([2**63 - 1]),
                bare_array(["succeeded", "no_attempts_left"]),
                bare_array(["0b7e7e57-1111-2222-3333-444455556666"]),
            ),
        ).fetchone()
    assert row is not None
    floats, ints, bigints, words, uuids = row
    assert floats[:2] == [math.inf, -math.inf] and math.isnan(floats[2])
    assert floats[3:] == [1e-300, 5.0]
    assert ints == [0, -3, 2**31 - 1] and bigints == [2**63 - 1]
    assert words == ["succeeded", "no_attempts_left"]
    assert uuids == ["0b7e7e57-1111-2222-3333-444455556666"]
