"""Connectors: how validation and download reach a source, chosen by `source_type`.

A connector streams the records of one window, filtered at the source, without holding the
whole result in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from shared.errors import PermanentError
from shared.flows import Window


class Connector(Protocol):
    def records(self, window: Window) -> Iterator[dict[str, Any]]:
        """Every record in the window, in the source's order."""
        ...

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        """The record's last-modification time, which the LMD cursor follows."""
        ...


class UnsupportedSourceType(PermanentError):
    error_name = "UnsupportedSourceType"


class InvalidConnection(PermanentError):
    error_name = "InvalidConnection"


def connector_for(source_id: str, source_type: str, connection: Mapping[str, Any]) -> Connector:
    # Imported here so that each connector's dependencies load only when it is used.
    if source_type == "http_api":
        from shared.connectors.http_api import HttpApiConnector

        return HttpApiConnector.from_connection(source_id, connection)
    raise UnsupportedSourceType(
        f"source {source_id!r}: source_type {source_type!r} is not supported; "
        f"expected one of {sorted(SOURCE_TYPES)}"
    )


SOURCE_TYPES = frozenset({"http_api"})
