"""shared.runtime.secrets: secret values by reference, read once per container, only for the
source they are bound to, never in an error."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EndpointConnectionError

from shared.errors import TransientError
from shared.runtime.redaction import redacted
from shared.runtime.secrets import (
    SecretBinding,
    SecretNotAllowed,
    SecretNotFound,
    SecretNotReadable,
    Secrets,
    connection_secrets_prefix,
)
from tests.fakes import FakeSecretsManager, client_error, source_secret
from tests.fakes.secrets import SECRETS_PREFIX, secret_arn

SOURCE = "partner"
SETTING = "connection.password_secret"
USED_BY = f"source {SOURCE!r}: {SETTING}"
VALUE = "s3cr3t-Value-9"
OWN = source_secret(SOURCE, "partner-db")
# A careless deployment's database secret, named where a source called "db" keeps its own.
DATABASE_SECRET = secret_arn(source_secret("db", "password"))


def read(secrets: Secrets, reference: str, key: str = "password", source: str = SOURCE) -> str:
    return secrets.value(reference, key=key, source_id=source, setting=SETTING)


def test_a_plain_text_secret_is_its_own_value_and_is_read_once(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    # Given a plain-text secret of the source's own
    secrets_manager.values[OWN] = VALUE
    # When two runs in the same container need it
    values = [read(secrets, OWN) for _ in range(2)]
    # Then both get it, and Secrets Manager was asked once
    assert values == [VALUE, VALUE]
    assert secrets_manager.calls == [OWN]


def test_a_json_secret_gives_the_member_asked_for(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    # The shape RDS stores: username, password, host, …
    secrets_manager.values[OWN] = json.dumps({"username": "reader", "password": VALUE})
    assert read(secrets, OWN) == VALUE


def test_a_json_secret_without_the_member_is_refused_without_its_content(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    secrets_manager.values[OWN] = json.dumps({"pass": VALUE})
    with pytest.raises(SecretNotReadable, match="without a text 'password' member") as caught:
        read(secrets, OWN)
    assert VALUE not in str(caught.value)


def test_a_missing_secret_names_the_setting_and_the_reference(secrets: Secrets) -> None:
    missing = source_secret(SOURCE, "nope")
    with pytest.raises(SecretNotFound) as caught:
        read(secrets, missing)
    assert str(caught.value).startswith(f"{USED_BY} = {missing!r} names no secret")
    assert caught.value.error_name == "SecretNotFound"


def test_a_refused_read_says_what_to_grant(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    secrets_manager.values[OWN] = client_error("AccessDeniedException", "GetSecretValue")
    with pytest.raises(SecretNotReadable, match="grant secretsmanager:GetSecretValue"):
        read(secrets, OWN)


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
    secrets_manager.values[OWN] = failure
    with pytest.raises(TransientError) as caught:
        read(secrets, OWN)
    assert caught.value.error_name == "SecretsUnavailable"


# --- bound to its source ------------------------------------------------------------------------


def test_the_default_prefix_is_the_stages_own() -> None:
    assert connection_secrets_prefix("prod") == "sourceflow/prod/sources/"
    assert SecretBinding("sourceflow/prod/sources/").secret_for("acme", "api-key") == (
        "sourceflow/prod/sources/acme/api-key"
    )


@pytest.mark.parametrize(
    "reference",
    [
        source_secret("other-source", "partner-db"),  # another source's
        source_secret("partner2", "partner-db"),  # a source whose id starts with this one's
        source_secret(SOURCE, ""),  # the source's folder itself
        "sourceflow-local/partner-db",  # outside the prefix (the partner database's)
        "sourceflow/prod/db",  # a database secret
        f"{SECRETS_PREFIX}partner",  # not in the source's folder
        secret_arn(source_secret("other-source", "key")),  # an ARN of another source's
    ],
)
def test_a_secret_not_meant_for_the_source_is_refused_before_secrets_manager_is_asked(
    secrets: Secrets, secrets_manager: FakeSecretsManager, reference: str
) -> None:
    # Given the secret exists and the role could read it
    secrets_manager.values[reference] = VALUE
    # When the source's connection names it, Then it is refused by name, unread
    with pytest.raises(SecretNotAllowed) as caught:
        read(secrets, reference)
    message = str(caught.value)
    assert message.startswith(f"{USED_BY} = {reference!r} is not one of the source's secrets")
    assert f"named {SECRETS_PREFIX}{SOURCE}/<name>" in message
    assert caught.value.error_name == "SecretNotAllowed"
    assert secrets_manager.calls == []


def test_an_arn_of_the_sources_own_secret_is_allowed(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    secrets_manager.values[secret_arn(OWN)] = VALUE
    assert read(secrets, secret_arn(OWN)) == VALUE


@pytest.mark.parametrize(
    "reference",
    [
        DATABASE_SECRET,  # its full ARN
        DATABASE_SECRET.removesuffix("-AbCdEf"),  # a partial ARN
        source_secret("db", "password"),  # its name
    ],
)
def test_the_services_database_secret_is_refused_even_under_the_sources_prefix(
    secrets_manager: FakeSecretsManager, reference: str
) -> None:
    # Given a deployment whose database secret was created under a source's prefix
    binding = SecretBinding(SECRETS_PREFIX, frozenset({DATABASE_SECRET}))
    secrets = Secrets(secrets_manager, binding)
    secrets_manager.values[reference] = VALUE
    # When a source named "db" names it, however spelled, Then it is refused, unread
    with pytest.raises(SecretNotAllowed, match="the service's own database secret"):
        secrets.value(reference, key="password", source_id="db", setting=SETTING)
    assert secrets_manager.calls == []


def test_a_reference_that_turns_out_to_be_the_database_secret_is_refused_after_the_read(
    secrets_manager: FakeSecretsManager,
) -> None:
    # Given a name Secrets Manager resolves to the database secret (another spelling)
    binding = SecretBinding(SECRETS_PREFIX, frozenset({DATABASE_SECRET}))
    secrets = Secrets(secrets_manager, binding)
    secrets_manager.values[OWN] = VALUE
    secrets_manager.arns[OWN] = DATABASE_SECRET
    # Then the value is not handed over
    with pytest.raises(SecretNotAllowed, match="the service's own database secret"):
        read(secrets, OWN)


# --- redactable ---------------------------------------------------------------------------------


def test_every_value_read_is_redacted_from_then_on(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    value = "v-" + "7" * 20
    secrets_manager.values[OWN] = json.dumps({"password": value, "username": "reader"})
    read(secrets, OWN)
    assert redacted(f"login {value} failed for reader") == "login [redacted] failed for reader"


def test_a_value_too_short_to_redact_is_refused(
    secrets: Secrets, secrets_manager: FakeSecretsManager
) -> None:
    secrets_manager.values[OWN] = "short"
    with pytest.raises(SecretNotReadable, match="shorter than 8 characters") as caught:
        read(secrets, OWN)
    assert "short'" not in str(caught.value).replace(repr(OWN), "")
