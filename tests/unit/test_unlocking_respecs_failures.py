"""How unlocking tells a Re-specs query's own failure (permanent, reported at once) from one
the connection or the server caused (retried): shared.store.db.query_at_fault."""

from __future__ import annotations

import pytest

from shared.store.db import query_at_fault

# SQLSTATE → what the server said, for failures retrying the same query cannot cure ...
THE_QUERYS_FAULT = {
    "22012": "division by zero",
    "22P02": "invalid input syntax for a type",
    "42703": "no such column",
    "42501": "permission denied",
    "23505": "a unique constraint",
    "0A000": "feature not supported",
    "54023": "too many arguments",
    "21000": "more than one row from a scalar subquery",
    "P0001": "raised by a trigger",
    "XX000": "internal error",
    "55000": "object not in prerequisite state",
}
# ... and for those the connection, a concurrent transaction or the server caused.
NOT_THE_QUERYS_FAULT = {
    None: "no answer from the server",
    "08006": "connection failure",
    "40001": "serialization failure",
    "40P01": "deadlock",
    "53200": "out of memory",
    "57P01": "administrator shutdown",
    "58030": "I/O error",
    "55P03": "lock not available",
}


@pytest.mark.parametrize("pgcode", THE_QUERYS_FAULT, ids=THE_QUERYS_FAULT.values())
def test_what_the_query_says_is_the_querys_fault(pgcode: str) -> None:
    assert query_at_fault(pgcode)


@pytest.mark.parametrize("pgcode", NOT_THE_QUERYS_FAULT, ids=NOT_THE_QUERYS_FAULT.values())
def test_the_connection_a_concurrent_transaction_or_the_server_is_not(
    pgcode: str | None,
) -> None:
    assert not query_at_fault(pgcode)
