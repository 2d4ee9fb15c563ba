"""Secrets that connections reference by name (API keys, database passwords), read from Secrets
Manager and kept for the life of a warm container.

A source's `connection` never holds a secret value: it names a secret (`"password_secret":
"sourceflow/partner-db"`, a name or an ARN). The value is read here, when a connector needs it,
and is never logged, put into a message, or written to the ledger; errors name the reference,
never the value.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import PermanentError, TransientError
from shared.runtime import aws


class SecretNotFound(PermanentError):
    error_name = "SecretNotFound"


class SecretNotReadable(PermanentError):
    error_name = "SecretNotReadable"


_MISSING_CODES = {"ResourceNotFoundException"}
_REFUSED_CODES = {"AccessDeniedException", "DecryptionFailure", "InvalidRequestException"}


class Secrets:
    """Secret values by reference, each read from Secrets Manager once per container.

    Once per container because Lambda reuses a warm container for many runs and Secrets Manager
    bills and throttles per call; a rotated secret reaches the next container.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._values: dict[str, str] = {}

    def value(self, reference: str, *, key: str, used_by: str) -> str:
        """The secret's value: its whole SecretString, or the `key` member when the secret is a
        JSON object (the shape RDS and most rotation functions store, e.g. {"password": ...}).

        `used_by` names who asks (e.g. "source 'acme': connection.password_secret") so that an
        error says which setting to fix.
        """
        if reference not in self._values:
            self._values[reference] = self._read(reference, used_by)
        return _member(self._values[reference], key, reference, used_by)

    def _read(self, reference: str, used_by: str) -> str:
        try:
            response = self._client.get_secret_value(SecretId=reference)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _MISSING_CODES:
                raise SecretNotFound(
                    f"{used_by} = {reference!r} names no secret in Secrets Manager; create the "
                    "secret or fix the reference"
                ) from exc
            if code in _REFUSED_CODES:
                raise SecretNotReadable(
                    f"{used_by} = {reference!r}: Secrets Manager refused to read it ({code}); "
                    "grant secretsmanager:GetSecretValue (and kms:Decrypt) to the service"
                ) from exc
            raise TransientError(
                f"{used_by} = {reference!r}: Secrets Manager failed ({code})",
                error_name="SecretsUnavailable",
            ) from exc
        except BotoCoreError as exc:
            raise TransientError(
                f"{used_by} = {reference!r}: Secrets Manager is unreachable ({type(exc).__name__})",
                error_name="SecretsUnavailable",
            ) from exc
        value = response.get("SecretString")
        if not isinstance(value, str) or not value:
            raise SecretNotReadable(
                f"{used_by} = {reference!r} has no SecretString; store the value as text"
            )
        return value


def _member(secret: str, key: str, reference: str, used_by: str) -> str:
    try:
        document = json.loads(secret)
    except ValueError:
        return secret  # a plain-text secret is the value itself
    if not isinstance(document, dict):
        return secret
    member = document.get(key)
    if not isinstance(member, str) or not member:
        raise SecretNotReadable(
            f"{used_by} = {reference!r} is a JSON object without a text {key!r} member; "
            f"store the value as plain text or under {key!r}"
        )
    return member


@cache
def default_secrets() -> Secrets:
    """The container's one cache of secrets, over the default Secrets Manager client."""
    return Secrets(aws.client("secretsmanager"))
