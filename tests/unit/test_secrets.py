"""shared.runtime.secrets: secret values by reference, read once per container, never in an
error."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EndpointConnectionError

from shared.errors import TransientError
from shared.runtime.secrets import SecretNotFound, SecretNotReadable, Secrets
from tests.fakes import FakeSecretsManager, client_error

USED_BY = "source 'partner': connection.password_secret"
VALUE = "s3cr3t-Value-9"


def test_a_plain_text_secret_is_its_own_value_and_is_read_once(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    # Given a plain-text secret
    secrets_manager.values["sourceflow/partner-db"] = VALUE
    # When two runs in the same container need it
    values = [
        secrets.value("sourceflow/partner-db", key="password", used_by=USED_BY) for _ in range(2)
    ]
    # Then both get it, and Secrets Manager was asked once
    assert values == [VALUE, VALUE]
    assert secrets_manager.calls == ["sourceflow/partner-db"]


def test_a_json_secret_gives_the_member_asked_for(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    # The shape RDS stores: username, password, host, …
    secrets_manager.values["rds"] = json.dumps({"username": "reader", "password": VALUE})
    assert secrets.value("rds", key="password", used_by=USED_BY) == VALUE


def test_a_json_secret_without_the_member_is_refused_without_its_content(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    secrets_manager.values["rds"] = json.dumps({"pass": VALUE})
    with pytest.raises(SecretNotReadable, match="without a text 'password' member") as caught:
        secrets.value("rds", key="password", used_by=USED_BY)
    assert VALUE not in str(caught.value)


def test_a_missing_secret_names_the_setting_and_the_reference(secrets: Secrets) -> None:
    with pytest.raises(SecretNotFound) as caught:
        secrets.value("sourceflow/nope", key="password", used_by=USED_BY)
    assert str(caught.value).startswith(f"{USED_BY} = 'sourceflow/nope' names no secret")
    assert caught.value.error_name == "SecretNotFound"


def test_a_refused_read_says_what_to_grant(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    secrets_manager.values["locked"] = client_error("AccessDeniedException", "GetSecretValue")
    with pytest.raises(SecretNotReadable, match="grant secretsmanager:GetSecretValue"):
        secrets.value("locked", key="password", used_by=USED_BY)


@pytest.mark.parametrize(
    "failure",
    [
        client_error("ThrottlingException", "GetSecretValue"),
        EndpointConnectionError(endpoint_url="https://secretsmanager.eu-west-1.amazonaws.com"),
    ],
)
def test_a_throttled_or_unreachable_secrets_manager_is_transient(
    secrets: Secrets, secrets_manager: FakeSecretsManager, failure: Exception
) -> None:
    secrets_manager.values["busy"] = failure
    with pytest.raises(TransientError) as caught:
        secrets.value("busy", key="password", used_by=USED_BY)
    assert caught.value.error_name == "SecretsUnavailable"
