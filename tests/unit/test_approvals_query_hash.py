"""shared.store.approvals.query_hash: the identity an approval of a Re-specs query is remembered by.

Spelling (whitespace, comments, keyword case, the case of unquoted identifiers) must not ask
again; anything that changes what the query does (a constant, a column, a table, a schema) must.
"""

from __future__ import annotations

import re

import pytest

from shared.store.approvals import query_hash

QUERY = "UPDATE public.listing_attributes SET value = 'sqm' WHERE source_id = 'acme' AND id > 10"
# query_hash(QUERY) with pglast 6.17 (requirements.lock), as with 8.7 before; see the last test.
QUERY_HASH = "3a022275b35d6f72e4cc39c1cb16bfaa0e98360f924b7ea8291c2f2c64130318"


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(
            "UPDATE   public.listing_attributes\n\tSET value = 'sqm'\n"
            "    WHERE source_id = 'acme'  AND  id > 10",
            id="whitespace",
        ),
        pytest.param(
            "UPDATE public.listing_attributes /* metres */ SET value = 'sqm'"
            " -- for acme\nWHERE source_id = 'acme' AND id > 10",
            id="comments",
        ),
        pytest.param(
            "update public.listing_attributes set value = 'sqm' where source_id = 'acme'"
            " and id > 10",
            id="keyword-case",
        ),
        pytest.param(
            "UPDATE PUBLIC.Listing_Attributes SET VALUE = 'sqm' WHERE Source_Id = 'acme'"
            " AND ID > 10",
            id="unquoted-identifier-case",
        ),
        pytest.param(
            "update Public.LISTING_ATTRIBUTES\n  set Value='sqm'  -- all at once\n"
            " where SOURCE_ID='acme' and Id>10",
            id="all-of-them",
        ),
    ],
)
def test_a_different_spelling_of_the_same_query_has_the_same_hash(spelling: str) -> None:
    # Given the same query written another way
    # When both are hashed
    # Then they share one identity: an approval of one is an approval of the other
    assert query_hash(spelling) == query_hash(QUERY)


@pytest.mark.parametrize(
    ("part", "replacement"),
    [
        pytest.param("'sqm'", "'sqft'", id="string-constant"),
        pytest.param("id > 10", "id > 11", id="number-constant"),
        pytest.param("SET value", "SET unit", id="column"),
        pytest.param("listing_attributes", "listing_prices", id="table"),
        pytest.param("public.", "staging.", id="schema"),
        pytest.param("public.", "", id="schema-qualification-dropped"),
        pytest.param("listing_attributes", '"Listing_Attributes"', id="quoted-identifier-case"),
        pytest.param("'sqm'", "'SQM'", id="constant-case"),
    ],
)
def test_a_query_that_does_something_else_has_another_hash(part: str, replacement: str) -> None:
    # Given a query that differs in what it does (a constant, a column, a table, a schema)
    changed = QUERY.replace(part, replacement)
    # When both are hashed
    # Then they differ: approving one does not approve the other
    assert query_hash(changed) != query_hash(QUERY)


def test_the_hash_is_64_lowercase_hex_characters() -> None:
    # Given any query
    # When it is hashed
    hashed = query_hash(QUERY)
    # Then its identity is a SHA-256 as the database's CHECK and the contracts expect it
    assert re.fullmatch(r"[0-9a-f]{64}", hashed), hashed


def test_the_hash_is_stable_across_calls() -> None:
    # Given the same text hashed twice, Then the identity does not change
    assert query_hash(QUERY) == query_hash(QUERY)
    # And it is the digest approvals already stored in the database were remembered by: hashing
    # twice in one process cannot notice that a new pglast (or a change to the normalisation)
    # renders the canonical form differently, which would make every approved query ask again.
    assert query_hash(QUERY) == QUERY_HASH
