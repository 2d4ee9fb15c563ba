"""Secrets that connections reference by name (API keys, database passwords), read from Secrets
Manager and kept for the life of a warm container.

A source's `connection` never holds a secret value: it names a secret (`"password_secret":
"sourceflow/prod/sources/acme/partner-db"`, a name or an ARN). The value is read here, when a
connector needs it, and is never logged, put into a message, or written to the ledger; errors
name the reference, never the value (shared.runtime.redaction blanks it if one tries).

Which secrets a source may use (`SecretBinding`): only those whose name starts with its own
prefix, `<connection secrets prefix><source_id>/` (by default `sourceflow/<stage>/sources/
<source_id>/`), and never a secret the service uses for its own database, whatever its name.
The rule is checked before Secrets Manager is asked, so a row that names another source's
secret, or the service's own, reads nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import PermanentError, TransientError
from shared.runtime import aws
from shared.runtime.redaction import MIN_SECRET_LENGTH, remember_secret


class SecretNotFound(PermanentError):
    error_name = "SecretNotFound"


class SecretNotReadable(PermanentError):
    error_name = "SecretNotReadable"


class SecretNotAllowed(PermanentError):
    """A connection names a secret that is not meant for its source."""

    error_name = "SecretNotAllowed"


_MISSING_CODES = {"ResourceNotFoundException"}
_REFUSED_CODES = {"AccessDeniedException", "DecryptionFailure", "InvalidRequestException"}
_ARN_NAME_MARK = ":secret:"
# Secrets Manager ends a secret's full ARN with a dash and six random characters.
_FULL_ARN_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


def connection_secrets_prefix(stage: str) -> str:
    """Where a stage's source secrets live by default: the templates' ConnectionSecretsPrefix,
    which the functions read back as CONNECTION_SECRETS_PREFIX."""
    return f"sourceflow/{stage}/sources/"


def secret_name(reference: str) -> str:
    """The secret's name in a reference: the reference itself, or the part of an ARN after
    `:secret:` (with the random suffix of a full ARN, which a prefix check does not mind)."""
    if reference.startswith("arn:"):
        return reference.partition(_ARN_NAME_MARK)[2]
    return reference


@dataclass(frozen=True)
class SecretBinding:
    """Which secrets a source may use: the names under `<prefix><source_id>/`, except the
    service's own database secrets (`reserved`, ARNs), even if one was created under it."""

    prefix: str
    reserved: frozenset[str] = frozenset()

    def source_prefix(self, source_id: str) -> str:
        return f"{self.prefix}{source_id}/"

    def secret_for(self, source_id: str, name: str) -> str:
        """The name of the source's secret `name` (what provisioning creates, and the
        connection names)."""
        return self.source_prefix(source_id) + name

    def check(self, reference: str, *, source_id: str, used_by: str) -> None:
        """Raise SecretNotAllowed unless the source may read the secret `reference` names."""
        name = secret_name(reference)
        own = self.source_prefix(source_id)
        if self._is_reserved(reference):
            raise SecretNotAllowed(
                f"{used_by} = {reference!r} is the service's own database secret, which no "
                f"source may use; create the source's secret under {own!r}"
            )
        if not name.startswith(own) or len(name) == len(own):
            raise SecretNotAllowed(
                f"{used_by} = {reference!r} is not one of the source's secrets: a source may "
                f"only use secrets named {own}<name> (the rule: <connection secrets prefix>"
                f"<source_id>/); create the secret there and name it"
            )

    def check_read(self, reference: str, arn: str | None, *, used_by: str) -> None:
        """After the read: the secret Secrets Manager answered with is not a reserved one
        (a reference may spell a secret in more ways than a name check foresees)."""
        if arn and self._is_reserved(arn):
            raise SecretNotAllowed(
                f"{used_by} = {reference!r} is the service's own database secret, which no "
                "source may use"
            )

    def _is_reserved(self, reference: str) -> bool:
        return any(_names(reference) & _names(reserved) for reserved in self.reserved)


def _names(reference: str) -> set[str]:
    """The names a reference may stand for: its name, and for an ARN that name without the
    suffix a full ARN adds."""
    name = secret_name(reference)
    if reference.startswith("arn:") and _FULL_ARN_SUFFIX.search(name):
        return {name, name[: -len("-AbCdEf")]}
    return {name}


class Secrets:
    """Secret values by reference, each read from Secrets Manager once per container, and only
    for the source it is bound to.

    Once per container because Lambda reuses a warm container for many runs and Secrets Manager
    bills and throttles per call. A source that refuses the value (a rotation since it was
    read) has the connector `forget` it and try once more (shared/rules/rotation.py), so a
    rotation needs no new container.
    """

    def __init__(self, client: Any, binding: SecretBinding) -> None:
        self._client = client
        self.binding = binding
        self._values: dict[str, str] = {}

    def value(self, reference: str, *, key: str, source_id: str, setting: str) -> str:
        """The secret's value: its whole SecretString, or the `key` member when the secret is a
        JSON object (the shape RDS and most rotation functions store, e.g. {"password": ...}).

        `source_id` and `setting` (e.g. "connection.password_secret") say who asks: the secret
        must be bound to that source, and an error names the setting to fix.
        """
        used_by = f"source {source_id!r}: {setting}"
        self.binding.check(reference, source_id=source_id, used_by=used_by)
        if reference not in self._values:
            self._values[reference] = self._read(reference, used_by)
        return _member(self._values[reference], key, reference, used_by)

    def forget(self, reference: str) -> None:
        """Read the secret again from Secrets Manager the next time it is asked for."""
        self._values.pop(reference, None)

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
        remember_secret(value)
        self.binding.check_read(reference, response.get("ARN"), used_by=used_by)
        return value


def _member(secret: str, key: str, reference: str, used_by: str) -> str:
    try:
        document = json.loads(secret)
    except ValueError:
        document = None
    member = document.get(key) if isinstance(document, dict) else secret
    if isinstance(document, dict) and (not isinstance(member, str) or not member):
        raise SecretNotReadable(
            f"{used_by} = {reference!r} is a JSON object without a text {key!r} member; "
            f"store the value as plain text or under {key!r}"
        )
    assert isinstance(member, str)
    if len(member) < MIN_SECRET_LENGTH:
        # Too short to be redacted from error texts without blanking ordinary words.
        raise SecretNotReadable(
            f"{used_by} = {reference!r} holds a value shorter than {MIN_SECRET_LENGTH} "
            "characters; store a longer one"
        )
    remember_secret(member)
    return member


@cache
def default_secrets(binding: SecretBinding) -> Secrets:
    """A cache of secrets over the default Secrets Manager client (one per container: the
    services build it once, with their settings' binding)."""
    return Secrets(aws.client("secretsmanager"), binding)
