"""Who a console request acts as: an IAM principal's database login (the cloud)."""

from __future__ import annotations

import pytest

from console.auth import NotAuthenticated, login_of_principal


@pytest.mark.parametrize(
    ("principal", "login"),
    [
        ("arn:aws:iam::123456789012:user/alice", "alice"),
        ("arn:aws:iam::123456789012:user/ops/Bob", "bob"),
        ("arn:aws:sts::123456789012:assumed-role/Operators/carol", "carol"),
        (
            "arn:aws-us-gov:sts::123456789012:assumed-role/Operators/dave@example.com",
            "dave@example.com",
        ),
    ],
)
def test_a_person_s_principal_names_their_login(principal: str, login: str) -> None:
    assert login_of_principal(principal) == login


@pytest.mark.parametrize(
    "principal",
    [
        None,
        "",
        "arn:aws:iam::123456789012:root",
        "arn:aws:sts::123456789012:assumed-role/Operators/1-starts-with-a-digit",
        "arn:aws:iam::123456789012:user/alice; DROP ROLE bob",
        "alice",
    ],
)
def test_any_other_caller_has_no_login(principal: str | None) -> None:
    with pytest.raises(NotAuthenticated, match="not an IAM user or a named role session"):
        login_of_principal(principal)
