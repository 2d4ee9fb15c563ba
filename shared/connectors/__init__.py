"""Connectors: how validation and download reach a source, chosen by `source_type`.

Every source type has a connector and a JSON Schema of its `connection`
(`contracts/connection-<type>.v1.schema.json`, the type's underscores spelled as dashes).
Building a connector checks the connection against that schema. Validation calls `check()`
before anything is locked; download calls `records(window)`, which streams the window (filtered
at the source where the source can filter) without holding the whole result in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.connectors.base import Connector, parse_connection
from shared.runtime import aws
from shared.runtime.secrets import default_secrets


def connector_for(source_id: str, source_type: str, connection: Mapping[str, Any]) -> Connector:
    """The source's connector over the container's AWS clients and secrets cache."""
    settings = parse_connection(source_id, source_type, connection)
    # Imported here so that each connector's dependencies load only when it is used.
    if source_type == "http_api":
        from shared.connectors.http_api import HttpApiConnector

        return HttpApiConnector.from_connection(source_id, settings, secrets=default_secrets())
    if source_type == "s3_files":
        from shared.connectors.s3_files import S3FilesConnector

        return S3FilesConnector.from_connection(source_id, settings, s3=aws.client("s3"))
    from shared.connectors.postgres import PostgresConnector

    return PostgresConnector.from_connection(source_id, settings, secrets=default_secrets())


def check_connection(source_id: str, source_type: str, connection: Mapping[str, Any]) -> None:
    """Validation's check of a source it is about to run: its settings, then `check()`."""
    connector_for(source_id, source_type, connection).check()
