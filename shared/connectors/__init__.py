"""Connectors: how validation and download reach a source, chosen by `source_type`.

Every source type has a connector and a JSON Schema of its `connection`
(`contracts/connection-<type>.v1.schema.json`, the type's underscores spelled as dashes).
Building a connector checks the connection against that schema, then parses what the schema can
only pattern-match (URLs, DSNs: shared.connectors.endpoints). Validation calls `check()` before
anything is locked; download calls `records(window)`, which streams the window (filtered at the
source where the source can filter) without holding the whole result in memory.

A connection row is untrusted: `SourceAccess` is what every connector is given to reach its
source with — the secrets bound to sources (shared.runtime.secrets.SecretBinding) and the hosts
a source may reach (shared.connectors.endpoints.HostRule). A vendor's API is paced by what the
caller passes (shared.connectors.pacing: download's waits heartbeat, and hold a vendor slot).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from shared.connectors.base import Connector, parse_connection, secret_settings
from shared.connectors.endpoints import HostRule
from shared.connectors.pacing import UNPACED, Pacing
from shared.runtime import aws
from shared.runtime.secrets import SecretBinding, Secrets, default_secrets
from shared.runtime.settings import SourceAccessSettings


@dataclass(frozen=True)
class SourceAccess:
    """What connectors reach sources with: secrets bound to their sources, the host rule, and
    (for file drops) an S3 client."""

    secrets: Secrets
    hosts: HostRule
    s3: Callable[[], Any] = lambda: aws.client("s3")

    def connector(
        self,
        source_id: str,
        source_type: str,
        connection: Mapping[str, Any],
        *,
        pacing: Pacing = UNPACED,
    ) -> Connector:
        """The source's connector, its connection checked; a vendor's API paced by `pacing`."""
        settings = parse_connection(source_id, source_type, connection)
        # Imported here so that each connector's dependencies load only when it is used.
        if source_type == "http_api":
            from shared.connectors.http_api import HttpApiConnector

            return HttpApiConnector.from_connection(
                source_id, settings, secrets=self.secrets, hosts=self.hosts, pacing=pacing
            )
        if source_type == "s3_files":
            from shared.connectors.s3_files import S3FilesConnector

            return S3FilesConnector.from_connection(source_id, settings, s3=self.s3())
        from shared.connectors.postgres import PostgresConnector

        return PostgresConnector.from_connection(
            source_id, settings, secrets=self.secrets, hosts=self.hosts
        )

    def check(self, source_id: str, source_type: str, connection: Mapping[str, Any]) -> None:
        """Validation's check of a source it is about to run: its settings, then `check()`."""
        self.connector(source_id, source_type, connection).check()

    def check_settings(
        self, source_id: str, source_type: str, connection: Mapping[str, Any]
    ) -> None:
        """What can be known of a connection before it is stored, reaching nothing: its type's
        schema, what its connector parses when it is built (the base_url, the libpq settings,
        a host by its spelling), and that every secret it names is its source's own."""
        settings = parse_connection(source_id, source_type, connection)
        for setting in secret_settings(source_type):
            if setting in settings:
                self.secrets.binding.check(
                    settings[setting],
                    source_id=source_id,
                    used_by=f"source {source_id!r}: connection.{setting}",
                )
        # Building a connector reads no secret and opens no connection.
        replace(self, s3=lambda: None).connector(source_id, source_type, settings)


@cache
def source_access(settings: SourceAccessSettings) -> SourceAccess:
    """The container's: over its Secrets Manager client and its one cache of secrets."""
    binding = SecretBinding(settings.connection_secrets_prefix, settings.reserved_secrets)
    return SourceAccess(default_secrets(binding), HostRule(settings.allow_loopback))
